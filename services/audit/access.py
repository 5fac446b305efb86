"""Which role may call which Audit RPC (the interceptor enforces this table).

Only services append: users read, prove and export. Erasure (GDPR) is an admin act.
"""

from services.common.auth import roles
from services.common.vocabulary import Role

ADMIN, OPERATOR, VIEWER, SERVICE = Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.SERVICE
READERS = roles(VIEWER, OPERATOR, ADMIN, SERVICE)

ACCESS = {
    "Append": roles(SERVICE),
    "GetEntry": READERS,
    "ListEntries": READERS,
    "GetSignedTreeHead": READERS,
    "GetInclusionProof": READERS,
    "GetConsistencyProof": READERS,
    "ExportRange": roles(OPERATOR, ADMIN, SERVICE),
    "ComplianceReport": roles(ADMIN),
    "Erase": roles(ADMIN),
}
