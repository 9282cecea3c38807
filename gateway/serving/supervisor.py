"""`--workers N`: N gateway processes on one listening socket, supervised as one unit
(docs/workers.md). This is the supervisor's side; what runs inside each worker (its place in
the unit, the control socket, /health's "workers") is gateway/serving/worker.py.

    python -m gateway.serving.server  with {"workers": N, ...} in $GATEWAYLAB_SERVE
      -> this process becomes the supervisor: it reserves the port (bound with SO_REUSEPORT,
         never listening), starts N workers that each listen on it with SO_REUSEPORT (the
         kernel spreads connections over them by hash; one shared accept queue let whichever
         worker woke first take most of a load generator's connections), pins worker k to its
         own gateway core, waits until every worker serves, announces, and then watches them.

The unit starts together (`ready` in the layout turns true once every worker serves): a worker that dies or does not come up before all are ready stops
the others and the supervisor exits 1 with that worker's output. It stops together: SIGTERM
or SIGINT to the supervisor goes to every worker, each finishes in-flight requests and drains
its audit queue, and the supervisor exits 0 when every worker did. A worker that dies later is
reported on stderr and in `workers.json`, which every worker's `/health` shows; the others go
on serving (nothing is restarted behind the operator's back). If the supervisor itself is
killed, the kernel sends the workers SIGTERM (PR_SET_PDEATHSIG): they drain and exit.

Cores: `worker_cpus` (a list per worker, from the harness's profile placement) or, unset, the
supervisor's own affinity, worker k on CPU k (mod the count). A worker that has to share a CPU
with another worker is labelled in the layout (`clamped`, `notes`).

Ledger: the layout comes from gateway.audit.shards (one place); under `sharded`, worker k's
ledger is `<ledger>/shard-k`. Every worker listens on a Unix control socket in the unit's
runtime directory, so any worker can answer `/audit/root` with every shard's root and the
combined root, and hand a proof request to the shard's owner (`gateway.serving.worker.Peers`).

Rung 3 (`rs-server`): the workers are the Rust binary, each given its spec
(gateway/rungs/rs_server.py: reuse_port, its shard as the ledger directory, its place in the unit
and the unit's runtime directory); it speaks the same control protocol (native/engine/src/unit.rs).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from gateway.audit.shards import resolve_layout, shard_dir
from gateway.audit.writer_process import SOCKET_ENV, WriterProcess
from gateway.errors import ConfigError
from gateway.options import SERVE_ENV, ServeOptions, build_config
from gateway.rungs import rs_server as rs
from gateway.serving.worker import LAYOUT_FILE, WORKER_ENV

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------- placement


def place(
    n: int, cpus: list[int], worker_cpus: Sequence[Sequence[int]] | None = None
) -> tuple[list[list[int]], list[str]]:
    """Worker k -> its CPU list, and a note for every worker that shares a CPU with another."""
    if n < 1:
        raise ConfigError(f"--workers: expected a positive integer, got {n!r}")
    if worker_cpus is not None:
        if len(worker_cpus) != n or not all(worker_cpus):
            raise ConfigError(f"worker_cpus: expected {n} non-empty CPU lists, got {worker_cpus!r}")
        placed = [sorted(int(c) for c in w) for w in worker_cpus]
    else:
        placed = [[cpus[k % len(cpus)]] for k in range(n)]
    notes = []
    for k, w in enumerate(placed):
        shared = [j for j, v in enumerate(placed) if j != k and set(v) & set(w)]
        if shared:
            notes.append(
                f"worker {k} shares cpu {','.join(map(str, w))} with worker(s) {','.join(map(str, shared))}"
            )
    return placed, notes


# ---------------------------------------------------------------- the supervisor


def _pdeathsig() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's own handlers still stop them
        pass


def supervise(opts: ServeOptions) -> int:
    """Run `opts.workers` gateway workers as one unit (module docstring). Returns the exit status."""
    n = int(opts.workers or 1)
    opts = opts.with_ledger()
    cfg = build_config(opts)  # every option checked for the rung (gateway/ladder.py)
    mode = cfg.switches.mode
    rs_server = mode == "rs-server"
    if not rs_server and cfg.server != "uvicorn":
        raise ConfigError(
            "--workers: the workers run uvicorn (granian has its own worker model); use --server uvicorn"
        )
    layout = resolve_layout(cfg.ledger_layout, n)
    ledger = cfg.ledger_dir
    # threads serving requests in a worker: the Rust rungs' Tokio workers (one unless
    # --threads says), the Python rungs' one event loop
    threads = opts.threads or 1
    cpus, notes = place(n, sorted(os.sched_getaffinity(0)), opts.worker_cpus)
    host = opts.host
    sock = reserve_port(host, opts.port)
    port = sock.getsockname()[1]
    runtime = tempfile.mkdtemp(prefix="gatewaylab-workers-")
    procs: list[subprocess.Popen] = []
    logs: list[str] = []
    writer = None  # single-writer: the one ledger process every worker hands its records to
    stopping = False
    ready = False

    def _term(signum, frame):
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)

    def layout_doc() -> dict:
        return {
            "count": n,
            "ready": ready,
            "port": port,
            "ledger": ledger,
            "ledger_layout": layout,
            "mode": mode,
            "clamped": bool(notes),
            "notes": notes,
            "workers": [
                {
                    "index": k,
                    "pid": p.pid,
                    "cpus": cpus[k],
                    "threads": threads,
                    "alive": p.poll() is None,
                    "exit": p.returncode,
                    "ledger": shard_dir(ledger, k) if layout == "sharded" else ledger,
                }
                for k, p in enumerate(procs)
            ],
        }

    def write_layout() -> None:
        tmp = os.path.join(runtime, LAYOUT_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(layout_doc(), f)
        os.replace(tmp, os.path.join(runtime, LAYOUT_FILE))

    try:
        if layout == "single-writer":
            writer = WriterProcess.start(
                ledger,
                cfg.switches,
                fsync=cfg.fsync,
                group_delay_ms=cfg.group_delay_ms,
                cpus=sorted({c for cs in cpus for c in cs}),
            )
        for k in range(n):
            wopts = opts.replace(
                workers=None,
                worker_cpus=None,
                port=port,
                reuse_port=True,
                ledger_layout=layout,
                ledger=shard_dir(ledger, k) if layout == "sharded" else ledger,
                threads=threads if mode in ("rs-core", "rs-server") else None,
            )
            info = {"index": k, "count": n, "runtime_dir": runtime, "layout": layout, "cpus": cpus[k]}
            env = dict(os.environ)
            env[SERVE_ENV] = wopts.to_json()
            env[WORKER_ENV] = json.dumps(info)
            env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
            if writer is not None:
                env[SOCKET_ENV] = writer.socket
            log = os.path.join(runtime, f"worker-{k}.log")
            logs.append(log)
            fds: tuple[int, ...] = ()
            if rs_server:
                worker = {"index": k, "count": n, "unit_dir": runtime, "layout": layout}
                fds = (rs.spec_fd(rs.spec(wopts, build_config(wopts), worker)),)
                args = rs.command(fds[0])
            else:
                args = [sys.executable, "-m", "gateway.serving.server"]
            cpu_set = set(cpus[k])

            def pre(cs=cpu_set):
                os.sched_setaffinity(0, cs)
                _pdeathsig()

            try:
                with open(log, "wb") as out:
                    procs.append(
                        subprocess.Popen(
                            args,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            env=env,
                            cwd=_ROOT,
                            preexec_fn=pre,
                            pass_fds=fds,
                        )
                    )
            finally:
                for fd in fds:
                    os.close(fd)
        write_layout()
        # the unit starts together: every worker answers on its control socket (Python) or
        # has announced itself (rs-server), or the whole unit stops
        deadline = time.monotonic() + float(os.environ.get("GATEWAYLAB_WORKERS_READY_S", "60"))
        while True:
            dead = [k for k, p in enumerate(procs) if p.poll() is not None]
            if dead or stopping:
                _term(None, None)
                _wait_all(procs)
                k = dead[0] if dead else 0
                if stopping and not dead:
                    return 0
                print(
                    f"gateway: worker {k} exited with {procs[k].returncode} before the unit was ready:\n"
                    f"{_tail(logs[k])}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            if all(_ready(runtime, k) for k in range(n)):
                break
            if time.monotonic() > deadline:
                _term(None, None)
                _wait_all(procs)
                print(
                    "gateway: the workers were not ready in time:\n" + "\n".join(_tail(x) for x in logs),
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            time.sleep(0.02)
        ready = True
        write_layout()
        print(f"gateway listening on http://{host}:{port} ({n} workers, ledger {layout})", flush=True)
        reported: set[int] = set()
        while True:
            for k, p in enumerate(procs):
                if p.poll() is not None and k not in reported:
                    reported.add(k)
                    write_layout()
                    if not stopping:
                        alive = sum(q.poll() is None for q in procs)
                        print(
                            f"gateway: worker {k} (pid {p.pid}) exited with {p.returncode}; "
                            f"{alive} of {n} workers still serving\n{_tail(logs[k])}",
                            file=sys.stderr,
                            flush=True,
                        )
            if len(reported) == n:
                break
            time.sleep(0.2)  # five wake-ups a second: the supervisor's CPU stays out of the measurements
        codes = [p.returncode for p in procs]
        return 0 if stopping and all(c == 0 for c in codes) else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if writer is not None:  # after every worker drained into it: it commits and closes the ledger
            writer.stop()
        sock.close()
        shutil.rmtree(runtime, ignore_errors=True)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT and never listening: it holds the port
    for the unit (workers bind the same port with SO_REUSEPORT and listen), and receives no
    connection itself."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"--port: cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _ready(runtime: str, k: int) -> bool:
    """A worker is ready once its control socket exists: Python workers bind it last in their
    startup, rs-server just before it announces itself."""
    return os.path.exists(os.path.join(runtime, f"worker-{k}.sock"))


def _wait_all(procs: list[subprocess.Popen], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""
