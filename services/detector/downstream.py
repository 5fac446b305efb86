"""The detector's calls to its peers, over the contracts: quota (tenancy), plan
(planner), execution (coordinator). Each failure is reported in the response as a
warning, not as an error: the diagnosis stands even when a peer is away."""

from __future__ import annotations

import logging

import grpc

from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2, coordinator_pb2_grpc
from healing_guard.planner.v1 import planner_pb2, planner_pb2_grpc
from healing_guard.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc
from services.common.clients import PeerClients
from services.common.errors import NotFound, QuotaExceeded, Unavailable

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


class Downstream:
    def __init__(self, peers: PeerClients) -> None:
        self.peers = peers

    async def consume_failure_quota(self, tenant: str, request_id: str) -> None:
        """Raise QuotaExceeded / NotFound (unknown tenant) / Unavailable before any work is done."""
        stub = self.peers.stub("tenancy", tenancy_pb2_grpc.TenancyStub)
        try:
            await stub.ConsumeQuota(tenancy_pb2.ConsumeQuotaRequest(
                tenant_id=tenant, resource=tenancy_pb2.RESOURCE_FAILURES_PER_MINUTE, amount=1, request_id=request_id,
            ), timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                retry = _retry_delay(error)
                raise QuotaExceeded(f"{tenant}/failures_per_minute", error.details() or "quota spent", retry) from None
            if error.code() is grpc.StatusCode.NOT_FOUND:
                raise NotFound("tenant", tenant, error.details()) from None
            raise Unavailable(f"tenancy could not check the quota: {error.code().name}") from None

    async def plan(self, tenant: str, diagnosis: common_pb2.Diagnosis, last_good_revision: str,
                   memory_limit_mb: int) -> common_pb2.HealingPlan:
        stub = self.peers.stub("planner", planner_pb2_grpc.PlannerStub)
        return await stub.PlanHealing(planner_pb2.PlanHealingRequest(
            tenant_id=tenant, diagnosis=diagnosis, last_good_revision=last_good_revision,
            memory_limit_mb=memory_limit_mb,
        ), timeout=TIMEOUT_S)

    async def submit(self, tenant: str, plan: common_pb2.HealingPlan) -> list[str]:
        stub = self.peers.stub("coordinator", coordinator_pb2_grpc.CoordinatorStub)
        reply = await stub.SubmitPlan(coordinator_pb2.SubmitPlanRequest(tenant_id=tenant, plan=plan),
                                      timeout=TIMEOUT_S)
        return list(reply.action_ids)


def _retry_delay(error: grpc.aio.AioRpcError) -> float:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return 60.0
