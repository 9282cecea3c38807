"""Error types shared by both twins.

The Rust extension raises these same classes (it imports this module), so callers catch
one type whichever twin runs.
"""

from __future__ import annotations


class GatewayLabError(Exception):
    """Base of every gatewaylab error."""


class InvalidInput(GatewayLabError, TypeError, ValueError):
    """An argument of the wrong type or value (non-bytes payload, bad policy name, ...)."""


class NativePanic(GatewayLabError, RuntimeError):
    """A Rust panic, caught at the FFI boundary instead of aborting the process."""


class RustTwinUnavailable(GatewayLabError, ImportError):
    """A Rust twin was asked for but the extension `gateway._native` is not built."""


class ConfigError(GatewayLabError, ValueError):
    """Invalid configuration; the message names the field."""


class AuditIndexError(GatewayLabError, IndexError):
    """A leaf index or count outside the MMR."""


class ProofError(GatewayLabError, ValueError):
    """A proof that is malformed (wrong shape, bad hex, inconsistent counts)."""


class WalError(GatewayLabError, OSError):
    """Write-ahead log failure."""


class WalCorruptError(WalError):
    """A bad frame followed by valid data: the log stops instead of guessing.

    The message names the byte offset of the bad frame; `.offset` carries it too when known.
    """

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        if offset is None:
            import re

            m = re.search(r"offset (\d+)", message)
            offset = int(m.group(1)) if m else None
        self.offset = offset


class WalLockedError(WalError):
    """Another writer holds the WAL's lock (or the lock of the node store beside it)."""


class StoreCorruptError(GatewayLabError, OSError):
    """The MMR node store (`audit.mmr`) disagrees with itself or with the WAL: a bad header,
    or a node that does not hash up to the peak it belongs to. The store is derived data;
    the ledger rebuilds it from the WAL (and says so) instead of trusting it."""


# --- answers to requests --------------------------------------------------------------
# Every rung answers with the OpenAI error shape {"error": {"message", "type", "code"}}.
# The `type` below 500 follows from the HTTP status (ERROR_TYPES). A 5xx is either the
# upstream's failure (the code is one of UPSTREAM_CODES: `upstream_error`) or the gateway's
# own (overloaded, audit_unavailable, shard_unavailable, the plugin sidecar's, internal_error,
# unsupported_http_version...: OpenAI's `server_error`): 503 means both `overloaded` and
# `no_deployment_available`, so the status alone cannot say which. The Rust core has its copy
# of both tables in native/core/src/pipeline.rs, checked equal by
# tests/pipeline/test_decide_parity.py.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
UPSTREAM_CODES = frozenset(
    {
        "upstream_error",
        "upstream_unavailable",
        "upstream_timeout",
        "upstream_malformed",
        "upstream_status",
        "no_deployment_available",
    }
)


def error_type(status: int, code: str) -> str:
    if status >= 500:
        return "upstream_error" if code in UPSTREAM_CODES else "server_error"
    return ERROR_TYPES.get(status, "invalid_request_error")


class RequestRejected(GatewayLabError):
    """A request refused before it reached the upstream: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class GuardError(RequestRejected):
    """The smuggling guard's verdict on a request head or body (gateway/stages/guard.py)."""

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra response headers: after a framing error (400) nothing more on the connection
        can be trusted, so it is closed, as after an oversized head (431, which hyper closes
        too); a 413 has sound framing and the server discards the unread body, so the client
        can finish sending and read the answer."""
        return [(b"connection", b"close")] if self.status in (400, 431) else []


class AuditUnavailable(GatewayLabError):
    """ledger.ack durable: the answer's record could not be made durable, so the answer is
    withheld (503) rather than acknowledged without its record."""

    http_status = 503
    code = "audit_unavailable"


class UpstreamError(GatewayLabError):
    """The upstream could not give a usable answer (`http_status`, `code`)."""

    http_status = 502
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """Connection refused, reset, or closed before a full response."""

    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    http_status = 504
    code = "upstream_timeout"


class UpstreamMalformed(UpstreamError):
    code = "upstream_malformed"


class UpstreamStatusError(UpstreamError):
    """A non-2xx status where a stream was expected (send() returns statuses instead)."""

    code = "upstream_status"

    def __init__(self, status: int, body: bytes = b""):
        super().__init__(f"upstream answered HTTP {status}")
        self.status = status
        self.body = body
        self.http_status = status if 400 <= status < 500 else 502
