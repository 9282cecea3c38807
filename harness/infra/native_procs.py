"""The native mock upstream and load generator as pinned child processes (Python API).

Both tools are Rust (native/tools, exposed through `gateway._native`) and run in their own
processes, `gatewaylab mock` and `gatewaylab load`, pinned with `os.sched_setaffinity`, so
they never compete with the process under test for its GIL or its cores.

    from harness.infra.native_procs import start_mock, run_load

    with start_mock(cpus=[1], latency_ms=2, seed=7) as mock:   # waits for "listening on ..."
        r = run_load(mock.url + "/v1/chat/completions", concurrency=4, duration_s=1.0,
                     body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                     cpus=[0])
        r["rps"], r["latency_us"]["p99"], r["errors"]       # see below
        mock.stats()          # {"total": n, "by_route": {"POST /v1/chat/completions": {"200": n}}, ...}
        mock.reset_stats()
    # the mock is stopped here (SIGTERM to its process group, SIGKILL if it lingers)

`start_mock(port=0, cpus=None, **opts) -> MockProcess`
    opts are the `gatewaylab mock` flags with underscores: latency_ms, jitter_ms, ttft_ms,
    itl_ms, tokens, error_status, error_rate, drop_rate, stall_every, stall_ms, seed, threads,
    model, host. `MockProcess` has `.url` (`http://127.0.0.1:PORT`), `.port`, `.pid`,
    `.stats()`, `.reset_stats()`, `.stop()`, and is a context manager. Every mock started here
    is also stopped at interpreter exit, and on any failure while starting.

`run_load(url, concurrency=None | rate=None, duration_s=None, requests=None, cpus=None, **opts) -> dict`
    Runs `gatewaylab load --json` in a pinned child process and returns its JSON:
    {"mode", "concurrency", "rate", "duration_s", "requests", "errors": {kind: n}, "rps",
    "latency_us": {"p50", "p90", "p95", "p99", "p999", "max"}, ["ttfb_us" when stream=True],
    "series": [{"t", "requests", "ok", "errors", "rps", "p50_us", "p99_us", "max_us"}], "meta"}.
    opts: warmup_s, method, headers (dict or list of (k, v)), body (str, bytes, or a JSON-able
    object), stream, connections, timeout_s, max_duration_s, threads, seed, arrival
    ("uniform" | "poisson"). Open-loop latency counts from each request's intended send time.

Per-request mock controls are headers (`x-mock-latency-ms`, `x-mock-error-status`, ...; see
`harness/commands/mock.py`).
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.errors import GatewayLabError, InvalidInput

__all__ = ["MockProcess", "NativeProcessError", "start_mock", "run_load", "cpus_arg"]

_LIVE: weakref.WeakSet[MockProcess] = weakref.WeakSet()


class NativeProcessError(GatewayLabError, RuntimeError):
    """A mock or load-generator child process failed; the message carries its stderr."""


def cpus_arg(cpus: int | str | Iterable[int] | None) -> str | None:
    """[0, 2] / {1} / 3 / "0-1" -> the `--cpus` string."""
    if cpus is None:
        return None
    if isinstance(cpus, int):
        return str(cpus)
    if isinstance(cpus, str):
        return cpus
    s = sorted(int(c) for c in cpus)
    if not s:
        raise InvalidInput("cpus: empty CPU set")
    return ",".join(map(str, s))


def _cli() -> list[str]:
    return [sys.executable, "-m", "harness.cli"]


def _kill_group(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


class MockProcess:
    """A running `gatewaylab mock` child (its own process group)."""

    def __init__(self, proc: subprocess.Popen, url: str, stderr_path: str):
        self.proc = proc
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self._stderr_path = stderr_path
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _get(self, path: str, method: str = "GET", timeout: float = 10.0) -> Any:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def stats(self, reset: bool = False) -> dict:
        """Requests seen by route and outcome since start or the last reset."""
        return self._get("/mock/stats?reset=1" if reset else "/mock/stats")

    def reset_stats(self) -> dict:
        """Reset the counters; returns what they held."""
        return self._get("/mock/stats/reset", method="POST")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM the process group (SIGKILL if needed); returns the exit code."""
        _kill_group(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        try:
            os.unlink(self._stderr_path)
        except OSError:
            pass
        _LIVE.discard(self)
        return self.proc.returncode

    def __enter__(self) -> MockProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; stop() is the normal path
        try:
            if self.proc.poll() is None:
                _kill_group(self.proc, timeout=1.0)
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"MockProcess(url={self.url!r}, pid={self.pid})"


def _mock_argv(port: int, cpus: str | None, opts: Mapping[str, Any]) -> list[str]:
    allowed = {
        "latency_ms",
        "jitter_ms",
        "ttft_ms",
        "itl_ms",
        "tokens",
        "error_status",
        "error_rate",
        "drop_rate",
        "stall_every",
        "stall_ms",
        "seed",
        "threads",
        "model",
        "host",
    }
    unknown = set(opts) - allowed
    if unknown:
        raise InvalidInput(f"start_mock: unknown option(s) {sorted(unknown)}; known: {sorted(allowed)}")
    argv = _cli() + ["mock", "--port", str(int(port))]
    if cpus is not None:
        argv += ["--cpus", cpus]
    for k, v in opts.items():
        if v is not None:
            argv += ["--" + k.replace("_", "-"), str(v)]
    return argv


def start_mock(
    port: int = 0, cpus: int | str | Iterable[int] | None = None, startup_timeout: float = 30.0, **opts: Any
) -> MockProcess:
    """Start `gatewaylab mock` and wait until it prints the address it listens on."""
    argv = _mock_argv(port, cpus_arg(cpus), opts)
    err = tempfile.NamedTemporaryFile(prefix="gatewaylab-mock-", suffix=".err", delete=False)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
    )
    err.close()
    try:
        url = _wait_for_address(proc, startup_timeout)
    except BaseException:
        _kill_group(proc)
        with open(err.name, encoding="utf-8", errors="replace") as f:
            stderr = f.read()
        os.unlink(err.name)
        if proc.stdout is not None:
            proc.stdout.close()
        raise NativeProcessError(
            f"mock did not start ({' '.join(argv)}): {stderr.strip() or 'no output'}"
        ) from None
    return MockProcess(proc, url, err.name)


