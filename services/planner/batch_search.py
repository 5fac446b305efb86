"""Constraint-aware moves over a batch selection: greedy, repair, local search.

Every solver ends here. A `Selection` keeps the chosen variables together with the
interaction field `h = quad @ x`, so the gain of adding, dropping or swapping one
action is read in O(1) and updated in O(degree) — which is what lets a sample from
the annealer (that may break the one-per-failure rule or the capacity) be repaired
and polished within the time budget at 5000 failures.
"""

from __future__ import annotations

import time

import numpy as np

from services.planner.batch_model import CompiledBatch

_EPS = 1e-9
_SWAP_CANDIDATES = 64


class Selection:
    def __init__(self, model: CompiledBatch) -> None:
        self.model = model
        n = model.n_vars
        self.x = np.zeros(n, dtype=np.int8)
        self.h = np.zeros(n)
        self.minutes = 0.0
        self.cost = 0.0
        self.owner = np.full(len(model.groups), -1, dtype=np.int64)
        # Every variable is in its failure's group and at most one service group.
        self.item_group = np.full(n, -1, dtype=np.int64)
        self.service_group = np.full(n, -1, dtype=np.int64)
        # Failure groups come first in `groups`, so a variable's first group is its failure's.
        for v, gs in enumerate(model.groups_of_var):
            self.item_group[v] = gs[0]
            if len(gs) > 1:
                self.service_group[v] = gs[1]
        cap = max(model.problem.capacity_minutes, _EPS)
        bud = max(model.problem.budget_usd, _EPS)
        # Share of the scarce resources an action uses: the denominator of its ratio.
        self.weight = model.minutes / cap + model.cost / bud + _EPS

    # -- state -------------------------------------------------------------------------
    def _flip(self, v: int, delta: int) -> None:
        m = self.model
        self.x[v] += delta
        lo, hi = m.quad.indptr[v], m.quad.indptr[v + 1]
        self.h[m.quad.indices[lo:hi]] += delta * m.quad.data[lo:hi]
        self.minutes += delta * m.minutes[v]
        self.cost += delta * m.cost[v]
        owner = v if delta > 0 else -1
        for g in m.groups_of_var[v]:
            self.owner[g] = owner

    def add(self, v: int) -> None:
        self._flip(v, +1)

    def remove(self, v: int) -> None:
        self._flip(v, -1)

    def objective(self) -> float:
        xf = self.x.astype(float)
        return float(self.model.benefit @ xf + 0.5 * (xf @ self.h))

    def over_budget(self) -> bool:
        p = self.model.problem
        return self.minutes > p.capacity_minutes + _EPS or self.cost > p.budget_usd + _EPS

    def fits(self, extra_minutes: np.ndarray | float, extra_cost: np.ndarray | float) -> np.ndarray | bool:
        p = self.model.problem
        return (self.minutes + extra_minutes <= p.capacity_minutes + _EPS) & (
            self.cost + extra_cost <= p.budget_usd + _EPS
        )

    def groups_free(self) -> np.ndarray:
        free = self.owner[self.item_group] < 0
        svc = self.service_group >= 0
        free[svc] &= self.owner[self.service_group[svc]] < 0
        return free

    def gains(self) -> np.ndarray:
        """Change of objective from adding each variable (ignoring constraints)."""
        return self.model.benefit + self.h

    def q(self, v: int, u: int) -> float:
        m = self.model
        lo, hi = m.quad.indptr[v], m.quad.indptr[v + 1]
        hit = np.flatnonzero(m.quad.indices[lo:hi] == u)
        return float(m.quad.data[lo + hit[0]]) if len(hit) else 0.0


def greedy(model: CompiledBatch) -> Selection:
    """The baseline: best benefit per share of resources first, if it still pays and fits."""
    sel = Selection(model)
    order = np.argsort(-model.benefit / sel.weight, kind="stable")
    p = model.problem
    for v in order:
        v = int(v)
        if model.benefit[v] + sel.h[v] <= 0:
            continue
        if any(sel.owner[g] >= 0 for g in model.groups_of_var[v]):
            continue
        if sel.minutes + model.minutes[v] > p.capacity_minutes + _EPS:
            continue
        if sel.cost + model.cost[v] > p.budget_usd + _EPS:
            continue
        sel.add(v)
    return sel


