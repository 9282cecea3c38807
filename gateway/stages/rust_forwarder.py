"""Forwarder stage, Rust twin: reqwest/hyper on a shared Tokio runtime, awaited from asyncio.

A thin wrapper around `gateway._native.NativeForwarder` giving it the `Forwarder` Protocol
(gateway/stages/protocols.py). The native side raises builtin `TimeoutError` and
`ConnectionError`; they become the same `UpstreamError` classes the Python twin raises
(gateway/stages/forwarder.py), so the gateway maps both twins to the same 502/504.
While a request is in flight the asyncio loop awaits a plain future and the GIL is free;
the Tokio threads never take it until the result is handed back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from gateway import _native
from gateway.stages.forwarder import UpstreamStatusError, UpstreamTimeout, UpstreamUnavailable


class RustForwarder:
    """RustForwarder(timeout_s=30.0, pool=256, connect_timeout_s=5.0), as the Python twin."""

    __slots__ = ("_native", "_timeout")

    def __init__(self, timeout_s: float = 30.0, pool: int = 256, connect_timeout_s: float = 5.0):
        self._native = _native.NativeForwarder(float(timeout_s), int(pool), float(connect_timeout_s))
        self._timeout = timeout_s

    async def send(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> tuple[int, bytes]:
        try:
            return await self._native.send(url, body, list(headers))
        except TimeoutError as e:
            raise UpstreamTimeout(f"upstream timed out after {self._timeout:g}s") from e
        except ConnectionError as e:
            raise UpstreamUnavailable(f"upstream connection failed: {e}") from e

    async def stream(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> AsyncIterator[bytes]:
        s = None
        try:
            status, s = await self._native.open_stream(url, body, list(headers))
            if not 200 <= status < 300:
                raise UpstreamStatusError(status, await s.read_all())
            next_chunk = s.next_chunk
            while (chunk := await next_chunk()) is not None:
                yield chunk
        except TimeoutError as e:
            raise UpstreamTimeout(f"upstream stream timed out (no data for {self._timeout:g}s)") from e
        except ConnectionError as e:
            raise UpstreamUnavailable(f"upstream connection failed: {e}") from e
        finally:
            if s is not None:
                s.close()

    async def aclose(self) -> None:
        self._native.close()
