"""Which role may call which Predictor RPC (the interceptor enforces this table)."""

from services.common.auth import roles
from services.common.vocabulary import Role

ADMIN, OPERATOR, VIEWER, SERVICE = Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.SERVICE

ACCESS = {
    "RecordRun": roles(OPERATOR, SERVICE),
    "ForecastRisk": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "DetectAnomalies": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "Recommend": roles(VIEWER, OPERATOR, ADMIN, SERVICE),
    "Retrain": roles(ADMIN),
    "ImportRuns": roles(OPERATOR, SERVICE),
}
