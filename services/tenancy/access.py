"""Which role may call which Tenancy RPC (the interceptor enforces this table)."""

from services.common.auth import roles
from services.common.vocabulary import Role

ADMIN, OPERATOR, VIEWER, SERVICE = Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.SERVICE

ACCESS = {
    "CreateTenant": roles(ADMIN),
    "GetTenant": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "ListTenants": roles(ADMIN),
    "UpdateTenant": roles(ADMIN),
    "SuspendTenant": roles(ADMIN),
    "IssueToken": roles(ADMIN),
    "RevokeToken": roles(ADMIN),
    "GetJwks": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "SetQuota": roles(ADMIN),
    "ConsumeQuota": roles(SERVICE),
    "GetUsage": roles(VIEWER, OPERATOR, ADMIN),
    "BillingReport": roles(ADMIN),
    "ListSecurityEvents": roles(ADMIN),
}
