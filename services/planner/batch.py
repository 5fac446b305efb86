"""PlanBatch: choose at most one healing action per failure for a whole batch.

The problem and its reference objective are defined in `batch_model`. This module
turns it into a binary quadratic model (BQM) and solves it three ways:

* `solve_exact`: the same quadratic objective linearised as a MILP (scipy's HiGHS),
  which proves optimality or, when it runs out of time, a bound on the optimum;
* `solve_annealing`: simulated annealing on the BQM (dwave-samplers), each sample
  repaired into a feasible choice and polished by local search (`batch_search`);
* `solve_greedy`: the baseline, best benefit per share of resources first;

and `solve_portfolio` runs exact within the budget, annealing where exact does not
finish, answers with the better, and says how far it is from the optimum or bound.

Time budgets make the answer depend on the machine's speed. Where it must not (tests,
reproducible benchmarks), a work limit replaces the clock: `node_limit` stops the exact
solver after that many branch-and-bound nodes, `max_rounds` stops annealing after that
many rounds of fixed size.

Energy convention of `build_bqm` (lower is better), for x in {0,1}^n:

    E(x) = -objective(x)
           + penalty * (pairs of chosen actions for the same failure
                        + pairs of chosen rollbacks of the same service)
           + capacity_price * (minutes(x) - capacity_minutes)
           + budget_price * (cost(x) - budget_usd)

With zero prices, a feasible x has E(x) = -objective(x) exactly. Capacity and budget
are *not* encoded as quadratic slack penalties: that couples every pair of the
thousands of variables, and the lead measured it leaving annealing about 50% short
of the optimum at 800 variables. They enter as Lagrange prices instead, set from the
LP relaxation's duals and adjusted between annealing rounds by how far the raw
samples over- or under-use the resources; repair enforces them exactly.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dimod
import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from services.planner.batch_instances import generate_instance
from services.planner.batch_model import (
    MAX_BATCH_ITEMS,
    BatchItem,
    BatchProblem,
    BatchSolution,
    Candidate,
    Choice,
    CompiledBatch,
    compile_problem,
    objective,
    validate,
    violations,
)
from services.planner.batch_search import Selection, greedy, improve, repair

__all__ = [
    "MAX_BATCH_ITEMS",
    "BatchItem",
    "BatchProblem",
    "BatchSolution",
    "Candidate",
    "build_bqm",
    "generate_instance",
    "objective",
    "relative_gap",
    "solve_annealing",
    "solve_exact",
    "solve_greedy",
    "solve_portfolio",
    "violations",
]

log = logging.getLogger(__name__)

# Measured on generate_instance(1000, 1), 4 reads x 500 sweeps, after repair and local
# search: scale 1.05 gave 63.5-63.7k, 1.5 gave 62.6-63.4k, 3.0 gave 62.3-63.4k. Just
# above the largest gain keeps violations downhill while keeping the barrier low.
PENALTY_SCALE = 1.05
# HiGHS stops when its incumbent is proved within this fraction of the optimum.
MIP_REL_GAP = 1e-6
# Between annealing rounds the prices move by this factor toward the capacity edge.
PRICE_STEP = 1.35
# Inverse temperatures x the median benefit: fresh anneals start hot, reheats start
# where only a few actions change (measured on generated batches of 200 and 1000).
FRESH_BETA = (0.5, 50.0)
REHEAT_BETA = (5.0, 50.0)


# -- the model -----------------------------------------------------------------------


def group_penalties(model: CompiledBatch, scale: float = PENALTY_SCALE) -> np.ndarray:
    """One penalty per at-most-one group: `scale` x the largest gain one of its actions can bring.

    Just above that gain, every violated pair has a downhill flip, so the annealer's
    local minima keep the rules; any higher only raises the barrier between two
    actions of one failure, which single flips must cross by passing through both.
    """
    if model.n_vars == 0:
        return np.zeros(0)
    positive = model.quad.maximum(0).sum(axis=1).A1 if model.quad.nnz else np.zeros(model.n_vars)
    gain = model.benefit + positive
    return np.array([scale * float(gain[g].max()) + 1e-3 for g in model.groups])


def _bqm_from_model(
    model: CompiledBatch, capacity_price: float, budget_price: float, penalties: np.ndarray
) -> dimod.BinaryQuadraticModel:
    p = model.problem
    linear = -model.benefit + capacity_price * model.minutes + budget_price * model.cost
    upper = sparse.triu(model.quad, k=1).tocoo()
    rows = [upper.row]
    cols = [upper.col]
    biases = [-upper.data]
    for g, penalty in zip(model.groups, penalties, strict=True):
        if len(g) > 1:
            u, w = np.triu_indices(len(g), k=1)
            rows.append(g[u])
            cols.append(g[w])
            biases.append(np.full(len(u), penalty))
    merged = sparse.coo_matrix(
        (np.concatenate(biases), (np.concatenate(rows), np.concatenate(cols))),
        shape=(model.n_vars, model.n_vars),
    ).tocsr().tocoo()
    offset = -capacity_price * p.capacity_minutes - budget_price * p.budget_usd
    return dimod.BinaryQuadraticModel.from_numpy_vectors(
        linear, (merged.row, merged.col, merged.data), offset, dimod.BINARY
    )


def build_bqm(
    problem: BatchProblem,
    capacity_price: float = 0.0,
    budget_price: float = 0.0,
    penalty: float | None = None,
) -> dimod.BinaryQuadraticModel:
    """The batch as a BQM over variables 0..n-1, one per (failure, candidate) in order.

    See the module docstring for the energy convention. `penalty` is one weight for
    every rule; by default each failure and each service gets its own (`group_penalties`).
    """
    validate(problem)
    model = compile_problem(problem)
    penalties = group_penalties(model) if penalty is None else np.full(len(model.groups), penalty)
    return _bqm_from_model(model, capacity_price, budget_price, penalties)


def relative_gap(value: float, bound: float | None) -> float | None:
    """How far value is below the bound on the optimum, as a fraction of the bound."""
    if bound is None:
        return None
    return max(0.0, bound - value) / max(abs(bound), 1e-9)


# -- shared plumbing -----------------------------------------------------------------


@dataclass
class _Outcome:
    x: np.ndarray
    bound: float | None = None
    optimal: bool = False
    note: str | None = None


def _finish(
    model: CompiledBatch,
    x: np.ndarray,
    solver: str,
    greedy_objective: float,
    bound: float | None,
    started: float,
    notes: list[str],
) -> BatchSolution:
    p = model.problem
    choice = model.to_choice(x)
    problems = violations(p, choice)
    value = model.objective_of(x)
    if not any(v is not None for v in choice.values()) and model.n_vars:
        notes.append(
            f"no action is worth scheduling within capacity {p.capacity_minutes:g} runner minutes "
            f"and budget {p.budget_usd:g} USD"
        )
    notes.extend(problems)
    return BatchSolution(
        choice=choice,
        objective=value,
        solver=solver,
        greedy_objective=greedy_objective,
        best_bound=bound,
        gap=relative_gap(value, bound),
        feasible=not problems,
        elapsed_s=time.perf_counter() - started,
        notes=notes,
    )


def _empty(problem: BatchProblem, solver: str, started: float) -> BatchSolution:
    return BatchSolution(
        choice={item.failure_id: None for item in problem.items},
        objective=0.0,
        solver=solver,
        greedy_objective=0.0,
        best_bound=0.0,
        gap=0.0,
        feasible=True,
        elapsed_s=time.perf_counter() - started,
        notes=["empty batch: no candidate actions to choose from"],
    )


# -- exact: the same objective as a MILP ---------------------------------------------


def _exact(model: CompiledBatch, time_limit_s: float | None, node_limit: int | None = None) -> _Outcome:
    """Linearise the quadratic objective exactly and hand it to HiGHS.

    HiGHS stops at `time_limit_s` (None: no clock) or after `node_limit`
    branch-and-bound nodes (None: no limit), whichever comes first.

    Pool congestion costs c per pair among the k chosen actions of a pool, c k(k-1)/2,
    a convex function of the integer k: it is the maximum of its chords
    c (j k - j (j+1)/2), j = 1..K-1, so one variable z_p >= each chord per pool is exact
    and much tighter than one product variable per pair. Shared-cause pairs use the
    standard product linearisation (y >= x_u + x_v - 1 for a loss, y <= x_u, y <= x_v
    for a gain), tight because the objective pushes y the right way.
    """
    p = model.problem
    n = model.n_vars
    pools = model.pools
    n_pools = len(pools)
    n_shared = len(model.shared_q)
    n_cols = n + n_pools + n_shared
    c = np.concatenate([-model.benefit, np.ones(n_pools), -model.shared_q])

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    upper: list[np.ndarray] = []
    r = 0

    def block(rr: np.ndarray, cc: np.ndarray, vv: np.ndarray, ub: np.ndarray) -> None:
        nonlocal r
        rows.append(rr + r)
        cols.append(cc)
        vals.append(vv)
        upper.append(ub)
        r += len(ub)

    # At most one per failure and one rollback per service.
    sizes = np.array([len(g) for g in model.groups], dtype=np.int64)
    if len(sizes):
        block(np.repeat(np.arange(len(sizes)), sizes), np.concatenate(model.groups),
              np.ones(int(sizes.sum())), np.ones(len(sizes)))
    block(np.zeros(n, dtype=np.int64), np.arange(n), model.minutes, np.array([p.capacity_minutes]))
    block(np.zeros(n, dtype=np.int64), np.arange(n), model.cost, np.array([p.budget_usd]))
    cong = p.pool_congestion
    for k, members in enumerate(pools):
        most = len(np.unique(model.item_of[members]))
        js = np.arange(1, most)
        if len(js) == 0:
            continue
        m = len(members)
        rr = np.repeat(np.arange(len(js)), m + 1)
        cc = np.tile(np.concatenate([members, [n + k]]), len(js))
        vv = np.concatenate([np.concatenate([np.full(m, cong * j), [-1.0]]) for j in js])
        block(rr, cc, vv, cong * js * (js + 1) / 2.0)
    loss = np.flatnonzero(model.shared_q < 0)
    gain = np.flatnonzero(model.shared_q > 0)
    y0 = n + n_pools
    if len(loss):
        rr = np.repeat(np.arange(len(loss)), 3)
        cc = np.stack([model.shared_u[loss], model.shared_v[loss], y0 + loss], axis=1).ravel()
        vv = np.tile([1.0, 1.0, -1.0], len(loss))
        block(rr, cc, vv, np.ones(len(loss)))
    for members, pair_ys in _redundancy_cliques(model, loss):
        # Among the t chosen members of a clique every pair is redundant: the sum of
        # their products is t(t-1)/2 >= j t - j(j+1)/2. Without these chords the LP
        # relaxation chooses halves of everything and pays no redundancy at all.
        m, k = len(members), len(pair_ys)
        js = np.arange(1, m)
        rr = np.repeat(np.arange(len(js)), m + k)
        cc = np.tile(np.concatenate([members, y0 + pair_ys]), len(js))
        vv = np.concatenate([np.concatenate([np.full(m, float(j)), -np.ones(k)]) for j in js])
        block(rr, cc, vv, js * (js + 1) / 2.0)
    for side in (model.shared_u, model.shared_v):
        if len(gain):
            rr = np.repeat(np.arange(len(gain)), 2)
            cc = np.stack([y0 + gain, side[gain]], axis=1).ravel()
            vv = np.tile([1.0, -1.0], len(gain))
            block(rr, cc, vv, np.zeros(len(gain)))

    a = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, n_cols)
    )
    ub = np.concatenate(upper)
    integrality = np.concatenate([np.ones(n), np.zeros(n_pools + n_shared)])
    lower_b = np.zeros(n_cols)
    upper_b = np.concatenate([np.ones(n), np.full(n_pools, np.inf), np.ones(n_shared)])
    options: dict[str, Any] = {"mip_rel_gap": MIP_REL_GAP, "disp": False}
    if time_limit_s is not None:
        options["time_limit"] = max(time_limit_s, 0.01)
    if node_limit is not None:
        options["node_limit"] = node_limit
    result = milp(
        c,
        integrality=integrality,
        bounds=Bounds(lower_b, upper_b),
        constraints=LinearConstraint(a, -np.inf, ub),
        options=options,
    )
    bound = getattr(result, "mip_dual_bound", None)
    bound_value = None if bound is None or not np.isfinite(bound) else -float(bound)
    if result.x is None:
        within = f"{time_limit_s:.2f} s" if time_limit_s is not None else f"{node_limit} nodes"
        return _Outcome(np.zeros(n, dtype=np.int8), bound_value, False,
                        f"exact solver found no solution within {within} ({result.message})")
    x = (result.x[:n] > 0.5).astype(np.int8)
    optimal = result.status == 0
    note = None if optimal else f"exact solver stopped: {result.message}"
    if optimal and bound_value is None:
        bound_value = model.objective_of(x)
    return _Outcome(x, bound_value, optimal, note)


def _redundancy_cliques(model: CompiledBatch, loss: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sets of actions of one kind on one shared key whose every cross-failure pair is a loss."""
    by_pair = {(int(model.shared_u[s]), int(model.shared_v[s])): int(s) for s in loss}
    members_of: dict[tuple[str, int], list[int]] = {}
    v = 0
    for item in model.problem.items:
        for cand in item.candidates:
            if cand.shared_key is not None:
                members_of.setdefault((cand.shared_key, int(cand.action)), []).append(v)
            v += 1
    cliques = []
    for members in members_of.values():
        if len(members) < 3:
            continue  # a single pair is already tight
        ys = []
        complete = True
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                u, w = members[a], members[b]
                if model.item_of[u] == model.item_of[w]:
                    continue
                s = by_pair.get((u, w))
                if s is None:
                    complete = False
                    break
                ys.append(s)
            if not complete:
                break
        if complete and ys:
            cliques.append((np.asarray(members, dtype=np.int64), np.asarray(ys, dtype=np.int64)))
    return cliques


