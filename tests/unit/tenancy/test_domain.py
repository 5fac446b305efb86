"""Domain modules of tenancy: threat rules, signing-key rotation, billing, quota concurrency."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument, QuotaExceeded, Unauthenticated
from services.common.security import Refusal
from services.common.tokens import TokenVerifier
from services.tenancy import billing
from services.tenancy.keys import KeyRing, new_signing_key
from services.tenancy.quotas import Resource
from services.tenancy.store import TenancyStore
from services.tenancy.tenants import new_tenant
from services.tenancy.threats import Response, ThreatDetector, ThreatKind, ThreatPolicy


def refusal(
    status: str = "PERMISSION_DENIED",
    reason: str = "SetPolicy needs role admin; your token has viewer",
    *,
    at: float = 100.0,
    verified: bool = True,
    tenant: str = "acme",
    subject: str = "bob",
    source: str = "10.0.0.1",
    jti: str = "j1",
) -> Refusal:
    return Refusal("planner", "SetPolicy", status, reason, source, tenant, subject, jti, verified, at)


# --- threats ------------------------------------------------------------------------------


def test_privilege_probing_fires_once_at_the_threshold_and_revokes() -> None:
    detector = ThreatDetector()
    found = [detector.observe(refusal(at=100.0 + i)) for i in range(7)]
    fired = [d for d in found if d is not None]
    assert len(fired) == 1 and found[4] is fired[0]
    assert fired[0].kind is ThreatKind.PRIVILEGE_PROBE
    assert Response.REVOCATION in fired[0].responses and fired[0].token_id == "j1"


def test_refusals_outside_the_window_do_not_add_up() -> None:
    detector = ThreatDetector()
    assert all(detector.observe(refusal(at=100.0 + 20 * i)) is None for i in range(10))


CROSS_TENANT = "tenant_id 'globex' does not match your token's tenant 'acme'"


def mistakes(detector: ThreatDetector, start: float, n: int = 3):  # type: ignore[no-untyped-def]
    """n requests naming the wrong tenant, one a second from `start`; the last detection."""
    found = [detector.observe(refusal(reason=CROSS_TENANT, at=start + i)) for i in range(n)]
    return [d for d in found if d is not None][-1] if any(found) else None


def test_three_cross_tenant_mistakes_alert_and_lock_out_briefly_without_revoking() -> None:
    # Issue 15, item 9: three typos of a shared operator identity used to revoke its
    # token and lock it out for 5 minutes.
    fired = mistakes(ThreatDetector(), 10.0)
    assert fired is not None and fired.kind is ThreatKind.CROSS_TENANT_PROBE
    assert fired.responses == (Response.ALERT, Response.LOCKOUT)
    assert Response.REVOCATION not in fired.responses
    assert fired.lockout_until == 12.0 + 5.0
    assert "locked out for 5 s (lockout 1 of this subject" in fired.detail


def test_repeated_cross_tenant_probing_locks_out_longer_each_time_up_to_the_cap() -> None:
    detector = ThreatDetector(ThreatPolicy(lockout_seconds=120))
    lengths, at = [], 0.0
    for _ in range(7):
        fired = mistakes(detector, at)
        assert fired is not None
        lengths.append(fired.lockout_until - fired.at)
        at = fired.lockout_until + 1.0  # probing again as soon as the lockout ends
    assert lengths == [5.0, 10.0, 20.0, 40.0, 80.0, 120.0, 120.0]


def test_a_subject_quiet_for_the_memory_starts_again_from_the_short_lockout() -> None:
    detector = ThreatDetector(ThreatPolicy.from_json({"repeat_memory_seconds": 600}))
    first = mistakes(detector, 0.0)
    second = mistakes(detector, 100.0)
    third = mistakes(detector, 100.0 + 700.0)
    assert first is not None and second is not None and third is not None
    assert [d.lockout_until - d.at for d in (first, second, third)] == [5.0, 10.0, 5.0]
    other = mistakes(detector, 101.0, n=3)  # within the window of the second: fires once per burst
    assert other is None


def test_the_lockout_ladder_and_revocation_are_live_policy() -> None:
    policy = ThreatPolicy.from_json({"first_lockout_seconds": 30, "lockout_seconds": 90,
                                     "rules": {"cross_tenant_probe": {"responses": ["alert", "revocation"]}}})
    assert [policy.lockout_for(n) for n in (1, 2, 3)] == [30.0, 60.0, 90.0]
    fired = mistakes(ThreatDetector(policy), 0.0)
    assert fired is not None and fired.responses == (Response.ALERT, Response.REVOCATION)
    assert fired.lockout_until == 0.0


def test_strong_signals_keep_their_responses() -> None:
    detector = ThreatDetector()
    assert detector.policy.rules[ThreatKind.PRIVILEGE_PROBE].responses == (Response.ALERT, Response.REVOCATION)
    fired = detector.observe(refusal("UNAUTHENTICATED", "token has been revoked", verified=True))
    assert fired is not None and fired.kind is ThreatKind.REVOKED_TOKEN_USE


def test_revoked_token_use_is_detected_at_once_but_unverified_claims_only_alert() -> None:
    detector = ThreatDetector()
    fired = detector.observe(refusal("UNAUTHENTICATED", "token has been revoked", verified=False))
    assert fired is not None and fired.kind is ThreatKind.REVOKED_TOKEN_USE
    policy = ThreatPolicy.from_json(
        {
            "rules": {
                "auth_failure_burst": {
                    "threshold": 3,
                    "window_seconds": 10,
                    "responses": ["lockout", "revocation"],
                }
            }
        }
    )
    detector = ThreatDetector(policy)
    burst = [
        detector.observe(
            refusal("UNAUTHENTICATED", "token signature does not verify", verified=False, at=50.0 + i)
        )
        for i in range(3)
    ]
    assert burst[-1] is not None and burst[-1].responses == (Response.ALERT,)
    assert "3 failed authentications" in burst[-1].detail


def test_failed_authentication_without_a_tenant_counts_by_source() -> None:
    detector = ThreatDetector(ThreatPolicy.from_json({"rules": {"auth_failure_burst": {"threshold": 2}}}))
    assert (
        detector.observe(refusal("UNAUTHENTICATED", "malformed", tenant="", verified=False, source="a"))
        is None
    )
    assert (
        detector.observe(refusal("UNAUTHENTICATED", "malformed", tenant="", verified=False, source="b"))
        is None
    )
    fired = detector.observe(refusal("UNAUTHENTICATED", "malformed", tenant="", verified=False, source="a"))
    assert fired is not None and fired.source == "a"


def test_ordinary_denials_are_not_threats() -> None:
    assert (
        ThreatDetector().observe(refusal(reason="service token for 'planner' presented by a peer ..."))
        is None
    )


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"rules": {"nope": {}}}, "threat_policy.rules"),
        ({"rules": {"privilege_probe": {"threshold": 0}}}, "threat_policy.rules.privilege_probe.threshold"),
        (
            {"rules": {"privilege_probe": {"responses": ["explode"]}}},
            "threat_policy.rules.privilege_probe.responses",
        ),
        ({"lockout_seconds": -1}, "threat_policy.lockout_seconds"),
        ({"lockout_seconds": 60, "first_lockout_seconds": 61}, "threat_policy.first_lockout_seconds"),
        ({"repeat_memory_seconds": 0}, "threat_policy.repeat_memory_seconds"),
    ],
)
def test_bad_threat_policies_name_the_field(policy: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ThreatPolicy.from_json(policy)
    assert caught.value.field == field


# --- signing keys ----------------------------------------------------------------------------


def test_rotation_keeps_the_old_key_verifying_for_the_overlap_only() -> None:
    ring = KeyRing([new_signing_key(1000.0)])
    old_token = ring.signer("healing-guard", "healing-guard").mint(
        "a", "acme", ["viewer"], ttl_seconds=5000, now=1000.0
    )
    fresh, changed = ring.rotate(2000.0, overlap_seconds=600)
    assert ring.current.kid == fresh.kid and len(changed) == 2
    new_token = ring.signer("healing-guard", "healing-guard").mint("b", "acme", ["viewer"], now=2000.0)
    during = TokenVerifier(ring.jwks(2100.0), clock=lambda: 2100.0)
    assert during.verify(old_token).subject == "a" and during.verify(new_token).subject == "b"
    after = TokenVerifier(ring.jwks(2700.0), clock=lambda: 2700.0)
    assert after.verify(new_token).subject == "b"
    with pytest.raises(Unauthenticated, match="unknown key id"):
        after.verify(old_token)
    with pytest.raises(InvalidArgument, match="overlap_seconds"):
        ring.rotate(3000.0, overlap_seconds=-1)
    assert ring.due_for_rotation(2000.0 + 86_400, 86_400) and not ring.due_for_rotation(2001.0, 86_400)


# --- billing --------------------------------------------------------------------------------

events_strategy = st.lists(
    st.tuples(st.sampled_from(list(Resource)[1:]), st.integers(1, 1000), st.floats(0, 1000, allow_nan=False)),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(events_strategy)
def test_a_bill_is_the_sum_of_its_events_and_does_not_depend_on_their_order(raw) -> None:  # type: ignore[no-untyped-def]
    events = [billing.UsageEvent(f"r{i}", r, n, 1000.0 + t) for i, (r, n, t) in enumerate(raw)]
    report = billing.billing_report("acme", "team", 1000.0, 3000.0, events)
    again = billing.billing_report("acme", "team", 1000.0, 3000.0, list(reversed(events)))
    assert report == again
    expected = sum(n * billing.PRICE_PLANS["team"][r] for r, n, _ in raw)
    assert report.total_micros == expected == sum(line.amount_micros for line in report.lines)
    assert report.event_count == len(events)


def test_the_digest_changes_when_any_event_changes() -> None:
    events = [billing.UsageEvent("a", Resource.RESOURCE_ACTIONS_PER_DAY, 1, 10.0)]
    changed = [billing.UsageEvent("a", Resource.RESOURCE_ACTIONS_PER_DAY, 2, 10.0)]
    assert billing.events_digest(events) != billing.events_digest(changed)
    with pytest.raises(InvalidArgument, match="period_end"):
        billing.validate_period(10.0, 10.0)
    with pytest.raises(InvalidArgument, match="plan"):
        billing.billing_report("acme", "gold", 1.0, 2.0, [])


# --- quota under contention -------------------------------------------------------------------


def test_parallel_consumers_on_separate_connections_never_overspend(tmp_path: Path) -> None:
    """Eight threads, each with its own SQLite connection (as separate replicas would be)."""
    path = tmp_path / "tenancy.sqlite3"
    setup = TenancyStore(path)
    setup.create_tenant(new_tenant("acme", "", "team", 0.0))
    setup.set_quota("acme", Resource.RESOURCE_ACTIONS_PER_DAY, 50, 0.0)
    granted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()

    def consumer() -> None:
        store = TenancyStore(path)
        for _ in range(15):
            try:
                store.consume("acme", Resource.RESOURCE_ACTIONS_PER_DAY, 1, uuid.uuid4().hex, 100.0)
                with lock:
                    granted.append(1)
            except QuotaExceeded:
                with lock:
                    refused.append(1)
        store.db.close()

    threads = [threading.Thread(target=consumer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert (len(granted), len(refused)) == (50, 70)
    assert setup.quota("acme", Resource.RESOURCE_ACTIONS_PER_DAY, 100.0).used == 50
    setup.db.close()


def test_counters_of_sources_gone_quiet_are_forgotten() -> None:
    # A spray of bad tokens from ever-new addresses (or naming ever-new tenants) must not
    # grow tenancy's memory without bound: a key whose window has passed holds nothing.
    detector = ThreatDetector()
    for i in range(20_000):
        detector.observe(
            refusal("UNAUTHENTICATED", "token signature does not verify", at=100.0 + i,
                    verified=False, tenant="", source=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        )
    assert detector.tracked_keys() < 2_000
