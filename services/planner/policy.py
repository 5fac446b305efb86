"""Healing policies: per tenant and failure class, what the planner may do.

Layering (later wins, field by field):

    default_policies()  <  the tenant's stored policy  <  live overrides from service config

A stored policy and a live override are both plain dicts keyed by failure class name,
e.g. ``{"OUT_OF_MEMORY": {"max_attempts": 1}}``; `merge_policies` applies them and
`validate_policy` checks the result, raising InvalidArgument that names the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from services.common.vocabulary import GENUINE_BREAKS, ActionKind, FailureClass
from services.planner.costs import NEVER_FOR_GENUINE_BREAKS

MAX_ATTEMPTS_CEILING = 10
MAX_PRIOR_STRENGTH = 1000.0

# Classes a policy can be written for (UNSPECIFIED is the proto's zero value, not a class).
POLICY_CLASSES: tuple[FailureClass, ...] = tuple(
    c for c in FailureClass if c is not FailureClass.FAILURE_CLASS_UNSPECIFIED
)
PLANNABLE_ACTIONS: tuple[ActionKind, ...] = tuple(
    a for a in ActionKind if a is not ActionKind.ACTION_KIND_UNSPECIFIED
)


@dataclass(frozen=True)
class Prior:
    """Beta(alpha, beta) belief in an action's success before any outcome is seen."""

    alpha: float = 1.0
    beta: float = 1.0

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True)
class Policy:
    failure_class: FailureClass
    # Actions the planner may choose from, in the order the tenant prefers them.
    allowed_actions: tuple[ActionKind, ...] = ()
    # Healing attempts (re-runs) per job run; 0 means never re-run, always escalate.
    max_attempts: int = 2
    budget_minutes: float = 120.0
    budget_usd: float = 5.0
    requires_human_approval: bool = False
    exploration: bool = True
    # Below this diagnosis confidence the planner escalates instead of acting.
    min_confidence: float = 0.6
    priors: Mapping[ActionKind, Prior] = field(default_factory=dict)

    def prior_for(self, action: ActionKind) -> Prior:
        return self.priors.get(action, Prior())

    def describe(self) -> str:
        """The rule as a sentence, quoted in plan rationales."""
        order = ", ".join(a.name for a in self.allowed_actions) or "none (escalate)"
        rule = f"{self.failure_class.name}: allowed actions in order [{order}], " \
               f"at most {self.max_attempts} healing attempt(s) per run, " \
               f"budget {self.budget_minutes:g} runner-minutes / ${self.budget_usd:g}"
        if self.requires_human_approval:
            rule += ", human approval required"
        return rule


def _ordered_priors(actions: tuple[ActionKind, ...]) -> dict[ActionKind, Prior]:
    """Weak priors that encode the policy's order: the first choice starts a bit ahead.

    Worth about four outcomes, so a handful of real outcomes overturns them.
    """
    priors: dict[ActionKind, Prior] = {}
    for rank, action in enumerate(actions):
        mean = max(0.7 - 0.1 * rank, 0.3)
        priors[action] = Prior(alpha=4.0 * mean, beta=4.0 * (1.0 - mean))
    return priors


def _policy(cls: FailureClass, actions: tuple[ActionKind, ...], **kwargs: Any) -> Policy:
    return Policy(failure_class=cls, allowed_actions=actions, priors=_ordered_priors(actions), **kwargs)


def default_policies() -> dict[FailureClass, Policy]:
    """The built-in policy for every failure class."""
    A = ActionKind
    F = FailureClass
    escalate_only = dict(max_attempts=0)
    return {
        F.FLAKY_TEST: _policy(F.FLAKY_TEST, (A.RETRY, A.QUARANTINE_TEST)),
        F.DEPENDENCY_FETCH: _policy(F.DEPENDENCY_FETCH, (A.RETRY, A.CLEAR_CACHE)),
        F.NETWORK: _policy(F.NETWORK, (A.RETRY, A.CLEAR_CACHE)),
        F.OUT_OF_MEMORY: _policy(F.OUT_OF_MEMORY, (A.RAISE_RESOURCE_LIMIT, A.RETRY_ON_FRESH_RUNNER)),
        F.DISK_FULL: _policy(F.DISK_FULL, (A.CLEAR_CACHE, A.RETRY_ON_FRESH_RUNNER)),
        F.INFRASTRUCTURE: _policy(F.INFRASTRUCTURE, (A.RETRY_ON_FRESH_RUNNER,)),
        F.TIMEOUT: _policy(F.TIMEOUT, (A.RETRY, A.RAISE_RESOURCE_LIMIT)),
        F.CONFIGURATION: _policy(F.CONFIGURATION, (), **escalate_only),
        F.PERMISSION: _policy(F.PERMISSION, (), **escalate_only),
        # Genuine breaks: escalate. A tenant may add ROLLBACK (used only when a last
        # good revision is known); nothing that re-runs the code is ever allowed.
        F.COMPILE_ERROR: _policy(F.COMPILE_ERROR, (), **escalate_only),
        F.TEST_FAILURE: _policy(F.TEST_FAILURE, (), **escalate_only),
        F.LINT: _policy(F.LINT, (), **escalate_only),
        F.UNKNOWN: _policy(F.UNKNOWN, (), **escalate_only),
    }


