"""The batch-healing problem: what may be chosen, what it is worth, what it uses.

For each failure in a batch choose one candidate action or none. Every choice is
worth its expected benefit (success probability x value of healing) and uses runner
minutes and money; the batch must fit the runner capacity and the money budget.
Choices interact in pairs, which is what makes this a binary quadratic problem:

* pool congestion: two chosen actions of *different* failures that both use runner
  minutes on the same runner pool slow each other; each such pair loses
  `pool_congestion` (value units).
* shared cause: two failures with the same `shared_key` (a flaky dependency, a
  poisoned cache) are healed together. If both choose the *same* kind of action on
  that key, the second is largely redundant: the pair loses
  `shared_redundancy x min(benefit_u, benefit_v)`. If they choose *different* kinds
  (a CLEAR_CACHE on one makes the RETRY of the other succeed), the pair gains
  `shared_synergy x min(benefit_u, benefit_v)`.
* conflicting rollbacks: at most one ROLLBACK per service (a hard constraint).

Constraints: at most one action per failure, at most one rollback per service,
total runner minutes <= capacity_minutes, total cost <= budget_usd.

`objective` and `violations` here are the literal reference: plain loops over the
definition, used by tests to cross-check the fast array form (`CompiledBatch`) that
the solvers, the BQM and the MILP are built from.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from services.common.errors import InvalidArgument
from services.common.vocabulary import ActionKind

MAX_BATCH_ITEMS = 10_000
MAX_CANDIDATES_PER_ITEM = 16

Choice = dict[str, int | None]


@dataclass(frozen=True)
class Candidate:
    """One action that could heal one failure."""

    action: ActionKind
    benefit: float
    runner_minutes: float
    cost_usd: float
    pool: str
    shared_key: str | None = None
    service: str | None = None


@dataclass(frozen=True)
class BatchItem:
    failure_id: str
    candidates: list[Candidate]


@dataclass(frozen=True)
class BatchProblem:
    items: list[BatchItem]
    capacity_minutes: float
    budget_usd: float
    pool_congestion: float = 2.0
    shared_redundancy: float = 0.8
    shared_synergy: float = 0.2


@dataclass
class BatchSolution:
    """The answer to a batch: which candidate (index into the item's list) per failure."""

    choice: Choice
    objective: float
    solver: str
    greedy_objective: float
    best_bound: float | None
    gap: float | None
    feasible: bool
    elapsed_s: float
    notes: list[str] = field(default_factory=list)


def _require_finite(value: float, field_name: str, minimum: float | None = None) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(field_name, f"must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidArgument(field_name, f"must be >= {minimum:g}, got {value:g}")


def validate(problem: BatchProblem) -> None:
    """Check the preconditions every solver relies on; raise InvalidArgument naming the field."""
    n_items = len(problem.items)
    if n_items > MAX_BATCH_ITEMS:
        raise InvalidArgument(
            "items",
            f"batch has {n_items} items; the limit is {MAX_BATCH_ITEMS}; split the batch",
        )
    _require_finite(problem.capacity_minutes, "capacity_minutes", 0.0)
    _require_finite(problem.budget_usd, "budget_usd", 0.0)
    _require_finite(problem.pool_congestion, "pool_congestion", 0.0)
    _require_finite(problem.shared_redundancy, "shared_redundancy", 0.0)
    if problem.shared_redundancy > 1.0:
        raise InvalidArgument(
            "shared_redundancy", f"must be in [0, 1], got {problem.shared_redundancy:g}"
        )
    _require_finite(problem.shared_synergy, "shared_synergy", 0.0)
    seen: set[str] = set()
    for i, item in enumerate(problem.items):
        if not item.failure_id:
            raise InvalidArgument(f"items[{i}].failure_id", "must not be empty")
        if item.failure_id in seen:
            raise InvalidArgument(
                f"items[{i}].failure_id", f"duplicate failure_id {item.failure_id!r}"
            )
        seen.add(item.failure_id)
        if len(item.candidates) > MAX_CANDIDATES_PER_ITEM:
            raise InvalidArgument(
                f"items[{i}].candidates",
                f"has {len(item.candidates)} candidates; the limit is {MAX_CANDIDATES_PER_ITEM}",
            )
        for k, cand in enumerate(item.candidates):
            where = f"items[{i}].candidates[{k}]"
            _require_finite(cand.benefit, f"{where}.benefit", 0.0)
            _require_finite(cand.runner_minutes, f"{where}.runner_minutes", 0.0)
            _require_finite(cand.cost_usd, f"{where}.cost_usd", 0.0)
            if cand.action == ActionKind.ROLLBACK and not cand.service:
                raise InvalidArgument(f"{where}.service", "a ROLLBACK must name its service")


def _pair_value(problem: BatchProblem, a: Candidate, b: Candidate) -> float:
    """Objective contribution of choosing a and b together (for different failures)."""
    value = 0.0
    if a.pool == b.pool and a.runner_minutes > 0 and b.runner_minutes > 0:
        value -= problem.pool_congestion
    if a.shared_key is not None and a.shared_key == b.shared_key:
        overlap = min(a.benefit, b.benefit)
        if a.action == b.action:
            value -= problem.shared_redundancy * overlap
        else:
            value += problem.shared_synergy * overlap
    return value


def chosen_candidates(problem: BatchProblem, choice: Mapping[str, int | None]) -> list[tuple[int, Candidate]]:
    chosen = []
    for i, item in enumerate(problem.items):
        k = choice.get(item.failure_id)
        if k is not None:
            chosen.append((i, item.candidates[k]))
    return chosen


def objective(problem: BatchProblem, choice: Mapping[str, int | None]) -> float:
    """Expected benefit of a choice, pairwise interactions included (reference form)."""
    chosen = chosen_candidates(problem, choice)
    total = sum(c.benefit for _, c in chosen)
    for a in range(len(chosen)):
        for b in range(a + 1, len(chosen)):
            total += _pair_value(problem, chosen[a][1], chosen[b][1])
    return total


def violations(problem: BatchProblem, choice: Mapping[str, int | None]) -> list[str]:
    """What is wrong with a choice; empty when it is feasible."""
    problems: list[str] = []
    for item in problem.items:
        k = choice.get(item.failure_id)
        if k is not None and not 0 <= k < len(item.candidates):
            problems.append(f"{item.failure_id}: candidate {k} does not exist")
    if problems:
        return problems
    chosen = chosen_candidates(problem, choice)
    minutes = sum(c.runner_minutes for _, c in chosen)
    cost = sum(c.cost_usd for _, c in chosen)
    # A small tolerance: sums of floats in another order must not flip feasibility.
    if minutes > problem.capacity_minutes * (1 + 1e-9) + 1e-9:
        problems.append(f"runner minutes {minutes:.2f} exceed capacity {problem.capacity_minutes:.2f}")
    if cost > problem.budget_usd * (1 + 1e-9) + 1e-9:
        problems.append(f"cost {cost:.2f} USD exceeds budget {problem.budget_usd:.2f}")
    rollbacks: dict[str, int] = defaultdict(int)
    for _, c in chosen:
        if c.action == ActionKind.ROLLBACK and c.service:
            rollbacks[c.service] += 1
    problems += [f"{n} rollbacks of service {s!r}" for s, n in rollbacks.items() if n > 1]
    return problems


@dataclass(frozen=True)
class CompiledBatch:
    """The problem as arrays over binary variables, one per (failure, candidate).

    The objective is `benefit @ x + 0.5 * x @ quad @ x`; `quad` is symmetric with
    entries only between variables of different failures. `pools` lists the
    congestion cliques and `shared_*` the shared-cause pairs separately, because the
    MILP linearises them differently. `groups` are the at-most-one sets: every
    failure's candidates, then every service's rollbacks.
    """

    problem: BatchProblem
    item_of: np.ndarray
    candidate_of: np.ndarray
    benefit: np.ndarray
    minutes: np.ndarray
    cost: np.ndarray
    quad: sparse.csr_matrix
    pools: list[np.ndarray]
    shared_u: np.ndarray
    shared_v: np.ndarray
    shared_q: np.ndarray
    groups: list[np.ndarray]
    groups_of_var: list[tuple[int, ...]]

    @property
    def n_vars(self) -> int:
        return len(self.benefit)

    def to_choice(self, x: np.ndarray) -> Choice:
        choice: Choice = {item.failure_id: None for item in self.problem.items}
        for v in np.flatnonzero(x):
            choice[self.problem.items[self.item_of[v]].failure_id] = int(self.candidate_of[v])
        return choice

    def to_vector(self, choice: Mapping[str, int | None]) -> np.ndarray:
        x = np.zeros(self.n_vars, dtype=np.int8)
        first = np.searchsorted(self.item_of, np.arange(len(self.problem.items)))
        for i, item in enumerate(self.problem.items):
            k = choice.get(item.failure_id)
            if k is not None:
                x[first[i] + k] = 1
        return x

    def objective_of(self, x: np.ndarray) -> float:
        xf = x.astype(float)
        return float(self.benefit @ xf + 0.5 * xf @ (self.quad @ xf))

    def is_feasible(self, x: np.ndarray) -> bool:
        xf = x.astype(float)
        if self.minutes @ xf > self.problem.capacity_minutes * (1 + 1e-9) + 1e-9:
            return False
        if self.cost @ xf > self.problem.budget_usd * (1 + 1e-9) + 1e-9:
            return False
        return all(x[g].sum() <= 1 for g in self.groups)


def compile_problem(problem: BatchProblem) -> CompiledBatch:
    """Flatten a validated problem into arrays and its interaction matrix."""
    item_of, candidate_of = [], []
    benefit, minutes, cost = [], [], []
    cands: list[Candidate] = []
    for i, item in enumerate(problem.items):
        for k, cand in enumerate(item.candidates):
            item_of.append(i)
            candidate_of.append(k)
            benefit.append(cand.benefit)
            minutes.append(cand.runner_minutes)
            cost.append(cand.cost_usd)
            cands.append(cand)
    n_vars = len(cands)
    item_arr = np.asarray(item_of, dtype=np.int64)

    by_pool: dict[str, list[int]] = defaultdict(list)
    by_key: dict[str, list[int]] = defaultdict(list)
    by_service: dict[str, list[int]] = defaultdict(list)
    for v, cand in enumerate(cands):
        if cand.runner_minutes > 0:
            by_pool[cand.pool].append(v)
        if cand.shared_key is not None:
            by_key[cand.shared_key].append(v)
        if cand.action == ActionKind.ROLLBACK and cand.service:
            by_service[cand.service].append(v)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    pools: list[np.ndarray] = []
    # u, w and q are index arrays / a value array below, single indices / one weight in the shared-key loop
    u: np.ndarray | int
    w: np.ndarray | int
    q: float | np.ndarray
    if problem.pool_congestion > 0:
        for members in by_pool.values():
            m = np.asarray(members, dtype=np.int64)
            if len(np.unique(item_arr[m])) < 2:
                continue
            pools.append(m)
            u, w = np.triu_indices(len(m), k=1)
            keep = item_arr[m[u]] != item_arr[m[w]]
            rows.append(m[u][keep])
            cols.append(m[w][keep])
            vals.append(np.full(int(keep.sum()), -problem.pool_congestion))

    su: list[int] = []
    sv: list[int] = []
    sq: list[float] = []
    for members in by_key.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                u, w = members[a], members[b]
                if item_of[u] == item_of[w]:
                    continue
                overlap = min(benefit[u], benefit[w])
                if cands[u].action == cands[w].action:
                    q = -problem.shared_redundancy * overlap
                else:
                    q = problem.shared_synergy * overlap
                if q != 0.0:
                    su.append(u)
                    sv.append(w)
                    sq.append(q)
    shared_u = np.asarray(su, dtype=np.int64)
    shared_v = np.asarray(sv, dtype=np.int64)
    shared_q = np.asarray(sq, dtype=float)
    rows.append(shared_u)
    cols.append(shared_v)
    vals.append(shared_q)

    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    q = np.concatenate(vals) if vals else np.zeros(0)
    upper = sparse.coo_matrix((q, (r, c)), shape=(n_vars, n_vars))
    quad = (upper + upper.T).tocsr()
    quad.sum_duplicates()

    groups: list[np.ndarray] = []
    starts = np.searchsorted(item_arr, np.arange(len(problem.items) + 1))
    for i in range(len(problem.items)):
        if starts[i + 1] > starts[i]:
            groups.append(np.arange(starts[i], starts[i + 1]))
    for members in by_service.values():
        if len(members) > 1:
            groups.append(np.asarray(members, dtype=np.int64))
    groups_of: list[list[int]] = [[] for _ in range(n_vars)]
    for g, members_arr in enumerate(groups):
        for v in members_arr:
            groups_of[v].append(g)

    return CompiledBatch(
        problem=problem,
        item_of=item_arr,
        candidate_of=np.asarray(candidate_of, dtype=np.int64),
        benefit=np.asarray(benefit, dtype=float),
        minutes=np.asarray(minutes, dtype=float),
        cost=np.asarray(cost, dtype=float),
        quad=quad,
        pools=pools,
        shared_u=shared_u,
        shared_v=shared_v,
        shared_q=shared_q,
        groups=groups,
        groups_of_var=[tuple(g) for g in groups_of],
    )
