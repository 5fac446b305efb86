from services.common.runtime import run
from services.predictor.server import build

run("predictor", build)