# --- validation ------------------------------------------------------------------------


def parse_failure_class(value: Any, field_name: str) -> FailureClass:
    """A FailureClass from its name or number; InvalidArgument naming the field otherwise."""
    allowed = ", ".join(c.name for c in POLICY_CLASSES)
    if isinstance(value, FailureClass):
        cls = value
    elif isinstance(value, str) and value in FailureClass.__members__:
        cls = FailureClass[value]
    elif isinstance(value, int) and not isinstance(value, bool) and value in FailureClass._value2member_map_:
        cls = FailureClass(value)
    else:
        raise InvalidArgument(field_name, f"unknown failure class {value!r}; expected one of {allowed}")
    if cls is FailureClass.FAILURE_CLASS_UNSPECIFIED:
        raise InvalidArgument(field_name, f"failure class must be set; expected one of {allowed}")
    return cls


def parse_action(value: Any, field_name: str) -> ActionKind:
    allowed = ", ".join(a.name for a in PLANNABLE_ACTIONS)
    if isinstance(value, ActionKind):
        action = value
    elif isinstance(value, str) and value in ActionKind.__members__:
        action = ActionKind[value]
    elif isinstance(value, int) and not isinstance(value, bool) and value in ActionKind._value2member_map_:
        action = ActionKind(value)
    else:
        raise InvalidArgument(field_name, f"unknown action {value!r}; expected one of {allowed}")
    if action is ActionKind.ACTION_KIND_UNSPECIFIED:
        raise InvalidArgument(field_name, f"action must be set; expected one of {allowed}")
    return action


def validate_policy(policy: Policy, prefix: str = "policy") -> Policy:
    """Check every field; raise InvalidArgument naming the first bad one. Returns the policy."""
    cls = parse_failure_class(policy.failure_class, f"{prefix}.failure_class")
    seen: set[ActionKind] = set()
    for index, raw in enumerate(policy.allowed_actions):
        name = f"{prefix}.allowed_actions[{index}]"
        action = parse_action(raw, name)
        if cls in GENUINE_BREAKS and action in NEVER_FOR_GENUINE_BREAKS:
            raise InvalidArgument(name, f"{action.name} is never allowed for {cls.name} (a genuine break)")
        if action in seen:
            raise InvalidArgument(name, f"{action.name} is listed twice")
        seen.add(action)
    _check_number(policy.max_attempts, f"{prefix}.max_attempts", 0, MAX_ATTEMPTS_CEILING, integer=True)
    _check_number(policy.budget_minutes, f"{prefix}.budget_minutes", 0.0, 1e6)
    _check_number(policy.budget_usd, f"{prefix}.budget_usd", 0.0, 1e6)
    _check_number(policy.min_confidence, f"{prefix}.min_confidence", 0.0, 1.0)
    for name in ("requires_human_approval", "exploration"):
        if not isinstance(getattr(policy, name), bool):
            raise InvalidArgument(f"{prefix}.{name}", f"must be true or false, got {getattr(policy, name)!r}")
    for raw_action, prior in policy.priors.items():
        action = parse_action(raw_action, f"{prefix}.priors")
        for part in ("alpha", "beta"):
            value = getattr(prior, part)
            where = f"{prefix}.priors.{action.name}.{part}"
            _check_number(value, where, 0.0, MAX_PRIOR_STRENGTH)
            if value <= 0:
                raise InvalidArgument(where, f"must be > 0, got {value!r}")
    return policy


