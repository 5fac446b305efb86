"""Which role may call which Planner RPC (the interceptor enforces this table)."""

from services.common.auth import roles
from services.common.vocabulary import Role

ADMIN, OPERATOR, VIEWER, SERVICE = Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.SERVICE

ACCESS = {
    "PlanHealing": roles(OPERATOR, SERVICE),
    "PlanBatch": roles(OPERATOR, SERVICE),
    "RecordOutcome": roles(SERVICE),
    "ExplainPlan": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "GetPolicy": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "SetPolicy": roles(ADMIN),
    "PlanRecommendation": roles(OPERATOR, ADMIN, SERVICE),
}