def solve_exact(problem: BatchProblem, time_budget_s: float = 10.0, *, node_limit: int | None = None) -> BatchSolution:
    """The MILP alone; reports the best bound proved if it runs out of time.

    With `node_limit` the solver stops after that many branch-and-bound nodes and the
    clock does not limit it, so the answer is the same on every machine.
    """
    started = time.perf_counter()
    validate(problem)
    model = compile_problem(problem)
    if model.n_vars == 0:
        return _empty(problem, "exact", started)
    base = greedy(model).objective()
    remaining = None if node_limit is not None else time_budget_s - (time.perf_counter() - started)
    out = _exact(model, remaining, node_limit)
    notes = [out.note] if out.note else []
    return _finish(model, out.x, "exact", base, out.bound, started, notes)


# -- annealing -----------------------------------------------------------------------


def _lp_prices(model: CompiledBatch) -> tuple[float, float]:
    """Shadow prices of runner minutes and money in the LP relaxation (interactions left out)."""
    p = model.problem
    n = model.n_vars
    sizes = np.array([len(g) for g in model.groups], dtype=np.int64)
    group_rows = sparse.csr_matrix(
        (np.ones(int(sizes.sum())), (np.repeat(np.arange(len(sizes)), sizes), np.concatenate(model.groups))),
        shape=(len(sizes), n),
    )
    a = sparse.vstack([group_rows, sparse.csr_matrix(model.minutes), sparse.csr_matrix(model.cost)]).tocsr()
    ub = np.concatenate([np.ones(len(sizes)), [p.capacity_minutes, p.budget_usd]])
    res = linprog(-model.benefit, A_ub=a, b_ub=ub, bounds=(0, 1), method="highs")
    if res.status != 0:
        return 0.0, 0.0
    marginals = -res.ineqlin.marginals
    return float(max(marginals[-2], 0.0)), float(max(marginals[-1], 0.0))


