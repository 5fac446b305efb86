from services.common.runtime import run
from services.tenancy.server import build

run("tenancy", build)
