"""Python `pre_call` plugins: run in-process on the Python rungs, in a sidecar on rs-server.

    plugins:
      pre_call: [my_company.policies:no_weekend_gpt4]   # module.path:function, run in order
      timeout_ms: 200          # rs-server: per-call budget in the sidecar (waiting included)
      max_in_flight: 64        # rs-server: calls outstanding at once; more wait for a slot

A hook is a plain function `hook(call: PreCall) -> str | None`: it returns None to let the
request pass, or a message to reject it (the client gets 403, code `plugin_rejected`, that
message). It runs after auth, WAF and rate limiting passed and before the request goes
upstream, and sees the parsed request body. A hook that raises gives 500 `plugin_failed`.

On rs-server the hooks run in one sidecar process (`python -m gateway.plugins --socket PATH
--hook module:function ...`) that the binary starts and talks to over a Unix socket with
length-prefixed JSON messages:

    frame    = u32 big-endian length | JSON
    request  = {"id": int, "key_id": str, "model": str, "request": <the request body>}
    answer   = {"id": int, "reject": str | null, "error": str | null}

Calls are answered in order, one at a time (a hook is ordinary synchronous Python). What
the binary answers when the sidecar fails: 504 `plugin_timeout` (no answer in timeout_ms),
503 `plugin_busy` (no free slot in timeout_ms), 502 `plugin_unavailable` (the sidecar is
gone); the server itself goes on.

Rung 0/1 call `PreCallHooks.check(...)` in-process at the same point of the request; it
gives the same answers (no timeout: the hook runs on the event loop, as any Python plugin
of an ASGI gateway does, and its cost is exactly what the ladder notebook compares).
"""

from __future__ import annotations

import importlib
import json
import re
import socket
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError

_SPEC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
_LEN = struct.Struct(">I")
MAX_FRAME = 64 << 20


@dataclass(frozen=True)
class PreCall:
    key_id: str
    model: str
    request: Any  # the parsed request body (an OpenAI chat request)


@dataclass(frozen=True)
class PluginRejection:
    status: int
    code: str
    message: str


@dataclass(frozen=True)
class PluginConfig:
    pre_call: tuple[str, ...] = ()
    timeout_ms: float = 200.0
    max_in_flight: int = 64


def parse_config(p: Mapping[str, Any]) -> PluginConfig:
    """The `plugins:` section (native/server/src/config.rs checks the same, same messages)."""
    if not isinstance(p, Mapping):
        raise ConfigError(f"plugins: expected Mapping, got {p!r}")
    hooks = p.get("pre_call")
    if hooks is None:
        hooks = []
    if not isinstance(hooks, list):
        raise ConfigError(f"plugins.pre_call: expected list, got {hooks!r}")
    for i, h in enumerate(hooks):
        if not isinstance(h, str):
            raise ConfigError(f"plugins.pre_call[{i}]: expected str, got {h!r}")
        if not _SPEC.fullmatch(h):
            raise ConfigError(f"plugins.pre_call[{i}]: expected 'module.path:function', got {h!r}")
    timeout = p.get("timeout_ms")
    if timeout is None:
        timeout = 200.0
    if not isinstance(timeout, (int, float)):
        raise ConfigError(f"plugins.timeout_ms: expected int/float, got {timeout!r}")
    if not timeout > 0:
        raise ConfigError(f"plugins.timeout_ms: must be > 0, got {timeout!r}")
    mif = p.get("max_in_flight")
    if mif is None:
        mif = 64
    if type(mif) is bool or not isinstance(mif, int):
        raise ConfigError(f"plugins.max_in_flight: expected int, got {mif!r}")
    if not mif > 0:
        raise ConfigError(f"plugins.max_in_flight: must be > 0, got {mif!r}")
    return PluginConfig(tuple(hooks), float(timeout), mif)


def load_hook(spec: str) -> Callable[[PreCall], str | None]:
    mod, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"plugins.pre_call: cannot load {spec!r}: {e}") from None
    if not callable(fn):
        raise ConfigError(f"plugins.pre_call: {spec!r} is not callable")
    return fn


class PreCallHooks:
    """The configured hooks, loaded once; `check` runs them in order."""

    def __init__(self, specs: Sequence[str]):
        self.specs = tuple(specs)
        self.hooks = [load_hook(s) for s in self.specs]

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def check(self, key_id: str, model: str, request: Any) -> PluginRejection | None:
        call = PreCall(key_id, model, request)
        for spec, hook in zip(self.specs, self.hooks):
            try:
                verdict = hook(call)
            except Exception as e:  # a plugin bug is the operator's to see, not a crash
                return PluginRejection(500, "plugin_failed", f"plugin {spec} failed: {type(e).__name__}: {e}")
            if verdict is not None:
                return PluginRejection(403, "plugin_rejected", str(verdict))
        return None


def example_keyword_filter(call: PreCall) -> str | None:
    """An example hook (the ladder notebook measures it): reject prompts that name a blocked
    topic. Cheap on purpose, so its measured cost is the plugin mechanism's."""
    for m in call.request.get("messages") or ():
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str) and "forbidden topic" in c.lower():
            return "this gateway does not discuss the forbidden topic"
    return None


# --- the sidecar ----------------------------------------------------------------------------


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def serve_sidecar(sock: socket.socket, hooks: PreCallHooks) -> None:
    """Answer calls on a connected socket until the binary closes it."""
    while True:
        head = _read_exact(sock, 4)
        if head is None:
            return
        (n,) = _LEN.unpack(head)
        if n > MAX_FRAME:
            return
        data = _read_exact(sock, n)
        if data is None:
            return
        msg = json.loads(data)
        r = hooks.check(msg["key_id"], msg["model"], msg["request"])
        if r is None:
            out = {"id": msg["id"], "reject": None, "error": None}
        elif r.status == 403:
            out = {"id": msg["id"], "reject": r.message, "error": None}
        else:
            out = {"id": msg["id"], "reject": None, "error": r.message}
        body = json.dumps(out).encode()
        sock.sendall(_LEN.pack(len(body)) + body)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m gateway.plugins", description="the rs-server plugin sidecar")
    p.add_argument("--socket", required=True, help="Unix socket the gateway binary listens on")
    p.add_argument("--hook", action="append", default=[], help="module.path:function (repeatable, in order)")
    args = p.parse_args(argv)
    try:
        hooks = PreCallHooks(args.hook)
    except ConfigError as e:
        print(f"gatewaylab plugin sidecar: error: {e}", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.socket)
    try:
        serve_sidecar(sock, hooks)
    except (ConnectionError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
