from services.common.runtime import run
from services.planner.server import LIVE_DEFAULTS, build

run("planner", build, LIVE_DEFAULTS)
