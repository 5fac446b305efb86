"""The attack battery: forged, stale, revoked and misused credentials, cross-tenant
requests, privilege escalation and impersonation, through the Envoy gateway AND
directly against every service's own port. Every attack must be refused with the
right status and nothing read or changed (checked by a read-back with a legitimate
token). A control call with a legitimate token shows each probe would have worked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from deploy.mesh import Mesh
from deploy.pki.make_pki import make_foreign_client
from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
from healing_guard.coordinator.v1 import coordinator_pb2, coordinator_pb2_grpc
from healing_guard.detector.v1 import detector_pb2, detector_pb2_grpc
from healing_guard.planner.v1 import planner_pb2, planner_pb2_grpc
from healing_guard.predictor.v1 import predictor_pb2, predictor_pb2_grpc
from healing_guard.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc
from services.common.tokens import TokenSigner

pytestmark = pytest.mark.integration

SERVICES = ("tenancy", "planner", "detector", "predictor", "audit", "coordinator")
STUBS = {
    "tenancy": tenancy_pb2_grpc.TenancyStub,
    "planner": planner_pb2_grpc.PlannerStub,
    "detector": detector_pb2_grpc.DetectorStub,
    "predictor": predictor_pb2_grpc.PredictorStub,
    "audit": audit_pb2_grpc.AuditStub,
    "coordinator": coordinator_pb2_grpc.CoordinatorStub,
}
UNAUTH, DENIED, OK = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OK
TIMEOUT = 10


# --- connections ---------------------------------------------------------------------------


def _port_of(mesh: Mesh, service: str) -> int:
    return mesh.ports["coordinator-1" if service == "coordinator" else service]


def channel_to(
    mesh: Mesh,
    where: str,
    cert: str | None = "operator",
    *,
    ca: bytes | None = None,
    key_pem: bytes | None = None,
    cert_pem: bytes | None = None,
) -> grpc.Channel:
    """A channel to the gateway (where="gateway") or straight to a service's own port."""
    root = ca or mesh.pki.ca.read_bytes()
    if cert_pem is not None:
        credentials = grpc.ssl_channel_credentials(root, key_pem, cert_pem)
    elif cert is None:
        credentials = grpc.ssl_channel_credentials(root)
    else:
        credentials = grpc.ssl_channel_credentials(
            root, mesh.pki.key(cert).read_bytes(), mesh.pki.cert(cert).read_bytes()
        )
    if where == "gateway":
        return grpc.secure_channel(mesh.gateway_address, credentials)
    return grpc.secure_channel(
        f"127.0.0.1:{_port_of(mesh, where)}",
        credentials,
        options=[("grpc.ssl_target_name_override", f"{where}.healing-guard.local")],
    )


@pytest.fixture(scope="module")
def channels(mesh: Mesh) -> Iterator[dict[str, grpc.Channel]]:
    opened = {where: channel_to(mesh, where) for where in ("gateway", *SERVICES)}
    yield opened
    for channel in opened.values():
        channel.close()


def call(
    channel: grpc.Channel,
    service: str,
    method: str,
    request: Any,
    token: str | None,
    extra: tuple[tuple[str, str], ...] = (),
) -> tuple[grpc.StatusCode, Any, str]:
    metadata = ((("authorization", f"Bearer {token}"),) if token is not None else ()) + extra
    try:
        reply = getattr(STUBS[service](channel), method)(request, metadata=metadata, timeout=TIMEOUT)
        return OK, reply, ""
    except grpc.RpcError as error:
        return error.code(), None, error.details() or ""


# --- what each service is asked (a tenant-scoped read), and how to read back ---------------


def probe(service: str, victim: str) -> tuple[str, Any]:
    return {
        "tenancy": ("GetTenant", tenancy_pb2.GetTenantRequest(tenant_id=victim)),
        "planner": ("GetPolicy", planner_pb2.GetPolicyRequest(tenant_id=victim)),
        # detector serves only ReportFailure/StreamFailure/GetDiagnosis/RecordOutcome so far:
        # a legitimate reader gets NOT_FOUND for an unknown failure (past the guard), attackers less.
        "detector": ("GetDiagnosis", detector_pb2.GetDiagnosisRequest(failure_id=f"f-{victim}")),
        "predictor": (
            "ForecastRisk",
            predictor_pb2.ForecastRiskRequest(
                tenant_id=victim, repository="acme/app", pipeline="ci", horizon_runs=1
            ),
        ),
        "audit": ("ListEntries", audit_pb2.ListEntriesRequest(tenant_id=victim, limit=50)),
        "coordinator": ("ListActions", coordinator_pb2.ListActionsRequest(failure_id=f"f-{victim}", limit=5)),
    }[service]


