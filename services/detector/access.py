"""Which role may call which Detector RPC (the interceptor enforces this table)."""

from services.common.auth import roles
from services.common.vocabulary import Role

ADMIN, OPERATOR, VIEWER, SERVICE = Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.SERVICE
READERS = roles(VIEWER, OPERATOR, ADMIN, SERVICE)

ACCESS = {
    "ReportFailure": roles(OPERATOR, SERVICE),
    "StreamFailure": roles(OPERATOR, SERVICE),
    "GetDiagnosis": READERS,
    "ListClusters": READERS,
    "CreatePattern": roles(ADMIN),
    "GetPattern": READERS,
    "ListPatterns": READERS,
    "UpdatePattern": roles(ADMIN),
    "DeletePattern": roles(ADMIN),
    "Retrain": roles(ADMIN),
    "RecordOutcome": roles(SERVICE),
    "GetTestHistory": READERS,
}
