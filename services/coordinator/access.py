"""Which role may call which Coordinator RPC (the interceptor enforces this table)."""

from services.common.auth import roles
from services.common.vocabulary import Role

ADMIN, OPERATOR, VIEWER, SERVICE = Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.SERVICE

ACCESS = {
    "HealFailure": roles(OPERATOR, SERVICE),
    "StreamHealFailure": roles(OPERATOR, SERVICE),
    "SubmitPlan": roles(OPERATOR, SERVICE),
    "GetAction": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "ListActions": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "WatchActions": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "RegisterExecutor": roles(SERVICE, ADMIN),
    "ClaimAction": roles(SERVICE, ADMIN),
    "ReportOutcome": roles(SERVICE, ADMIN),
    "Leader": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
}
