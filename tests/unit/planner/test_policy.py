import dataclasses

import pytest

from services.common.errors import InvalidArgument
from services.common.vocabulary import GENUINE_BREAKS, ActionKind, FailureClass
from services.planner.policy import (
    POLICY_CLASSES,
    Policy,
    Prior,
    default_policies,
    merge_policies,
    policy_from_dict,
    policy_to_dict,
    validate_policy,
)

A = ActionKind
F = FailureClass


def test_every_class_has_a_valid_default():
    defaults = default_policies()
    assert set(defaults) == set(POLICY_CLASSES)
    for policy in defaults.values():
        validate_policy(policy)


def test_defaults_follow_the_documented_playbook():
    d = default_policies()
    assert d[F.FLAKY_TEST].allowed_actions == (A.RETRY, A.QUARANTINE_TEST)
    assert d[F.OUT_OF_MEMORY].allowed_actions == (A.RAISE_RESOURCE_LIMIT, A.RETRY_ON_FRESH_RUNNER)
    assert d[F.DISK_FULL].allowed_actions == (A.CLEAR_CACHE, A.RETRY_ON_FRESH_RUNNER)
    for cls in (*GENUINE_BREAKS, F.UNKNOWN, F.CONFIGURATION, F.PERMISSION):
        assert d[cls].allowed_actions == ()
    # The first choice starts ahead of the second.
    oom = d[F.OUT_OF_MEMORY]
    assert oom.prior_for(A.RAISE_RESOURCE_LIMIT).mean > oom.prior_for(A.RETRY_ON_FRESH_RUNNER).mean


def test_retry_for_a_genuine_break_is_rejected_naming_the_field():
    policy = Policy(F.COMPILE_ERROR, allowed_actions=(A.ROLLBACK, A.RETRY))
    with pytest.raises(InvalidArgument) as err:
        validate_policy(policy)
    assert err.value.field == "policy.allowed_actions[1]"
    assert str(err.value) == (
        "policy.allowed_actions[1]: RETRY is never allowed for COMPILE_ERROR (a genuine break)"
    )


def test_negative_max_attempts_is_rejected():
    with pytest.raises(InvalidArgument, match=r"policy.max_attempts: must be >= 0, got -1"):
        validate_policy(Policy(F.NETWORK, max_attempts=-1))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"budget_usd": -1.0}, "policy.budget_usd"),
        ({"min_confidence": 1.5}, "policy.min_confidence"),
        ({"max_attempts": 99}, "policy.max_attempts"),
        ({"priors": {A.RETRY: Prior(0.0, 1.0)}}, "policy.priors.RETRY.alpha"),
        ({"allowed_actions": (A.RETRY, A.RETRY)}, "policy.allowed_actions[1]"),
        ({"exploration": "yes"}, "policy.exploration"),
    ],
)
def test_bad_fields_are_named(change, field):
    with pytest.raises(InvalidArgument) as err:
        validate_policy(dataclasses.replace(Policy(F.NETWORK), **change))
    assert err.value.field == field


def test_unknown_class_and_action_are_rejected():
    with pytest.raises(InvalidArgument, match="unknown failure class 'SOLAR_FLARE'"):
        policy_from_dict({"failure_class": "SOLAR_FLARE"})
    with pytest.raises(InvalidArgument, match=r"policy.allowed_actions\[0\]: unknown action 'REBOOT'"):
        policy_from_dict({"failure_class": "NETWORK", "allowed_actions": ["REBOOT"]})
    with pytest.raises(InvalidArgument, match="live_config.WEATHER"):
        merge_policies(default_policies(), ("live_config", {"WEATHER": {"max_attempts": 1}}))


def test_layers_apply_in_order_defaults_then_stored_then_live():
    stored = {"OUT_OF_MEMORY": {"max_attempts": 3, "budget_usd": 9.0}}
    live = {"OUT_OF_MEMORY": {"max_attempts": 1}}
    merged = merge_policies(default_policies(), ("stored", stored), ("live", live))
    oom = merged[F.OUT_OF_MEMORY]
    assert oom.max_attempts == 1  # live wins
    assert oom.budget_usd == 9.0  # stored kept where live is silent
    assert oom.allowed_actions == default_policies()[F.OUT_OF_MEMORY].allowed_actions
    assert merged[F.NETWORK] == default_policies()[F.NETWORK]


def test_live_override_cannot_sneak_a_retry_into_a_genuine_break():
    with pytest.raises(InvalidArgument, match="live.LINT.allowed_actions.0.: CLEAR_CACHE is never allowed"):
        merge_policies(default_policies(), ("live", {"LINT": {"allowed_actions": ["CLEAR_CACHE"]}}))


def test_policy_round_trips_through_a_dict():
    policy = dataclasses.replace(default_policies()[F.FLAKY_TEST], max_attempts=3, exploration=False)
    assert policy_from_dict(policy_to_dict(policy)) == policy
