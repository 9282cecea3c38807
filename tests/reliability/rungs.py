"""The rungs every reliability test runs on: every mode the twin registry knows (py, py+rs,
rs-core, and rs-server once it is registered), so a new rung joins by name."""
from gateway.twins import MODES

RUNGS = list(MODES)
# ledger.ack durable lives in the Python background path (gateway/background.py); rs-core's
# Rust ledger thread refuses the setting with a ConfigError until it implements it.
DURABLE_ACK_RUNGS = [m for m in RUNGS if m in ("py", "py+rs")]
