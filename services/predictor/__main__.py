from services.common.runtime import run
from services.predictor.server import LIVE_DEFAULTS, build

run("predictor", build, LIVE_DEFAULTS)