def _wait_for_address(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no address printed in time")
            if not sel.select(timeout=min(left, 0.2)):
                if proc.poll() is not None:
                    raise RuntimeError(f"exited with {proc.returncode}")
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"exited with {proc.wait()}")
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("listening on "):
                    return line.split("listening on ", 1)[1].strip()
    finally:
        sel.close()


@atexit.register
def _stop_all() -> None:
    for m in list(_LIVE):
        try:
            m.stop()
        except Exception:
            pass


def _load_argv(
    url: str,
    concurrency: int | None,
    rate: float | None,
    duration_s: float | None,
    requests: int | None,
    cpus: str | None,
    opts: dict[str, Any],
    tmpdir: str,
) -> list[str]:
    argv = _cli() + ["load", "--url", url, "--json"]
    if (concurrency is None) == (rate is None):
        raise InvalidInput("run_load: give exactly one of concurrency (closed loop) or rate (open loop)")
    argv += (
        ["--concurrency", str(int(concurrency))] if concurrency is not None else ["--rate", repr(float(rate))]
    )
    if duration_s is None and requests is None:
        raise InvalidInput("run_load: give duration_s and/or requests (a run must be bounded)")
    if duration_s is not None:
        argv += ["--duration", repr(float(duration_s))]
    if requests is not None:
        argv += ["--requests", str(int(requests))]
    if cpus is not None:
        argv += ["--cpus", cpus]
    headers = opts.pop("headers", None) or []
    if isinstance(headers, Mapping):
        headers = list(headers.items())
    for k, v in headers:
        argv += ["--header", f"{k}:{v}"]
    body = opts.pop("body", None)
    if body is not None:
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        elif not isinstance(body, str):
            body = json.dumps(body)
        path = os.path.join(tmpdir, "body")
        with open(path, "w", encoding="utf-8") as f:
            f.write(body)
        argv += ["--body", "@" + path]
    if opts.pop("stream", False):
        argv.append("--stream")
    names = {
        "warmup_s": "--warmup",
        "method": "--method",
        "connections": "--connections",
        "timeout_s": "--timeout",
        "max_duration_s": "--max-duration",
        "threads": "--threads",
        "seed": "--seed",
        "arrival": "--arrival",
    }
    unknown = set(opts) - set(names)
    if unknown:
        raise InvalidInput(
            f"run_load: unknown option(s) {sorted(unknown)}; known: {sorted(names) + ['headers', 'body', 'stream']}"
        )
    for k, v in opts.items():
        if v is not None:
            argv += [names[k], str(v)]
    return argv


def run_load(
    url: str,
    concurrency: int | None = None,
    rate: float | None = None,
    duration_s: float | None = None,
    requests: int | None = None,
    cpus: int | str | Iterable[int] | None = None,
    **opts: Any,
) -> dict:
    """Run `gatewaylab load --json` in a pinned child process; return the parsed result."""
    with tempfile.TemporaryDirectory(prefix="gatewaylab-load-") as tmp:
        argv = _load_argv(url, concurrency, rate, duration_s, requests, cpus_arg(cpus), dict(opts), tmp)
        bound = (
            float(opts.get("warmup_s") or 0)
            + float(duration_s if duration_s is not None else opts.get("max_duration_s") or 600)
            + float(opts.get("timeout_s") or 10)
            + 60
        )
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=bound)
        except BaseException:
            _kill_group(proc)
            proc.communicate()
            raise
        try:
            result = json.loads(out)
        except json.JSONDecodeError as e:
            if proc.returncode != 0:
                raise NativeProcessError(
                    f"load generator failed (exit {proc.returncode}): {err.decode(errors='replace').strip()}"
                ) from None
            raise NativeProcessError(
                f"load generator printed no JSON ({e}): {out[:200]!r} {err[:500]!r}"
            ) from None
        # exit 1 with a result: every request failed (`gatewaylab load` says so on stderr); the
        # result is still the measurement, and the caller (a sweep cell) records it as failed.
        if proc.returncode not in (0, 1):
            raise NativeProcessError(
                f"load generator failed (exit {proc.returncode}): {err.decode(errors='replace').strip()}"
            )
        return result
