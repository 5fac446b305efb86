"""How a service appends its decisions to the audit log (over the Audit contract).

Payloads are canonical JSON (sorted keys, no spaces) so the same decision always
hashes the same. A failed append is reported to the caller (None) and logged, and
the decision is not rolled back: the heal must not stop because the audit
service is briefly away. (A durable outbox is the next step; see README.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import grpc

from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
from healing_guard.common.v1 import common_pb2
from services.common.clients import PeerClients

log = logging.getLogger(__name__)

APPEND_TIMEOUT_S = 5.0


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


class AuditTrail:
    def __init__(self, peers: PeerClients) -> None:
        self._peers = peers

    async def record(self, kind: str, tenant: str, subject: str, payload: Mapping[str, Any],
                     *, sensitive: bool = False) -> common_pb2.AuditReceipt | None:
        stub = self._peers.stub("audit", audit_pb2_grpc.AuditStub)
        entry = audit_pb2.NewEntry(kind=kind, tenant_id=tenant, subject=subject,
                                   payload=canonical_json(payload), sensitive=sensitive)
        try:
            reply = await stub.Append(audit_pb2.AppendRequest(entries=[entry]), timeout=APPEND_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            log.warning("audit append of %s for %s failed: %s %s", kind, subject, error.code().name, error.details())
            return None
        return common_pb2.AuditReceipt(index=reply.indexes[0], leaf_hash=reply.leaf_hashes[0], tree_size=reply.tree_size)
