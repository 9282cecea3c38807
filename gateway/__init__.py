"""gateway — an in-process OpenAI-compatible governance gateway whose every accelerable
stage exists as a pure-Python twin and a Rust twin (`gateway._native`).

Twin selection lives in one place: `gateway.twins`.
"""

from gateway.errors import GatewayLabError, RustTwinUnavailable  # noqa: F401

__all__ = ["GatewayLabError", "RustTwinUnavailable"]
