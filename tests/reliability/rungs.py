"""The rungs every reliability test runs on: every mode the twin registry knows (py, py+rs,
and rs-core / rs-server once they are registered), so a new rung joins by name."""
from gateway.twins import MODES

RUNGS = list(MODES)