@dataclass
class Victim:
    tenant: str
    admin_token: str  # a legitimate admin of the victim tenant
    operator_token: str


@pytest.fixture()
def victim(tenant: str, signer) -> Victim:  # type: ignore[no-untyped-def]
    return Victim(
        tenant,
        signer.mint("victim-admin", tenant, ["admin", "operator", "viewer"]),
        signer.mint("victim-bot", tenant, ["operator", "viewer"]),
    )


def snapshot(channels: dict[str, grpc.Channel], admin_token: str, victim: Victim) -> dict[str, Any]:
    """What the victim's data looks like to a legitimate reader (direct, no gateway)."""
    tenant = call(
        channels["tenancy"],
        "tenancy",
        "GetTenant",
        tenancy_pb2.GetTenantRequest(tenant_id=victim.tenant),
        admin_token,
    )
    policy = call(
        channels["planner"], "planner", "GetPolicy", planner_pb2.GetPolicyRequest(), victim.admin_token
    )
    entries = call(
        channels["audit"],
        "audit",
        "ListEntries",
        audit_pb2.ListEntriesRequest(tenant_id=victim.tenant, limit=200),
        admin_token,
    )
    assert all(result[0] is OK for result in (tenant, policy, entries)), (tenant, policy, entries)
    # SECURITY_EVENT entries are the defence recording the attack, not the attacker's doing.
    return {
        "tenant": tenant[1],
        "policy": policy[1],
        "audit": [(e.index, e.kind) for e in entries[1].entries if e.kind != "SECURITY_EVENT"],
    }


def mutations(victim: str) -> dict[str, tuple[str, str, Any]]:
    """One write per service an attacker would like to make to the victim's data."""
    return {
        "tenancy": (
            "tenancy",
            "UpdateTenant",
            tenancy_pb2.UpdateTenantRequest(
                tenant=tenancy_pb2.Tenant(tenant_id=victim, config={"pwned": "yes"})
            ),
        ),
        "planner": (
            "planner",
            "SetPolicy",
            planner_pb2.SetPolicyRequest(policy=planner_pb2.Policy(tenant_id=victim, exploration=False)),
        ),
        "detector": ("detector", "ReportFailure", _forged_report(victim)),
    }


def _forged_report(victim: str) -> detector_pb2.ReportFailureRequest:
    from deploy.heal_examples import EXAMPLES, failure_report

    manifest = json.loads((EXAMPLES / "manifest.json").read_text())
    report = failure_report(next(e for e in manifest if "oom" in e["file"]))
    report.tenant_id = victim
    report.diagnose_only = True
    return detector_pb2.ReportFailureRequest(report=report, log=b"Killed: out of memory\n")


# --- forged and stale tokens -------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(tenant: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "healing-guard",
        "aud": "healing-guard",
        "sub": "mallory",
        "tenant": tenant,
        "roles": ["admin", "operator", "viewer"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": f"forged-{now}",
    }
    claims.update(changes)
    return claims


