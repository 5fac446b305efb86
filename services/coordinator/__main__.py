from services.common.runtime import run
from services.coordinator.server import LIVE_DEFAULTS, build

run("coordinator", build, LIVE_DEFAULTS)
