"""PlanBatch benchmark: portfolio vs annealing alone, exact alone and the greedy baseline.

Run: .venv/bin/python -m bench.batch   (about 2-3 minutes on 2 shared cores)

For each batch size, on a seeded generated batch with pairwise interactions:
greedy (the baseline), annealing alone and the portfolio within the same time
budget, and the exact MILP alone with a much longer limit to give the optimum or
the best bound proved. Gaps are measured against the tightest bound any run proved.
Writes bench/results/batch.json.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from services.planner.batch import (
    generate_instance,
    relative_gap,
    solve_annealing,
    solve_exact,
    solve_greedy,
    solve_portfolio,
)
from services.planner.batch_model import compile_problem

# (failures, time budget of the portfolio and of annealing alone, limit of exact alone)
CASES = [(50, 1.0, 20.0), (200, 1.0, 30.0), (1000, 2.0, 20.0), (5000, 5.0, 30.0)]
SEED = 2024
RESULTS = Path(__file__).parent / "results" / "batch.json"


def _row(solution, bound: float | None) -> dict:  # type: ignore[no-untyped-def]
    return {
        "solver": solution.solver,
        "objective": round(solution.objective, 3),
        "elapsed_s": round(solution.elapsed_s, 3),
        "feasible": solution.feasible,
        "gap_to_bound": None if bound is None else round(relative_gap(solution.objective, bound) or 0.0, 6),
        "notes": solution.notes,
    }


def main() -> None:
    rows = []
    started = time.perf_counter()
    for n, budget, exact_limit in CASES:
        problem = generate_instance(n, SEED + n)
        model = compile_problem(problem)
        greedy = solve_greedy(problem)
        annealing = solve_annealing(problem, time_budget_s=budget, seed=0)
        portfolio = solve_portfolio(problem, time_budget_s=budget, seed=0)
        exact = solve_exact(problem, time_budget_s=exact_limit)
        proved_optimal = any("proved optimality" in n for n in portfolio.notes) or exact.gap is not None and (
            exact.gap <= 1e-6
        )
        bounds = [b for b in (exact.best_bound, portfolio.best_bound) if b is not None]
        bound = min(bounds) if bounds else None
        best_known = max(s.objective for s in (greedy, annealing, portfolio, exact))
        rows.append(
            {
                "failures": n,
                "variables": model.n_vars,
                "interactions": int(model.quad.nnz // 2),
                "time_budget_s": budget,
                "exact_alone_limit_s": exact_limit,
                "best_bound": None if bound is None else round(bound, 3),
                "optimum_proved": proved_optimal,
                "best_known": round(best_known, 3),
                "greedy": _row(greedy, bound),
                "annealing": _row(annealing, bound),
                "exact": _row(exact, bound),
                "portfolio": _row(portfolio, bound),
                "portfolio_over_greedy": round(portfolio.objective / greedy.objective, 4),
                "portfolio_within_budget": portfolio.elapsed_s <= budget * 1.05,
            }
        )
        print(f"done {n} failures ({time.perf_counter() - started:.0f} s so far)", flush=True)

    def pct(x: float | None) -> str:
        return "   n/a" if x is None else f"{100 * x:5.2f}%"

    header = (
        f"{'fail':>5} {'budget':>6} | {'greedy':>10} | {'anneal':>10} {'gap':>6} {'t':>5} | "
        f"{'exact':>10} {'gap':>6} {'t':>5} | {'portfolio':>10} {'gap':>6} {'t':>5} {'won':>9} | "
        f"{'bound':>10} | {'port/greedy':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        g, a, e, p = r["greedy"], r["annealing"], r["exact"], r["portfolio"]
        print(
            f"{r['failures']:>5} {r['time_budget_s']:>5.1f}s | {g['objective']:>10.1f} | "
            f"{a['objective']:>10.1f} {pct(a['gap_to_bound'])} {a['elapsed_s']:>5.2f} | "
            f"{e['objective']:>10.1f} {pct(e['gap_to_bound'])} {e['elapsed_s']:>5.1f} | "
            f"{p['objective']:>10.1f} {pct(p['gap_to_bound'])} {p['elapsed_s']:>5.2f} {p['solver']:>9} | "
            f"{(r['best_bound'] or float('nan')):>10.1f} | {r['portfolio_over_greedy']:>10.4f}x"
        )
    print("gap = (best bound proved - objective) / bound; exact alone ran with its own longer limit.")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": ".venv/bin/python -m bench.batch",
                "seed": SEED,
                "machine": {"python": platform.python_version(), "processor": platform.machine()},
                "total_s": round(time.perf_counter() - started, 1),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