def forged_token(kind: str, signer: TokenSigner, mesh: Mesh, tenant: str) -> str | None:
    key_pem = mesh.pki.signing_key.read_bytes()
    if kind == "no token":
        return None
    if kind == "malformed token":
        return "this-is.not-a.jwt"
    if kind == "alg none":
        header = {"alg": "none", "typ": "JWT", "kid": signer.kid}
        return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(tenant)).encode())}."
    if kind == "HS256 with the public key":
        public = serialization.load_pem_private_key(key_pem, None).public_key()
        secrets = [
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        ]
        header = {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(tenant)).encode())}"
        mac = hmac.new(secrets[0], signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"
    roles = ["admin", "operator", "viewer"]
    if kind == "wrong issuer":
        return TokenSigner(key_pem, signer.kid, issuer="evil-issuer").mint("mallory", tenant, roles)
    if kind == "wrong audience":
        return TokenSigner(key_pem, signer.kid, audience="someone-else").mint("mallory", tenant, roles)
    if kind == "expired":
        return signer.mint("mallory", tenant, roles, ttl_seconds=60, now=time.time() - 3600)
    if kind == "not yet valid":
        return signer.mint("mallory", tenant, roles, ttl_seconds=600, now=time.time() + 3600)
    if kind == "unknown kid":
        return TokenSigner(key_pem, "no-such-kid").mint("mallory", tenant, roles)
    raise AssertionError(kind)


TOKEN_ATTACKS = (
    "no token",
    "malformed token",
    "alg none",
    "HS256 with the public key",
    "wrong issuer",
    "wrong audience",
    "expired",
    "not yet valid",
    "unknown kid",
)


def expected_status(kind: str, where: str) -> grpc.StatusCode:
    # Envoy's jwt_authn answers an audience mismatch with HTTP 403 (gRPC PERMISSION_DENIED);
    # every service answers UNAUTHENTICATED.
    return DENIED if (kind == "wrong audience" and where == "gateway") else UNAUTH


@pytest.mark.parametrize("where", ["gateway", *SERVICES])
def test_control_a_legitimate_token_passes_every_probe(channels, victim: Victim, where: str) -> None:  # type: ignore[no-untyped-def]
    for service in SERVICES if where == "gateway" else (where,):
        method, request = probe(service, victim.tenant)
        status, _, details = call(channels[where], service, method, request, victim.admin_token)
        wanted = grpc.StatusCode.NOT_FOUND if service == "detector" else OK
        assert status is wanted, f"{service}.{method} via {where}: {status.name} {details}"


@pytest.mark.parametrize("where", ["gateway", *SERVICES])
@pytest.mark.parametrize("kind", TOKEN_ATTACKS)
def test_forged_and_stale_tokens_are_refused_and_change_nothing(
    channels,
    mesh,
    signer,
    admin,
    victim,  # type: ignore[no-untyped-def]
    kind: str,
    where: str,
) -> None:
    before = snapshot(channels, admin.token, victim)
    token = forged_token(kind, signer, mesh, victim.tenant)
    for service in SERVICES if where == "gateway" else (where,):
        method, request = probe(service, victim.tenant)
        status, reply, details = call(channels[where], service, method, request, token)
        assert status is expected_status(kind, where), (
            f"{kind} → {service}.{method} via {where}: {status.name} {details}"
        )
        assert reply is None
    for name, (service, method, request) in mutations(victim.tenant).items():
        if where in ("gateway", service):
            status, _, details = call(channels[where], service, method, request, token)
            assert status is expected_status(kind, where), f"{kind} → {name} write via {where}: {details}"
    assert snapshot(channels, admin.token, victim) == before


@pytest.mark.parametrize("where", ["gateway", *SERVICES])
def test_a_revoked_token_is_refused_everywhere(channels, admin, victim, where: str) -> None:  # type: ignore[no-untyped-def]
    issued = admin.tenancy.IssueToken(
        tenancy_pb2.IssueTokenRequest(
            tenant_id=victim.tenant, subject="leaky-bot", roles=["admin", "viewer"], ttl_seconds=600
        ),
        metadata=admin.metadata,
        timeout=TIMEOUT,
    )
    services = SERVICES if where == "gateway" else (where,)
    for service in services:  # it works before revocation: the probe can fail
        method, request = probe(service, victim.tenant)
        assert call(channels[where], service, method, request, issued.token)[0] in (
            OK,
            grpc.StatusCode.NOT_FOUND,
        )
    admin.tenancy.RevokeToken(
        tenancy_pb2.RevokeTokenRequest(token_id=issued.token_id, reason="leaked"),
        metadata=admin.metadata,
        timeout=TIMEOUT,
    )
    before = snapshot(channels, admin.token, victim)
    deadline = time.monotonic() + 7.0  # bounded staleness: watch event, or the 5 s resync
    pending = set(services)
    while pending and time.monotonic() < deadline:
        for service in sorted(pending):
            method, request = probe(service, victim.tenant)
            status, _, details = call(channels[where], service, method, request, issued.token)
            if status is UNAUTH and "revoked" in details:
                pending.discard(service)
        time.sleep(0.1)
    assert not pending, f"still accepted a revoked token after 7 s: {sorted(pending)} via {where}"
    for _name, (service, method, request) in mutations(victim.tenant).items():
        if where in ("gateway", service):
            assert call(channels[where], service, method, request, issued.token)[0] is UNAUTH
    assert snapshot(channels, admin.token, victim) == before


# --- valid tokens used beyond their rights -------------------------------------------------------


@pytest.mark.parametrize("where", ["gateway", "tenancy", "planner", "predictor", "audit"])
def test_tenant_a_cannot_read_tenant_b_by_id_in_the_body(channels, signer, victim, where: str) -> None:  # type: ignore[no-untyped-def]
    for service in ("tenancy", "planner", "predictor", "audit") if where == "gateway" else (where,):
        # A fresh subject per probe: three cross-tenant refusals of one subject trigger the
        # threat response (alert + a short lockout, tested on its own), which would change the
        # refusal's message for the probes after it depending on how fast it lands.
        attacker = signer.mint(f"mallory-{where}-{service}", "t-attacker-a", ["admin", "operator", "viewer"])
        method, request = probe(service, victim.tenant)
        status, reply, details = call(channels[where], service, method, request, attacker)
        assert status is DENIED and reply is None, f"{service}.{method} via {where}: {status.name}"
        assert "does not match your token's tenant" in details


@pytest.mark.parametrize("where", ["gateway", *SERVICES])
def test_tenant_a_cannot_pick_tenant_b_with_the_x_hg_tenant_header(
    channels,
    admin,
    signer,
    victim,  # type: ignore[no-untyped-def]
    where: str,
) -> None:
    attacker_tenant = admin.tenancy.CreateTenant(
        tenancy_pb2.CreateTenantRequest(tenant_id=f"a-{victim.tenant}", plan="free"),
        metadata=admin.metadata,
        timeout=TIMEOUT,
    ).tenant_id
    attacker = signer.mint("mallory", attacker_tenant, ["admin", "operator", "viewer"])
    forged_header = (("x-hg-tenant", victim.tenant),)
    if where == "gateway":
        # Envoy drops the client's x-hg-tenant and sets it from the verified claim: the request
        # is the attacker's own, and answers with the attacker's data only.
        status, reply, _ = call(
            channels[where], "tenancy", "GetTenant", tenancy_pb2.GetTenantRequest(), attacker, forged_header
        )
        assert status is OK and reply.tenant_id == attacker_tenant != victim.tenant
        status, reply, _ = call(
            channels[where],
            "audit",
            "ListEntries",
            audit_pb2.ListEntriesRequest(limit=50),
            attacker,
            forged_header,
        )
        assert status is OK and all(e.tenant_id == attacker_tenant for e in reply.entries)
        return
    method, request = probe(where, "")
    status, reply, details = call(channels[where], where, method, request, attacker, forged_header)
    assert status is DENIED and reply is None and "x-hg-tenant" in details


@pytest.mark.parametrize("where", ["gateway", "tenancy", "planner", "detector"])
def test_a_viewer_cannot_call_admin_rpcs(channels, admin, signer, victim, where: str) -> None:  # type: ignore[no-untyped-def]
    viewer = signer.mint("reader", victim.tenant, ["viewer"])
    before = snapshot(channels, admin.token, victim)
    for _name, (service, method, request) in mutations(victim.tenant).items():
        if where in ("gateway", service):
            status, _, details = call(channels[where], service, method, request, viewer)
            assert status is DENIED, f"{service}.{method} via {where}: {status.name}"
            assert "needs role" in details
    assert snapshot(channels, admin.token, victim) == before


@pytest.mark.parametrize("where", ["gateway", "tenancy", "planner", "detector"])
def test_a_body_tenant_that_disagrees_with_the_token_is_refused(
    channels,
    admin,
    signer,
    victim,  # type: ignore[no-untyped-def]
    where: str,
) -> None:
    attacker = signer.mint("mallory", "t-attacker-b", ["admin", "operator", "viewer"])
    before = snapshot(channels, admin.token, victim)
    for _name, (service, method, request) in mutations(victim.tenant).items():
        if where in ("gateway", service):
            status, _, details = call(channels[where], service, method, request, attacker)
            assert status is DENIED, f"{service}.{method} via {where}: {status.name} {details}"
    assert snapshot(channels, admin.token, victim) == before


# --- transport identity ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["gateway", *SERVICES])
def test_a_client_certificate_from_another_ca_is_refused(mesh, tmp_path, victim, where: str) -> None:  # type: ignore[no-untyped-def]
    foreign = make_foreign_client(tmp_path)
    with channel_to(
        mesh,
        where,
        ca=mesh.pki.ca.read_bytes(),
        key_pem=foreign.key.read_bytes(),
        cert_pem=foreign.cert.read_bytes(),
    ) as channel:
        service = "tenancy" if where == "gateway" else where
        method, request = probe(service, victim.tenant)
        status, reply, _ = call(channel, service, method, request, victim.admin_token)
    assert status is grpc.StatusCode.UNAVAILABLE and reply is None


@pytest.mark.parametrize("where", ["gateway", *SERVICES])
def test_no_client_certificate_is_refused(mesh, victim, where: str) -> None:  # type: ignore[no-untyped-def]
    with channel_to(mesh, where, cert=None) as channel:
        service = "tenancy" if where == "gateway" else where
        method, request = probe(service, victim.tenant)
        status, reply, _ = call(channel, service, method, request, victim.admin_token)
    assert status is grpc.StatusCode.UNAVAILABLE and reply is None


@pytest.mark.parametrize(
    ("cert", "token_of"), [("planner", "detector"), ("operator", "detector"), ("gateway", "planner")]
)
def test_a_service_token_over_another_identity_cannot_append_to_audit(
    mesh,
    channels,
    admin,
    victim,  # type: ignore[no-untyped-def]
    cert: str,
    token_of: str,
) -> None:
    token = (mesh.run_dir / "tokens" / f"{token_of}.jwt").read_text().strip()
    before = snapshot(channels, admin.token, victim)
    entry = audit_pb2.NewEntry(kind="DIAGNOSIS", tenant_id=victim.tenant, subject="forged", payload=b"{}")
    with channel_to(mesh, "audit", cert=cert) as channel:
        status, _, details = call(channel, "audit", "Append", audit_pb2.AppendRequest(entries=[entry]), token)
    assert status is DENIED and f"not {token_of}.healing-guard.local" in details
    assert snapshot(channels, admin.token, victim) == before


def test_control_the_genuine_service_identity_may_append(mesh, channels, admin, victim) -> None:  # type: ignore[no-untyped-def]
    token = (mesh.run_dir / "tokens" / "detector.jwt").read_text().strip()
    entry = audit_pb2.NewEntry(kind="DIAGNOSIS", tenant_id=victim.tenant, subject="genuine", payload=b"{}")
    with channel_to(mesh, "audit", cert="detector") as channel:
        assert call(channel, "audit", "Append", audit_pb2.AppendRequest(entries=[entry]), token)[0] is OK


@pytest.mark.parametrize(
    ("service", "method", "request_of"),
    [
        (
            "audit",
            "Append",
            lambda t: audit_pb2.AppendRequest(
                entries=[audit_pb2.NewEntry(kind="DIAGNOSIS", tenant_id=t, subject="x", payload=b"{}")]
            ),
        ),
        (
            "tenancy",
            "ConsumeQuota",
            lambda t: tenancy_pb2.ConsumeQuotaRequest(tenant_id=t, resource=2, amount=1, request_id="x"),
        ),
        ("planner", "RecordOutcome", lambda t: planner_pb2.RecordOutcomeRequest()),
    ],
)
def test_a_service_accepts_only_the_callers_its_table_names(
    channels,
    victim,
    service,
    method,  # type: ignore[no-untyped-def]
    request_of: Callable[[str], Any],
) -> None:
    for where in ("gateway", service):
        status, _, details = call(
            channels[where], service, method, request_of(victim.tenant), victim.admin_token
        )
        assert status is DENIED and "needs role service" in details, (
            f"{service}.{method} via {where}: {details}"
        )


# --- threat detection answers the probing ----------------------------------------------------------


def test_privilege_probing_becomes_a_security_event_and_revokes_the_token(
    channels, admin, signer, victim
) -> None:  # type: ignore[no-untyped-def]
    issued = admin.tenancy.IssueToken(
        tenancy_pb2.IssueTokenRequest(
            tenant_id=victim.tenant, subject="prober", roles=["viewer"], ttl_seconds=600
        ),
        metadata=admin.metadata,
        timeout=TIMEOUT,
    )
    service, method, request = mutations(victim.tenant)["planner"]
    for _ in range(6):
        assert call(channels["planner"], service, method, request, issued.token)[0] is DENIED
    deadline = time.monotonic() + 15.0
    events: list[Any] = []
    while time.monotonic() < deadline:
        events = list(
            admin.tenancy.ListSecurityEvents(
                tenancy_pb2.ListSecurityEventsRequest(tenant_id=victim.tenant),
                metadata=admin.metadata,
                timeout=TIMEOUT,
            ).events
        )
        if any(e.kind == "privilege_probe" for e in events):
            break
        time.sleep(0.3)
    probes = [e for e in events if e.kind == "privilege_probe"]
    assert len(probes) == 1, [(e.kind, e.detail) for e in events]
    assert "revocation" in probes[0].response and "alert" in probes[0].response
    deadline = time.monotonic() + 7.0
    status, details = OK, ""
    while time.monotonic() < deadline:
        status, _, details = call(
            channels["planner"], "planner", "GetPolicy", planner_pb2.GetPolicyRequest(), issued.token
        )
        if status is UNAUTH:
            break
        time.sleep(0.1)
    assert status is UNAUTH and "revoked" in details
    entries = admin.audit.ListEntries(
        audit_pb2.ListEntriesRequest(tenant_id=victim.tenant, kind="SECURITY_EVENT", limit=10),
        metadata=admin.metadata,
        timeout=TIMEOUT,
    )
    assert any(b"privilege_probe" in e.payload for e in entries.entries)


def test_a_few_wrong_tenant_ids_alert_and_lock_out_briefly_but_do_not_revoke(
    channels, admin, victim
) -> None:  # type: ignore[no-untyped-def]
    # Issue 15, item 9: three typos of a shared operator identity used to revoke its token
    # and lock the subject out for 5 minutes. Now: refused, an alert, a 5 s lockout.
    issued = admin.tenancy.IssueToken(
        tenancy_pb2.IssueTokenRequest(
            tenant_id=victim.tenant, subject="typo-bot", roles=["operator", "viewer"], ttl_seconds=600
        ),
        metadata=admin.metadata,
        timeout=TIMEOUT,
    )
    wrong = planner_pb2.GetPolicyRequest(tenant_id=f"{victim.tenant}-typo")
    for _ in range(3):
        status, reply, details = call(channels["planner"], "planner", "GetPolicy", wrong, issued.token)
        assert status is DENIED and reply is None and "does not match your token's tenant" in details
    deadline = time.monotonic() + 15.0
    events: list[Any] = []
    while time.monotonic() < deadline:
        events = [
            e for e in admin.tenancy.ListSecurityEvents(
                tenancy_pb2.ListSecurityEventsRequest(tenant_id=victim.tenant),
                metadata=admin.metadata,
                timeout=TIMEOUT,
            ).events
            if e.kind == "cross_tenant_probe"
        ]
        if events:
            break
        time.sleep(0.3)
    assert len(events) == 1, "no cross_tenant_probe security event within 15 s"
    assert "alert" in events[0].response and "lockout" in events[0].response
    assert "revocation" not in events[0].response
    assert "locked out for 5 s" in events[0].detail
    # Still refused while locked out (every attack refused), and answered again once it ends.
    status, _, _ = call(channels["planner"], "planner", "GetPolicy", wrong, issued.token)
    assert status in (DENIED, UNAUTH)
    deadline = time.monotonic() + 20.0
    status, details = DENIED, ""
    while time.monotonic() < deadline:
        status, _, details = call(
            channels["planner"], "planner", "GetPolicy", planner_pb2.GetPolicyRequest(), issued.token
        )
        if status is OK:
            break
        assert "revoked" not in details or "locked" in details, details
        time.sleep(0.5)
    assert status is OK, f"the token still refused 20 s after a 5 s lockout: {status.name} {details}"