def _beta_range(model: CompiledBatch, hot: float, cold: float) -> tuple[float, float]:
    """Inverse temperatures relative to a typical action's benefit, so the schedule is
    the same whether benefits are in cents or thousands."""
    positive = model.benefit[model.benefit > 0]
    typical = float(np.median(positive)) if len(positive) else 1.0
    return hot / typical, cold / typical


def _anneal(
    model: CompiledBatch,
    deadline: float,
    seed: int,
    starts: list[tuple[np.ndarray, str]],
    notes: list[str],
    stop: Callable[[], bool] = lambda: False,
    max_rounds: int | None = None,
) -> Selection:
    """Rounds of sampling until the deadline, `stop()` or `max_rounds`; each sample repaired, then local search.

    With an infinite deadline every round has the same size, so the result depends on
    the seed and `max_rounds` only.

    Even rounds anneal from random states at the current prices and move the prices
    toward the capacity edge by how the raw samples used the resources; odd rounds
    reheat the best choice so far (start from it, moderately cold) to search around it.
    """
    from dwave.samplers import SimulatedAnnealingSampler

    p = model.problem
    sampler = SimulatedAnnealingSampler()
    penalties = group_penalties(model)
    lam, mu = _lp_prices(model)
    best: Selection | None = None
    origin = "nothing"
    for x0, name in starts:
        sel = improve(repair(model, x0), deadline)
        if best is None or sel.objective() > best.objective() + 1e-9:
            best, origin = sel, f"local search from the {name} answer"
    scale = 1.0
    num_reads = 4
    num_sweeps = 300
    rounds = 0
    fresh_range = _beta_range(model, *FRESH_BETA)
    reheat_range = _beta_range(model, *REHEAT_BETA)
    def out_of_time() -> bool:
        return time.perf_counter() > deadline or stop()

    while not out_of_time() and (max_rounds is None or rounds < max_rounds):
        reheat = rounds % 2 == 1 and best is not None
        bqm = _bqm_from_model(model, lam * scale, mu * scale, penalties)
        extra: dict[str, Any] = {}
        if reheat:
            assert best is not None
            extra = {"initial_states": np.tile(best.x, (num_reads, 1)), "initial_states_generator": "none"}
        t0 = time.perf_counter()
        samples = sampler.sample(
            bqm,
            num_reads=num_reads,
            num_sweeps=num_sweeps,
            beta_range=reheat_range if reheat else fresh_range,
            seed=(seed * 7919 + rounds) % (2**31),
            interrupt_function=out_of_time,
            **extra,
        )
        spent = time.perf_counter() - t0
        rounds += 1
        order = np.argsort(samples.record.energy)
        columns = np.argsort(np.asarray(samples.variables))
        raw = samples.record.sample[:, columns]
        for row in order:
            if out_of_time():
                break
            sel = improve(repair(model, raw[row]), deadline)
            if best is None or sel.objective() > best.objective() + 1e-9:
                best, origin = sel, f"{'reheated' if reheat else 'annealed'} sample of round {rounds}"
        if not reheat:
            lowest = raw[order[0]].astype(float)
            use = max(
                (model.minutes @ lowest) / max(p.capacity_minutes, 1e-9),
                (model.cost @ lowest) / max(p.budget_usd, 1e-9),
            )
            if use > 1.0:
                scale *= PRICE_STEP
            elif use < 0.95:
                scale /= PRICE_STEP
        if math.isfinite(deadline):
            # Keep each round to about a quarter of what is left, so several rounds fit.
            per_sweep = spent / max(num_sweeps * num_reads, 1)
            left = deadline - time.perf_counter()
            num_sweeps = int(np.clip(left / 4 / max(per_sweep, 1e-9) / num_reads, 50, 1000))
    notes.append(f"annealing: {rounds} rounds, last price scale {scale:.2f}, best: {origin}")
    if best is None:
        best = repair(model, np.zeros(model.n_vars, dtype=np.int8))
    return best