def _check_number(value: Any, name: str, low: float, high: float, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise InvalidArgument(name, f"must be {kind} in [{low:g}, {high:g}], got {value!r}")
    if value != value or value < low:  # NaN compares unequal to itself
        raise InvalidArgument(name, f"must be >= {low:g}, got {value!r}")
    if value > high:
        raise InvalidArgument(name, f"must be <= {high:g}, got {value!r}")


# --- serialisation and layering ---------------------------------------------------------

_FIELDS = {f.name for f in dataclasses.fields(Policy)} - {"failure_class"}


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """A JSON-ready dict (enum names, priors as {action: [alpha, beta]})."""
    return {
        "failure_class": policy.failure_class.name,
        "allowed_actions": [a.name for a in policy.allowed_actions],
        "max_attempts": policy.max_attempts,
        "budget_minutes": policy.budget_minutes,
        "budget_usd": policy.budget_usd,
        "requires_human_approval": policy.requires_human_approval,
        "exploration": policy.exploration,
        "min_confidence": policy.min_confidence,
        "priors": {a.name: [p.alpha, p.beta] for a, p in policy.priors.items()},
    }


def apply_override(base: Policy, override: Mapping[str, Any], prefix: str = "policy") -> Policy:
    """`base` with the fields present in `override` replaced, then validated."""
    if not isinstance(override, Mapping):
        raise InvalidArgument(prefix, f"must be an object of policy fields, got {type(override).__name__}")
    changes: dict[str, Any] = {}
    for key, value in override.items():
        if key == "failure_class":
            if parse_failure_class(value, f"{prefix}.failure_class") is not base.failure_class:
                raise InvalidArgument(
                    f"{prefix}.failure_class", f"{value!r} does not match {base.failure_class.name}"
                )
            continue
        if key not in _FIELDS:
            raise InvalidArgument(f"{prefix}.{key}", f"unknown policy field; expected one of {sorted(_FIELDS)}")
        if key == "allowed_actions":
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise InvalidArgument(f"{prefix}.allowed_actions", f"must be a list of actions, got {value!r}")
            value = tuple(parse_action(v, f"{prefix}.allowed_actions[{i}]") for i, v in enumerate(value))
        elif key == "priors":
            value = _parse_priors(value, f"{prefix}.priors", base.priors)
        changes[key] = value
    return validate_policy(dataclasses.replace(base, **changes), prefix)


def _parse_priors(value: Any, name: str, base: Mapping[ActionKind, Prior]) -> dict[ActionKind, Prior]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(name, f"must map action names to [alpha, beta], got {value!r}")
    priors = dict(base)
    for raw_action, pair in value.items():
        action = parse_action(raw_action, name)
        if isinstance(pair, Prior):
            priors[action] = pair
            continue
        if isinstance(pair, Mapping):
            pair = [pair.get("alpha"), pair.get("beta")]
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise InvalidArgument(f"{name}.{action.name}", f"must be [alpha, beta], got {pair!r}")
        priors[action] = Prior(alpha=pair[0], beta=pair[1])
    return priors


def merge_policies(
    defaults: Mapping[FailureClass, Policy],
    *layers: tuple[str, Mapping[str, Any]],
) -> dict[FailureClass, Policy]:
    """Apply layers of overrides (lowest first), each named for error messages.

    Each layer maps a failure class name to a dict of policy fields, e.g.
    ``merge_policies(default_policies(), ("stored", tenant_doc), ("live", {"OUT_OF_MEMORY": {"max_attempts": 1}}))``.
    """
    merged = dict(defaults)
    for layer_name, layer in layers:
        if not isinstance(layer, Mapping):
            raise InvalidArgument(layer_name, f"must map failure class names to policies, got {layer!r}")
        for raw_class, override in layer.items():
            cls = parse_failure_class(raw_class, f"{layer_name}.{raw_class}")
            base = merged.get(cls) or Policy(failure_class=cls)
            merged[cls] = apply_override(base, override, f"{layer_name}.{cls.name}")
    return merged


def policy_from_dict(data: Mapping[str, Any], prefix: str = "policy") -> Policy:
    """A full policy from a dict (e.g. a SetPolicy request), on top of that class's default."""
    if not isinstance(data, Mapping) or "failure_class" not in data:
        raise InvalidArgument(f"{prefix}.failure_class", "is required")
    cls = parse_failure_class(data["failure_class"], f"{prefix}.failure_class")
    return apply_override(default_policies()[cls], data, prefix)
