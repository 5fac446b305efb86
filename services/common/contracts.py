"""Every gRPC service name of the mesh, from the generated contracts.

Each service serves reflection for all of them, so Envoy can send reflection to
any backend and `grpcurl list` through the gateway shows the whole mesh.
"""

from __future__ import annotations

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from healing_guard.audit.v1 import audit_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from healing_guard.planner.v1 import planner_pb2
from healing_guard.predictor.v1 import predictor_pb2
from healing_guard.tenancy.v1 import tenancy_pb2

_MODULES = (detector_pb2, predictor_pb2, planner_pb2, tenancy_pb2, audit_pb2, coordinator_pb2)

# "detector" -> "healing_guard.detector.v1.Detector"
SERVICE_NAMES: dict[str, str] = {
    module.DESCRIPTOR.package.split(".")[1]: service.full_name
    for module in _MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
}

REFLECTED_NAMES: tuple[str, ...] = (
    *SERVICE_NAMES.values(),
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)
