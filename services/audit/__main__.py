from services.audit.server import build
from services.common.runtime import run

run("audit", build)