def repair(model: CompiledBatch, x: np.ndarray) -> Selection:
    """Turn any assignment into a feasible one, keeping its most valuable actions."""
    sel = Selection(model)
    chosen = np.flatnonzero(x)
    # The field of the raw assignment ranks its actions by what they are worth in it.
    xf = x.astype(float)
    worth = model.benefit[chosen] + (model.quad @ xf)[chosen]
    for v in chosen[np.argsort(-worth, kind="stable")]:
        v = int(v)
        if all(sel.owner[g] < 0 for g in model.groups_of_var[v]):
            sel.add(v)
    # Drop the lowest-ratio actions until capacity and budget hold.
    while sel.over_budget():
        on = np.flatnonzero(sel.x)
        ratio = (model.benefit[on] + sel.h[on]) / sel.weight[on]
        sel.remove(int(on[np.argmin(ratio)]))
    # Anything that now costs more than it brings goes too.
    drop_negative(sel)
    return sel


def drop_negative(sel: Selection) -> bool:
    changed = False
    while True:
        on = np.flatnonzero(sel.x)
        if len(on) == 0:
            return changed
        contrib = sel.model.benefit[on] + sel.h[on]
        worst = int(np.argmin(contrib))
        if contrib[worst] >= -_EPS:
            return changed
        sel.remove(int(on[worst]))
        changed = True


def _best_add(sel: Selection) -> int | None:
    m = sel.model
    gain = sel.gains()
    ok = (sel.x == 0) & (gain > _EPS) & sel.groups_free() & sel.fits(m.minutes, m.cost)
    if not ok.any():
        return None
    # Best ratio first, as in knapsack: the scarce resources go to the densest value.
    score = np.where(ok, gain / sel.weight, -np.inf)
    return int(np.argmax(score))


def _best_swap(sel: Selection) -> tuple[int, int] | None:
    """Drop one chosen action u and add one unchosen v, the best strict improvement."""
    m = sel.model
    gain = sel.gains()
    pool = np.flatnonzero((sel.x == 0) & (gain > _EPS))
    if len(pool) == 0:
        return None
    top = pool[np.argsort(-gain[pool])[:_SWAP_CANDIDATES]]
    on = np.flatnonzero(sel.x)
    if len(on) == 0:
        return None
    contrib_on = m.benefit[on] + sel.h[on]
    best: tuple[float, int, int] | None = None
    row_q = np.zeros(m.n_vars)
    for v in top:
        v = int(v)
        blockers = {int(sel.owner[g]) for g in m.groups_of_var[v] if sel.owner[g] >= 0}
        if len(blockers) > 1:
            continue
        lo, hi = m.quad.indptr[v], m.quad.indptr[v + 1]
        idx = m.quad.indices[lo:hi]
        row_q[idx] = m.quad.data[lo:hi]
        if blockers:
            u = blockers.pop()
            ui = int(np.searchsorted(on, u))
            cand_u = on[ui : ui + 1]
            delta = gain[v] - row_q[cand_u] - contrib_on[ui : ui + 1]
        else:
            cand_u = on
            delta = gain[v] - row_q[on] - contrib_on
        row_q[idx] = 0.0
        feasible = sel.fits(m.minutes[v] - m.minutes[cand_u], m.cost[v] - m.cost[cand_u])
        delta = np.where(feasible, delta, -np.inf)
        j = int(np.argmax(delta))
        if delta[j] > 1e-7 and (best is None or delta[j] > best[0]):
            best = (float(delta[j]), int(cand_u[j]), v)
    return None if best is None else (best[1], best[2])


def improve(sel: Selection, deadline: float, max_moves: int = 100_000) -> Selection:
    """Local search: drop harmful actions, add what fits and pays, 1-swap; until stuck."""
    for _ in range(max_moves):
        if time.perf_counter() > deadline:
            break
        if drop_negative(sel):
            continue
        v = _best_add(sel)
        if v is not None:
            sel.add(v)
            continue
        swap = _best_swap(sel)
        if swap is None:
            break
        u, v = swap
        sel.remove(u)
        sel.add(v)
    return sel
