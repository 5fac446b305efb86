from services.common.runtime import run
from services.tenancy.server import LIVE_DEFAULTS, build

run("tenancy", build, LIVE_DEFAULTS)
