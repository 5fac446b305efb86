"""Seeded, realistic batches of failures for tests and the batch benchmark.

A batch looks like a busy hour of a large CI fleet: jobs run on sharded runner
pools (a few failures per shard, so retries landing together congest it); some
failures share a flaky dependency or a poisoned cache (healed together); some come
from a bad deploy of a service (rollbacks of the same service conflict); genuine
breaks can only be escalated. Capacity and budget cover roughly a third of what
healing everything the most thorough way would take, so the choice matters.
"""

from __future__ import annotations

import numpy as np

from services.common.vocabulary import ActionKind, FailureClass
from services.planner.batch_model import BatchItem, BatchProblem, Candidate

# (class, weight in the mix)
_MIX: list[tuple[FailureClass, float]] = [
    (FailureClass.FLAKY_TEST, 0.28),
    (FailureClass.DEPENDENCY_FETCH, 0.18),
    (FailureClass.OUT_OF_MEMORY, 0.12),
    (FailureClass.INFRASTRUCTURE, 0.14),
    (FailureClass.CONFIGURATION, 0.12),  # a bad deploy of a service: roll it back
    (FailureClass.TEST_FAILURE, 0.10),
    (FailureClass.TIMEOUT, 0.06),
]

# Runner price per minute by pool tier (USD): standard, large, GPU-ish.
_TIER_PRICE = (0.008, 0.032, 0.064)
_HUMAN_TRIAGE_USD = 25.0


def generate_instance(n_failures: int, seed: int) -> BatchProblem:
    """A reproducible batch of `n_failures` failures (the same seed gives the same batch)."""
    rng = np.random.default_rng(seed)
    n_pools = max(2, n_failures // 4)
    n_keys = max(1, n_failures // 10)
    n_services = max(1, n_failures // 12)
    pool_tier = rng.integers(0, len(_TIER_PRICE), size=n_pools)
    classes = [c for c, _ in _MIX]
    weights = np.array([w for _, w in _MIX])
    weights = weights / weights.sum()

    items: list[BatchItem] = []
    heaviest_minutes = 0.0
    heaviest_cost = 0.0
    for f in range(n_failures):
        cls = classes[int(rng.choice(len(classes), p=weights))]
        pool_index = int(rng.integers(n_pools))
        pool = f"pool-{pool_index:04d}"
        price = _TIER_PRICE[pool_tier[pool_index]]
        job_minutes = float(np.clip(rng.lognormal(np.log(12.0), 0.6), 2.0, 90.0))
        # What healing this failure is worth: blocked engineers, a blocked release.
        value = float(rng.lognormal(np.log(80.0), 0.7))
        key = f"dep-{int(rng.integers(n_keys)):04d}" if rng.random() < 0.6 else None
        service = f"svc-{int(rng.integers(n_services)):03d}"
        noise = rng.uniform(0.85, 1.1)

        def cand(
            action: ActionKind, p_success: float, minutes: float, extra_usd: float = 0.0,
            shared: str | None = None, svc: str | None = None, on_pool: str = pool,
            noise: float = noise, value: float = value, price: float = price,
        ) -> Candidate:
            p_success = float(min(0.98, p_success * noise))
            return Candidate(
                action=action,
                benefit=round(p_success * value, 3),
                runner_minutes=round(minutes, 2),
                cost_usd=round(minutes * price + extra_usd, 3),
                pool=on_pool,
                shared_key=shared,
                service=svc,
            )

        escalate = cand(ActionKind.ESCALATE, 0.35, 0.0, _HUMAN_TRIAGE_USD, on_pool="humans")
        cands: list[Candidate]
        if cls == FailureClass.FLAKY_TEST:
            cands = [
                cand(ActionKind.RETRY, 0.70, job_minutes, shared=key),
                cand(ActionKind.QUARANTINE_TEST, 0.85, 2.0, 5.0, shared=key),
                cand(ActionKind.RETRY_ON_FRESH_RUNNER, 0.75, job_minutes + 3.0),
            ]
        elif cls == FailureClass.DEPENDENCY_FETCH:
            cands = [
                cand(ActionKind.RETRY, 0.50, job_minutes, shared=key),
                cand(ActionKind.CLEAR_CACHE, 0.85, job_minutes + 6.0, shared=key),
                escalate,
            ]
        elif cls == FailureClass.OUT_OF_MEMORY:
            big = job_minutes * 1.2
            cands = [
                cand(ActionKind.RAISE_RESOURCE_LIMIT, 0.80, big, big * price * 2.0),
                cand(ActionKind.RETRY_ON_FRESH_RUNNER, 0.40, job_minutes + 3.0),
            ]
        elif cls == FailureClass.INFRASTRUCTURE:
            cands = [
                cand(ActionKind.RETRY_ON_FRESH_RUNNER, 0.80, job_minutes + 3.0),
                cand(ActionKind.RETRY, 0.50, job_minutes),
            ]
        elif cls == FailureClass.CONFIGURATION:
            cands = [
                cand(ActionKind.ROLLBACK, 0.75, 8.0, 10.0, svc=service),
                escalate,
            ]
        elif cls == FailureClass.TIMEOUT:
            cands = [
                cand(ActionKind.RETRY, 0.45, job_minutes * 1.5, shared=key),
                cand(ActionKind.RAISE_RESOURCE_LIMIT, 0.65, job_minutes * 1.8, 2.0),
                escalate,
            ]
        else:  # a genuine break: hand it to a human, never retry it
            cands = [cand(ActionKind.ESCALATE, 0.60, 0.0, _HUMAN_TRIAGE_USD, on_pool="humans")]
        heaviest_minutes += max(c.runner_minutes for c in cands)
        heaviest_cost += max(c.cost_usd for c in cands)
        items.append(BatchItem(failure_id=f"fail-{seed}-{f:05d}", candidates=cands))

    return BatchProblem(
        items=items,
        capacity_minutes=round(0.35 * heaviest_minutes, 1),
        budget_usd=round(0.40 * heaviest_cost, 2),
        pool_congestion=3.0,
        shared_redundancy=0.8,
        shared_synergy=0.25,
    )