def solve_annealing(
    problem: BatchProblem, time_budget_s: float = 1.0, seed: int = 0, *, max_rounds: int | None = None
) -> BatchSolution:
    """Simulated annealing on the BQM with repair and local search, within the budget.

    With `max_rounds` it runs that many rounds of fixed size and the clock does not
    limit it, so the answer is the same on every machine.
    """
    started = time.perf_counter()
    validate(problem)
    model = compile_problem(problem)
    if model.n_vars == 0:
        return _empty(problem, "annealing", started)
    base = greedy(model).objective()
    notes: list[str] = []
    deadline = math.inf if max_rounds is not None else started + time_budget_s
    sel = _anneal(model, deadline, seed, [], notes, max_rounds=max_rounds)
    return _finish(model, sel.x, "annealing", base, None, started, notes)


def solve_greedy(problem: BatchProblem) -> BatchSolution:
    started = time.perf_counter()
    validate(problem)
    model = compile_problem(problem)
    if model.n_vars == 0:
        return _empty(problem, "greedy", started)
    sel = greedy(model)
    return _finish(model, sel.x, "greedy", sel.objective(), None, started, [])


# -- the portfolio -------------------------------------------------------------------

# Share of the budget the exact solver is given. It runs in a thread beside the
# annealer (HiGHS releases the GIL), so both use the whole budget.
EXACT_SHARE = 0.9


