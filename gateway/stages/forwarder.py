"""Forwarder stage, Python twin: a pooled aiohttp client to the upstream, with timeouts.

Failures raise `UpstreamError` subclasses, which the gateway maps to HTTP statuses
(`.http_status`): refused / reset / closed early -> UpstreamUnavailable (502), timeout ->
UpstreamTimeout (504), a 5xx or non-2xx status on a stream -> UpstreamStatusError (502, or
the upstream's own 4xx), unparseable body -> UpstreamMalformed (502, raised by the gateway
when the adapter cannot read the body). The Rust twin (gateway/stages/rust_forwarder.py)
raises these same classes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import aiohttp
from yarl import URL

from gateway.errors import (
    UpstreamStatusError,
    UpstreamTimeout,  # noqa: F401
    UpstreamUnavailable,
)

_SINGLE_DOT = {".", "%2e"}
_DOUBLE_DOT = {"..", ".%2e", "%2e.", "%2e%2e"}


def without_dot_segments(url: str) -> str:
    """`url` with its path's dot segments resolved the way the WHATWG URL parser (and so the
    Rust twin's reqwest) does: `.` (or `%2e`) is dropped, `..` (or `.%2e`, `%2e.`, `%2e%2e`,
    any case) drops the segment before it, and either one last leaves the path ending in `/`
    (`/a/.` -> `/a/`, `/a/b/..` -> `/a/`). Everything else goes as given."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    end = min((i for i in (tail.find("?"), tail.find("#")) if i >= 0), default=len(tail))
    path, after = tail[:end], tail[end:]
    if not path.startswith("/"):
        return url
    segments = path[1:].split("/")
    if not any(seg.lower() in _SINGLE_DOT or seg.lower() in _DOUBLE_DOT for seg in segments):
        return url
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        low = seg.lower()
        if low in _DOUBLE_DOT:
            if out:
                out.pop()
            if last:
                out.append("")
        elif low in _SINGLE_DOT:
            if last:
                out.append("")
        else:
            out.append(seg)
    return f"{scheme}://{authority}/" + "/".join(out) + after


class Forwarder:
    """Forwarder(timeout_s=30.0, pool=256, connect_timeout_s=5.0). The session is created
    lazily on first use so that it binds to the running loop."""

    def __init__(self, timeout_s: float = 30.0, pool: int = 256, connect_timeout_s: float = 5.0):
        # URLs go upstream as given (`URL(url, encoded=True)`): yarl would otherwise re-escape
        # or decode parts of them (`%2F` in a query became `/`), which the Rust twin does not
        # do; only dot segments are resolved first, as the Rust twin's URL parser resolves them.
        # send(): the whole exchange within timeout_s; stream(): no gap between chunks longer
        # than timeout_s (a long stream may take longer in total).
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=timeout_s
        )
        self._total = timeout_s
        self._pool = pool
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        s = self._session
        if s is None:
            conn = aiohttp.TCPConnector(
                limit=self._pool, limit_per_host=self._pool, ttl_dns_cache=300, enable_cleanup_closed=False
            )
            s = self._session = aiohttp.ClientSession(
                connector=conn,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return s

    async def send(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> tuple[int, bytes]:
        try:
            async with self._client().post(
                URL(without_dot_segments(url), encoded=True), data=body, headers=headers
            ) as r:
                return r.status, await r.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise UpstreamTimeout(f"upstream timed out after {self._total:g}s") from e
        except (
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientResponseError,
            OSError,
        ) as e:
            raise UpstreamUnavailable(f"upstream connection failed: {type(e).__name__}: {e}") from e

    async def stream(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> AsyncIterator[bytes]:
        try:
            async with self._client().post(
                URL(without_dot_segments(url), encoded=True),
                data=body,
                headers=headers,
                timeout=self._stream_timeout,
            ) as r:
                if not 200 <= r.status < 300:
                    raise UpstreamStatusError(r.status, await r.read())
                async for chunk in r.content.iter_any():
                    yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise UpstreamTimeout(f"upstream stream timed out (no data for {self._total:g}s)") from e
        except (
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientResponseError,
            OSError,
        ) as e:
            raise UpstreamUnavailable(f"upstream connection failed: {type(e).__name__}: {e}") from e

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
