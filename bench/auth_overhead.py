"""What authorisation costs a call, against what the heal path itself costs.

    .venv/bin/python -m bench.auth_overhead [--seconds 1.5]

Measures, in one run on this machine:
- the guard's per-call work outside gRPC (bearer parsing, token verification with the
  revocation and lockout checks, the access table, the tenant-header check), with the
  verification cache (the normal case: a client reuses its token) and without it
  (every call a new token: the worst case);
- the detector's diagnosis of a sample job log (the domain work of one heal, its
  cheapest large step), as the baseline.
Prints the ratio per guarded call and for a heal that crosses HOPS guarded calls,
and writes bench/results/auth_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.common import auth
from services.common.security import GuardedVerifier, RevocationList
from services.common.tokens import TokenSigner, public_jwk
from services.detector.diagnose import Diagnoser
from services.planner.access import ACCESS as PLANNER_ACCESS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "auth_overhead.json"
# Guarded calls in one heal: gateway→detector, detector→tenancy (quota), →predictor, →planner,
# →coordinator, and audit appends for diagnosis, plan, action and outcome.
HOPS = 9


def per_call(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    fn()  # warm
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return (now - start) / count, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.auth_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement (default 1.5)")
    args = parser.parse_args(argv)

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = TokenSigner(pem, public_jwk(key)["kid"])
    revocations = RevocationList()
    for index in range(10_000):  # a realistic revocation list
        revocations.revoke(f"revoked-{index}")
    jwks = {"keys": [signer.public_jwk()]}
    cached = GuardedVerifier(jwks, revocations=revocations)
    uncached = GuardedVerifier(jwks, revocations=revocations, cache_size=0)
    token = signer.mint("ci-bot", "acme", ["operator", "viewer"])
    metadata = (("authorization", f"Bearer {token}"), ("x-hg-tenant", "acme"))

    def guard(verifier: GuardedVerifier) -> Callable[[], object]:
        def admit() -> object:
            principal = verifier.verify(auth.bearer_token(metadata))
            auth.authorize(principal, "PlanHealing", PLANNER_ACCESS)
            for name, value in metadata:
                if name == "x-hg-tenant" and value != principal.tenant:
                    raise AssertionError("tenant header")
            return principal

        return admit

    log = next((ROOT / "examples").glob("oom*.log")).read_bytes()
    diagnoser = Diagnoser()
    diagnose_s, diagnose_n = per_call(lambda: diagnoser.diagnose(log), args.seconds)
    cached_s, cached_n = per_call(guard(cached), args.seconds)
    uncached_s, uncached_n = per_call(guard(uncached), args.seconds)

    rows = [
        ("guard, verification cached", cached_s, cached_n),
        ("guard, no cache (new token every call)", uncached_s, uncached_n),
        (f"detector diagnose ({len(log)} B sample log)", diagnose_s, diagnose_n),
    ]
    print(f"{'measurement':44} {'µs/call':>10} {'calls/s':>12} {'samples':>8}")
    for name, seconds, count in rows:
        print(f"{name:44} {seconds * 1e6:10.1f} {1 / seconds:12,.0f} {count:8}")
    ratios = {
        "cached_per_call_vs_diagnose": cached_s / diagnose_s,
        "uncached_per_call_vs_diagnose": uncached_s / diagnose_s,
        "cached_per_heal_vs_diagnose": HOPS * cached_s / diagnose_s,
        "uncached_per_heal_vs_diagnose": HOPS * uncached_s / diagnose_s,
    }
    print(
        f"\nauthorisation / diagnose, one guarded call: cached {ratios['cached_per_call_vs_diagnose']:.2%}, "
        f"uncached {ratios['uncached_per_call_vs_diagnose']:.2%}"
    )
    print(
        f"authorisation / diagnose, a heal of {HOPS} guarded calls: cached "
        f"{ratios['cached_per_heal_vs_diagnose']:.2%}, uncached {ratios['uncached_per_heal_vs_diagnose']:.2%}"
    )
    print(
        "(the diagnose baseline is only the detector's domain work; a heal also pays fsyncs, planning,\n"
        " and gRPC hops, so the share of the whole heal is smaller still)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": f"python -m bench.auth_overhead --seconds {args.seconds}",
                "machine": platform.platform(),
                "python": platform.python_version(),
                "guard_cached_us": cached_s * 1e6,
                "guard_uncached_us": uncached_s * 1e6,
                "guard_cached_per_s": 1 / cached_s,
                "guard_uncached_per_s": 1 / uncached_s,
                "diagnose_us": diagnose_s * 1e6,
                "sample_log_bytes": len(log),
                "hops_per_heal": HOPS,
                "revocation_list_size": 10_000,
                **ratios,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
