"""The rungs every reliability test runs on: every mode the twin registry knows (py, py+rs,
rs-core, and rs-server once it is registered), so a new rung joins by name."""

from gateway.twins import MODES

RUNGS = list(MODES)
# ledger.ack durable: the Python background path (py, py+rs: gateway/background.py) and the
# Rust ledger thread (rs-core, rs-server: native/core/src/ledger.rs) both implement it.
DURABLE_ACK_RUNGS = list(RUNGS)