def solve_portfolio(
    problem: BatchProblem, time_budget_s: float = 1.0, seed: int = 0, *, node_limit: int | None = None
) -> BatchSolution:
    """Exact and annealing side by side within the budget; the better answer wins.

    The exact solver's answer counts if it arrives before the deadline; if it proves
    optimality first, annealing stops early. Its best bound gives the reported gap.
    HiGHS cannot be interrupted inside presolve, so on very large batches it may
    finish (by its own time limit) shortly after this function has answered.

    With `node_limit` the exact solver stops after that many nodes instead of at the
    deadline, and the portfolio waits for it: the bound and the exact answer are then
    the same on every machine, and annealing can only improve on them.
    """
    started = time.perf_counter()
    validate(problem)
    model = compile_problem(problem)
    if model.n_vars == 0:
        return _empty(problem, "portfolio", started)
    deadline = started + time_budget_s
    base_sel = greedy(model)
    base = base_sel.objective()
    notes: list[str] = []
    exact_result: list[_Outcome] = []
    exact_done = threading.Event()

    def run_exact() -> None:
        try:
            limit = None if node_limit is not None else (deadline - time.perf_counter()) * EXACT_SHARE
            exact_result.append(_exact(model, limit, node_limit))
        except Exception:  # a solver failure must not lose the annealer's answer
            log.exception("exact solver failed on a batch of %d failures", len(problem.items))
        finally:
            exact_done.set()

    worker = threading.Thread(target=run_exact, name="batch-exact", daemon=True)
    worker.start()
    sel = _anneal(
        model,
        deadline,
        seed,
        [(base_sel.x.copy(), "greedy")],
        notes,
        stop=lambda: exact_done.is_set() and bool(exact_result) and exact_result[0].optimal,
    )
    exact_done.wait(timeout=None if node_limit is not None else max(0.0, deadline - time.perf_counter()))
    if not exact_result:
        notes.append("exact solver had no answer within the budget; answered with annealing")
        return _finish(model, sel.x, "annealing", base, None, started, notes)
    out = exact_result[0]
    if out.note:
        notes.append(out.note)
    if out.optimal:
        notes.append("exact solver proved optimality")
    exact_ok = model.is_feasible(out.x)
    if exact_ok and model.objective_of(out.x) >= sel.objective() - 1e-9:
        return _finish(model, out.x, "exact", base, out.bound, started, notes)
    return _finish(model, sel.x, "annealing", base, out.bound, started, notes)


def choice_objective(problem: BatchProblem, choice: Choice) -> float:
    """Objective of a choice through the reference definition (for callers and tests)."""
    return objective(problem, choice)
