"""When each tenant's risk model is due for retraining.

The predictor retrains every tenant with history once per interval (live config
`retrain_interval_seconds`; 0 turns it off). A tenant counts as attempted whether
the retrain replaced the model, kept the old one, or found too little history:
the next try waits a full interval either way, so a tenant that cannot train yet
does not cost a training run on every tick.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from services.common.errors import InvalidArgument


def validate_interval(interval_s: float, name: str = "retrain_interval_seconds") -> float:
    if (
        isinstance(interval_s, bool)
        or not isinstance(interval_s, int | float)
        or not math.isfinite(interval_s)
        or interval_s < 0
    ):
        raise InvalidArgument(name, f"must be a number of seconds >= 0 (0 = off), got {interval_s!r}")
    return float(interval_s)


def tenants_due(
    tenants: Iterable[str], last_attempt: Mapping[str, float], now: float, interval_s: float
) -> list[str]:
    """Tenants whose last retrain attempt is at least `interval_s` old (never tried: due),
    longest-waiting first; none when the interval is 0 (scheduling off)."""
    interval_s = validate_interval(interval_s)
    if interval_s == 0:
        return []
    due = [t for t in tenants if now - last_attempt.get(t, -math.inf) >= interval_s]
    return sorted(due, key=lambda t: (last_attempt.get(t, -math.inf), t))


def next_check_in(interval_s: float, tick_s: float) -> float:
    """Seconds to sleep before the next check: the interval, but never longer than a tick
    (so a shortened interval or a new tenant is noticed), and a tick when scheduling is off."""
    interval_s = validate_interval(interval_s)
    return tick_s if interval_s == 0 else min(interval_s, tick_s)
