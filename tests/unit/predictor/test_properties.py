"""Properties of forecasts that must hold for any history."""

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from services.predictor.forecast import MAX_HORIZON, forecast_risk
from services.predictor.history import Scope
from tests.unit.predictor.builders import DAY, MONDAY, series

SCOPE = Scope("acme", "acme/shop", "ci", "test")
outcomes = st.text(alphabet=".Ffc", min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(history=outcomes, horizon=st.integers(min_value=1, max_value=MAX_HORIZON))
def test_forecasts_are_probabilities_with_an_interval_around_them(history: str, horizon: int) -> None:
    forecast = forecast_risk(SCOPE, series(history), now=MONDAY + 30 * DAY, horizon=horizon)
    assert 0.0 < forecast.next_run_failure_probability < 1.0
    assert 0.0 <= forecast.interval_low <= forecast.expected_failure_rate <= forecast.interval_high <= 1.0
    assert forecast.runs_considered == sum(1 for c in history if c != "c")
    assert forecast.explanation.startswith(f"risk {forecast.next_run_failure_probability:.2f} from ") or (
        not forecast.has_history and forecast.explanation.startswith("no history"))


@settings(max_examples=60, deadline=None)
@given(history=outcomes)
def test_one_more_failure_never_lowers_the_prior_risk(history: str) -> None:
    now = MONDAY + 30 * DAY
    passed = forecast_risk(SCOPE, series(history + "."), now=now).next_run_failure_probability
    failed = forecast_risk(SCOPE, series(history + "F"), now=now).next_run_failure_probability
    assert failed > passed


def test_domain_modules_import_no_grpc_and_no_generated_code() -> None:
    modules = ["history", "store", "features", "forecast", "anomalies", "recommend", "predictor"]
    code = (
        "import sys\n"
        + "".join(f"import services.predictor.{m}\n" for m in modules)
        + "bad = [m for m in sys.modules if m.startswith(('grpc', 'healing_guard', 'google.protobuf'))]\n"
        + "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
