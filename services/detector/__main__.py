from services.common.runtime import run
from services.detector.server import LIVE_DEFAULTS, build

run("detector", build, LIVE_DEFAULTS)
