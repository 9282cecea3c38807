"""What every peer adapter shares: one process group, pinned, sandboxed env, readiness, stop.

A peer runs as its own session (process group) pinned to the profile's gateway cores with
`sched_setaffinity` (inherited by every child and thread it starts). Its environment is ours
minus anything that could reach out (proxies unset, every peer's telemetry switch off, and
`NO_PROXY=*`); the adapters point every upstream at the native mock on 127.0.0.1, so no
request leaves the machine. `stop()` SIGTERMs the whole group, then SIGKILLs what lingers.

The sweep measures a peer exactly like our gateway: `harness.infra.probes.TreeSampler(pid)` over
the process tree (CPU user+sys from /proc, peak RSS sampled at 20 Hz).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.peers import pins
from harness.peers.installer import PeerError, on_disk_version

# Variables that would let a peer phone home or use a proxy; dropped from its environment.
_DROP = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
# Telemetry off for every peer (each reads its own; the others ignore them).
TELEMETRY_OFF = {
    "NO_PROXY": "*",
    "no_proxy": "*",
    "DO_NOT_TRACK": "1",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
    "NODE_ENV": "production",
    "ENVIRONMENT": "production",
    "NOVEUM_GUARD_ENABLED": "false",
    "RUST_LOG": "warn",
}


@dataclass(frozen=True)
class Governance:
    """What a target runs besides forwarding, feature by feature (docs/architecture.md, "Measurements": a
    peer's row says which governance features it ran). `auth`: the gateway checks the client's
    key on every request; `waf`: it scans prompts against rules; `ratelimit`: it keeps per-key
    limits it could refuse at; `ledger`: it writes an audit record per request to an fsynced
    log; `tracing`: it exports spans or per-request telemetry. `notes` says how, in words."""

    auth: bool = False
    waf: bool = False
    ratelimit: bool = False
    ledger: bool = False
    tracing: bool = False
    notes: str = ""

    FEATURES = ("auth", "waf", "ratelimit", "ledger", "tracing")

    def columns(self) -> dict[str, Any]:
        """The cells-table columns: gov_<feature> booleans and governance_notes."""
        return {**{f"gov_{f}": getattr(self, f) for f in self.FEATURES}, "governance_notes": self.notes}

    def label(self) -> str:
        """`auth+waf+ratelimit+ledger` (the features on), or `none`."""
        return "+".join(f for f in self.FEATURES if getattr(self, f)) or "none"


@dataclass(frozen=True)
class RequestShape:
    """How a client talks to a target: route, headers and JSON body (streaming or not)."""

    path: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]
    route: str = "chat"  # "chat" (/v1/chat/completions) or "messages" (/v1/messages)

    def with_stream(self) -> RequestShape:
        return RequestShape(self.path, self.headers, {**self.body, "stream": True}, self.route)


CHAT_BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Summarise the GIL in one line."}],
}
MESSAGES_BODY = {
    "model": "claude-3-5-haiku-20241022",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Summarise the GIL in one line."}],
}
ROUTE_PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeerProcess:
    """A running peer: `.url`, `.pid` (group leader), `.proc`, `.alive()`, `.stop()`, `.output()`."""

    def __init__(self, name: str, proc: subprocess.Popen, url: str, log_path: str, workdir: Path):
        self.name, self.proc, self.url, self.log_path, self.workdir = name, proc, url, log_path, workdir
        self.mock_url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def app_pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 4000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the whole process group, SIGKILL what is left after `timeout` s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout)
                # the leader is gone; make sure no child of it lingers in the group
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            except subprocess.TimeoutExpired:
                continue
        # a JIT's perf map (node --perf-basic-prof writes /tmp/perf-<pid>.map while it runs)
        Path(f"/tmp/perf-{self.proc.pid}.map").unlink(missing_ok=True)
        return self.proc.returncode

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; stop() is the normal path
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        except Exception:
            pass


@dataclass(frozen=True)
class PeerTarget:
    """One sweep target served by a peer (a peer can give several: LiteLLM's two paths).

    Subclasses implement `argv`, `env` and `write_config`; `ready_path` answers 200 when the
    peer serves; `check` inspects one real response and returns a problem or None.
    """

    name: str  # sweep target name, e.g. "litellm-rust"
    peer: str  # install name, e.g. "litellm"
    route: str = "chat"
    ready_path: str = "/health"
    ready_timeout_s: float = 90.0
    path_header: str | None = None  # an answer header that says which path served (LiteLLM's x-litellm-rust)
    # what it runs besides forwarding, as this adapter starts it (checked in part by `probe`:
    # a request with a wrong key must be refused, a 4xx, exactly when `auth` says so)
    governance: Governance = Governance()
    # what runs the peer: "python" (py-spy sees its frames), "node" (a JIT: perf names its
    # code through node's perf map) or "native" (a compiled binary: perf); harness.infra.targets
    runtime: str = "native"

    # ---- hooks
    def argv(self, port: int, workdir: Path, cpus: list[int]) -> list[str]:
        raise NotImplementedError

    def env(self, mock_url: str, cpus: list[int], port: int) -> dict[str, str]:
        return {}

    def write_config(self, mock_url: str, workdir: Path) -> None:
        return None

    def request(self, api_key: str, mock_url: str) -> RequestShape:
        """The request a client sends to this target (mock_url: where the peer is told to forward)."""
        body = MESSAGES_BODY if self.route == "messages" else CHAT_BODY
        return RequestShape(
            ROUTE_PATHS[self.route],
            {"authorization": f"Bearer {api_key}", "content-type": "application/json"},
            body,
            self.route,
        )

    def check(self, status: int, headers: Mapping[str, str], body: bytes) -> str | None:
        return None if 200 <= status < 300 else f"HTTP {status}: {body[:200]!r}"

    def profiling_env(self) -> dict[str, str]:
        """Environment that lets perf name the peer's frames (a JIT's map file), for a
        peer started to be profiled; nothing for a compiled or Python peer."""
        from harness.profilers.perf import PERF_MAP_ENV

        return dict(PERF_MAP_ENV) if self.runtime == "node" else {}

    # ---- shared
    @property
    def version(self) -> str | None:
        return on_disk_version(self.peer)

    def start(
        self,
        mock_url: str,
        cpus: Iterable[int],
        workdir: str | os.PathLike | None = None,
        wrapper: Iterable[str] | None = None,
        ready_timeout_s: float | None = None,
        profiling: bool = False,
    ) -> PeerProcess:
        """Start the peer pinned to `cpus`, pointed at the mock; return once it answers.
        `wrapper` is a command prefix to run it under (e.g. Cachegrind; then give a longer
        `ready_timeout_s` than the peer's own). `profiling`: with `profiling_env()` (perf can
        then name a JIT's frames)."""
        pin = pins()[self.peer]
        have = on_disk_version(self.peer)
        if have != pin["version"]:
            raise PeerError(
                f"{self.peer} {pin['version']} is not installed (found {have or 'nothing'}): "
                f"run `gatewaylab peers install {self.peer}`"
            )
        cpu_list = sorted(set(cpus))
        wd = (
            Path(workdir)
            if workdir is not None
            else Path(tempfile.mkdtemp(prefix=f"gatewaylab-{self.name}-"))
        )
        wd.mkdir(parents=True, exist_ok=True)
        self.write_config(mock_url, wd)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in _DROP}
        env.update(TELEMETRY_OFF)
        env.update(self.env(mock_url, cpu_list, port))
        if profiling:
            env.update(self.profiling_env())
        log_path = str(wd / f"{self.name}.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [*(wrapper or ()), *self.argv(port, wd, cpu_list)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=wd,
                start_new_session=True,
                preexec_fn=lambda: os.sched_setaffinity(0, cpu_list),
            )
        pp = PeerProcess(self.name, proc, f"http://127.0.0.1:{port}", log_path, wd)
        pp.mock_url = mock_url
        try:
            self._wait_ready(pp, self.ready_timeout_s if ready_timeout_s is None else ready_timeout_s)
        except BaseException:
            pp.stop()
            raise
        return pp

    def _wait_ready(self, pp: PeerProcess, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if not pp.alive():
                raise PeerError(
                    f"{self.name} exited with {pp.proc.returncode} before it was ready: "
                    f"{pp.output(600).strip()!r}"
                )
            try:
                with urllib.request.urlopen(pp.url + self.ready_path, timeout=2) as r:  # noqa: S310 (127.0.0.1)
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except OSError as e:
                last = f"{type(e).__name__}"
            time.sleep(0.1)
        raise PeerError(f"{self.name} not ready after {timeout_s:.0f} s ({last}): {pp.output(600).strip()!r}")

    def probe(self, pp: PeerProcess, api_key: str, stream: bool = False) -> dict[str, Any]:
        """Send one real request, and one with a wrong key; return {"status", "headers", "seen",
        "problem"} (problem None when it is right). The wrong key must be refused (a 4xx: the
        mock takes any key, so only the gateway can refuse it; LiteLLM answers a key that is not
        its master key with 400 "No connected db." as it has no database to look it up in)
        exactly when `governance.auth` says the peer checks keys."""
        shape = self.request(api_key, pp.mock_url)
        if stream:
            shape = shape.with_stream()
        status, headers, body = _post(pp.url + shape.path, shape.headers, shape.body)
        seen: dict[str, Any] = {"status": status}
        if self.path_header:
            seen[self.path_header] = headers.get(self.path_header)
        problem = self.check(status, headers, body)
        wrong = {**shape.headers, "authorization": f"Bearer {WRONG_KEY}"}
        wrong_status = _post(pp.url + shape.path, wrong, shape.body)[0]
        seen["wrong_key"] = wrong_status
        if problem is None and (400 <= wrong_status < 500) != self.governance.auth:
            problem = (
                f"governance says auth={self.governance.auth}, but a request with a wrong key got "
                f"HTTP {wrong_status}"
            )
        return {"status": status, "headers": headers, "seen": seen, "problem": problem}


WRONG_KEY = "sk-gatewaylab-not-a-key-of-this-gateway"


def _post(url: str, headers: Mapping[str, str], body: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (127.0.0.1)
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
