"""One heal through the gateway is one trace: Envoy's span, then every service the
request touched, joined by W3C traceparent, with tenant and failure class on the spans."""

from __future__ import annotations

import secrets
import time

import pytest

from deploy.client import MeshClient
from deploy.heal_examples import EXAMPLES, failure_report, wait_for_actions
from healing_guard.coordinator.v1 import coordinator_pb2
from tests.integration.test_mesh import example
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

EXPECTED_SERVICES = {
    "healing-guard-gateway", "healing-guard-detector", "healing-guard-tenancy", "healing-guard-planner",
    "healing-guard-predictor", "healing-guard-audit", "healing-guard-coordinator",
}


def test_one_heal_is_one_trace_across_gateway_and_services(operator: MeshClient, otlp: OtlpReceiver,
                                                           tenant: str) -> None:
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    sample = example("oom_killed")
    request = coordinator_pb2.HealFailureRequest(report=failure_report(sample),
                                                 log=(EXAMPLES / sample["file"]).read_bytes())
    answer = operator.coordinator.HealFailure(request, metadata=(*operator.metadata, ("traceparent", traceparent)),
                                              timeout=30)
    wait_for_actions(operator, answer.plan.plan_id)

    deadline = time.monotonic() + 30  # Envoy and the SDKs export in batches
    spans = []
    while time.monotonic() < deadline:
        spans = [s for s in otlp.spans() if s.trace_id == trace_id]
        if EXPECTED_SERVICES <= {s.service for s in spans}:
            break
        time.sleep(0.5)
    services = {s.service for s in spans}
    assert EXPECTED_SERVICES <= services, f"missing {EXPECTED_SERVICES - services}"

    by_id = {s.span_id: s for s in spans}
    heal_server = next(s for s in spans if s.service == "healing-guard-coordinator"
                       and s.name.endswith("Coordinator/HealFailure"))
    # The heal's server span hangs under Envoy's span (the trace starts at the gateway)...
    assert by_id[heal_server.parent_span_id].service == "healing-guard-gateway"
    assert heal_server.attributes["hg.tenant"] == tenant
    assert heal_server.attributes["hg.failure_class"] == "OUT_OF_MEMORY"
    # ...and the detector's diagnosis under the coordinator's call to it: the leaves are called by the workflow.
    detector_server = next(s for s in spans if s.service == "healing-guard-detector"
                           and s.name.endswith("Detector/ReportFailure"))
    assert by_id[detector_server.parent_span_id].service == "healing-guard-coordinator"
    assert detector_server.attributes["hg.failure_class"] == "OUT_OF_MEMORY"
    dispatch = [s for s in spans if s.service == "healing-guard-coordinator" and s.name.startswith("dispatch ")]
    assert dispatch and dispatch[0].attributes["hg.leader_id"].startswith("coordinator-")
