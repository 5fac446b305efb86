"""The fleet simulation is evidence only if it is fair: check it on a small world."""

from bench import fleet_sim
from services.common.vocabulary import GENUINE_BREAKS


def test_planner_sees_only_the_observed_class_never_the_truth(monkeypatch):
    seen = []
    real = fleet_sim.plan_healing

    def spy(request, *args, **kwargs):
        seen.append(request)
        return real(request, *args, **kwargs)

    monkeypatch.setattr(fleet_sim, "plan_healing", spy)
    world = fleet_sim.build_world(seed=3, days=2, failures_per_day=60, accuracy=0.8)
    guard = fleet_sim.HealingGuard(seed=3, learn=True, policies=fleet_sim.default_policies())
    tally = fleet_sim.Tally("hg")
    for failure in world:
        guard(failure, tally, fleet_sim.CostModel())
    by_id = {f"failure-{f.index}": f for f in world}
    assert any(by_id[r.failure_id].truth is not r.failure_class for r in seen)  # noise reached the planner
    for request in seen:
        failure = by_id[request.failure_id]
        assert request.failure_class is failure.observed
        assert failure.subtype not in request.cluster_id
        assert request.flaky_test is None or request.failure_class.name == "FLAKY_TEST"


def test_small_world_heals_and_spares_genuine_bugs():
    result = fleet_sim.simulate(seed=5, days=3, failures_per_day=80, accuracy=0.95)
    rows = {r["strategy"]: r for r in result["rows"]}
    guard, everything = rows["healing guard"], rows["retry everything x3"]
    assert guard["healed_share"] > rows["gitlab retry: 2"]["healed_share"]
    assert guard["reruns_wasted_on_genuine_bugs"] < 0.2 * everything["reruns_wasted_on_genuine_bugs"]
    assert rows["no healing"]["healed_without_human"] == 0
    genuine = sum(1 for f in result["failures"] if f.truth in GENUINE_BREAKS)
    assert guard["genuine_bugs"] == genuine
