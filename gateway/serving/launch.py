"""Start a gateway as a child process (for tests, sweeps and notebooks).

    with start_gateway("http://127.0.0.1:9000", "sk-test", mode="py", cpus=[0]) as gw:
        requests.post(gw.url + "/v1/chat/completions", ...)
    # leaving the block sends SIGTERM: the gateway drains its audit queue and exits

The child listens on 127.0.0.1 on a free port and is pinned to `cpus` (sched_setaffinity,
inherited by granian's worker). `start_gateway` returns once /health answers; if the child
dies or does not come up in `ready_timeout` s, it raises with the child's output.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping

from gateway.options import SERVE_ENV, ServeOptions

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class GatewayProcess:
    def __init__(self, proc: subprocess.Popen, url: str, ledger_dir: str | None, log_path: str):
        self.proc = proc
        self.url = url
        self.ledger_dir = ledger_dir
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
            return json.loads(r.read())

    def worker_pids(self) -> list[int]:
        """The pids serving requests: every live worker of a unit, else the app's process."""
        h = self.health()
        return (
            [w["pid"] for w in h["workers"]["workers"] if w["alive"]]
            if h["workers"]["layout"] == "workers"
            else [int(h["pid"])]
        )

    @property
    def app_pid(self) -> int:
        """The pid of the process running the app (granian runs it in a worker child)."""
        return int(self.health()["pid"])

    def output(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful: the audit queue drains), then SIGKILL after `timeout` s."""
        p = self.proc
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:  # a loaded machine can take a while to reap
                self.proc.wait(60)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # last resort: never leave a child behind
        try:
            self.kill()
        except Exception:
            pass


def start_gateway(
    upstream_url: str | None,
    api_key: str | None,
    mode: str = "py",
    impl: str | Iterable[str] | Mapping[str, str] | None = None,
    shell: str | None = None,
    server: str | None = None,
    ledger_dir: str | None = None,
    cpus: Iterable[int] | None = None,
    env: Mapping[str, str] | None = None,
    config: str | None = None,
    ready_timeout: float = 60.0,
    wrapper: Iterable[str] | None = None,
    stages: str | None = None,
    audit: str | None = None,
    threads: int | None = None,
    workers: int | None = None,
    worker_cpus: Iterable[Iterable[int]] | None = None,
    ledger_layout: str | None = None,
    tracing: str | None = None,
    tracing_endpoint: str | None = None,
    ack: str | None = None,
    max_in_flight: int | None = None,
    python: str | None = None,
) -> GatewayProcess:
    """The serve options (gateway.options.ServeOptions; None: the config's value) and how to
    run the child. `workers` N: a unit of N worker processes on one port (gateway/serving/supervisor.py);
    the child is their supervisor, pinned to the union of `worker_cpus` (worker k on
    `worker_cpus[k]`) or to `cpus` (worker k on the k-th of them). `shell` and `server` apply
    to the Python rungs (gateway/ladder.py); rs-server refuses them.

    `python`: run the gateway with this venv's interpreter and the project installed there
    (harness.infra.interpreters), not this checkout: the child starts in the venv, without the
    checkout on its path."""
    port = free_port()
    if ledger_dir is None and config is None:
        ledger_dir = tempfile.mkdtemp(prefix="gatewaylab-ledger-")
    if isinstance(impl, Mapping):
        impl = [f"{k}={v}" for k, v in impl.items()]
    elif isinstance(impl, str):
        impl = [impl]
    # the options `gateway.serving.server.serve` takes, carried in its environment variable:
    # the gateway starts itself (python -m gateway.serving.server), never through the harness's CLI
    opts = ServeOptions(
        config=config,
        upstream=None if config else upstream_url,
        api_key=None if config else api_key,
        ledger=ledger_dir,
        mode=mode or None,
        impl=tuple(impl or ()),
        shell=shell,
        server=server,
        stages=stages,
        audit=audit,
        ack=ack,
        max_in_flight=max_in_flight,
        host="127.0.0.1",
        port=port,
        threads=threads,
        workers=workers,
        ledger_layout=ledger_layout,
        worker_cpus=tuple(tuple(sorted(w)) for w in worker_cpus) if worker_cpus is not None else None,
        tracing=tracing,
        tracing_endpoint=tracing_endpoint,
    )
    if opts.worker_cpus is not None and cpus is None:
        cpus = sorted({c for w in opts.worker_cpus for c in w})
    if python is not None and wrapper:
        raise ValueError(
            "start_gateway: a wrapper runs the checkout's gateway/serving/server.py, not a venv's"
        )
    args = [python or sys.executable, "-m", "gateway.serving.server"]
    if (
        wrapper
    ):  # a profiler that runs a script; "{script}" marks where gateway/serving/server.py goes (default: last)
        script = os.path.join(_ROOT, "gateway", "serving", "server.py")
        w = [script if a == "{script}" else a for a in wrapper]
        args = [*w, *([] if "{script}" in wrapper else [script])]
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env[SERVE_ENV] = opts.to_json()
    if python is None:
        child_env["PYTHONPATH"] = _ROOT + os.pathsep + child_env.get("PYTHONPATH", "")
        cwd = _ROOT
    else:  # the venv's own install: nothing of the checkout on sys.path (not even the cwd)
        child_env.pop("PYTHONPATH", None)
        cwd = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    cpu_set = set(cpus) if cpus is not None else None
    log = tempfile.NamedTemporaryFile(prefix="gatewaylab-gateway-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env,
        cwd=cwd,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpu_set)) if cpu_set else None,
    )
    log.close()
    gp = GatewayProcess(proc, f"http://127.0.0.1:{port}", ledger_dir, log.name)
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode} before it was ready:\n{gp.output()}")
        try:
            if gp.health()["workers"]["ready"]:  # a unit of workers: once every one serves
                return gp
        except OSError:
            pass
        if time.monotonic() > deadline:
            gp.kill()
            raise RuntimeError(f"gateway not ready after {ready_timeout}s:\n{gp.output()}")
        time.sleep(0.05)
