"""IPython magics: `%gateway`, `%sweep`, `%bench`, `%%profile`.

    %gateway up --mode py+rs --impl mmr=python --shell asgi --latency-ms 5
    %gateway status
    %gateway down
    r = %sweep --modes py py+rs --concurrency 1 4 16 --duration 3
    df = %bench mmr --quick
    %%profile --tool py-spy --native
    <cell>
    %%profile --tool perf --target gateway      # every thread of the gateway, e.g. rs-server
    <cell that drives it>

The gateway and its native mock upstream run as child processes on 127.0.0.1 (through
`harness.infra.native_procs.start_mock` and `gateway.serving.launch.start_gateway`); they are stopped by
`%gateway down`, when the extension is unloaded, and at interpreter exit.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from gateway.twins import MODES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_API_KEY = "sk-lab-local"


class MagicUsageError(ValueError):
    """Bad arguments to a magic: argparse's message instead of SystemExit."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would sys.exit(); a notebook wants an exception
        raise MagicUsageError(f"{self.prog}: {message}")

    def exit(self, status=0, message=None):
        if message:
            print(message, end="")
        raise MagicUsageError(f"{self.prog}: exited ({status})")


# --- the gateway session -------------------------------------------------------------------


@dataclass
class GatewaySession:
    """A native mock upstream plus a gateway in front of it, both on loopback."""

    mock: Any = None
    gateway: Any = None
    api_key: str = DEFAULT_API_KEY
    mode: str = "py"
    impl: dict[str, str] = field(default_factory=dict)
    shell: str | None = None
    started_at: float | None = None
    tracing: str = "off"
    otlp: Any = None  # harness.infra.otlp.OtlpReceiver while a traced gateway is up: `.spans()`

    @property
    def up(self) -> bool:
        return self.gateway is not None

    def start(
        self,
        mode: str = "py",
        impl: dict[str, str] | None = None,
        shell: str | None = None,
        latency_ms: float | None = None,
        api_key: str | None = None,
        tracing: str | None = None,
        **gateway_opts,
    ) -> GatewaySession:
        """`tracing` (off|on|sampled:R): spans go to a receiver this session starts (`self.otlp`)."""
        from gateway.tracing import parse_mode
        from gateway.twins import Switches

        sw = Switches.resolve(mode=mode, impl=impl or {}, env={})  # validates before anything starts
        tmode = parse_mode(tracing or "off")
        if self.up:
            self.stop()
        if tmode.enabled:
            from harness.infra.otlp import OtlpReceiver

            self.otlp = OtlpReceiver()
            gateway_opts.update(tracing=tmode.label(), tracing_endpoint=self.otlp.endpoint)
        from gateway.serving.launch import start_gateway
        from harness.infra.native_procs import start_mock

        self.api_key = api_key or self.api_key
        self.mock = start_mock(**({} if latency_ms is None else {"latency_ms": latency_ms}))
        try:
            self.gateway = start_gateway(
                self.mock.url,
                self.api_key,
                mode=sw.mode,
                impl=dict(sw.overrides) or None,
                shell=shell,
                **gateway_opts,
            )
        except BaseException:
            self.mock.stop()
            self.mock = None
            if self.otlp is not None:
                self.otlp.close()
                self.otlp = None
            raise
        self.mode, self.impl, self.shell, self.started_at = sw.mode, dict(sw.overrides), shell, time.time()
        self.tracing = tmode.label()
        return self

    def stop(self) -> None:
        gw, mock, rx = self.gateway, self.mock, self.otlp
        self.gateway = self.mock = self.otlp = None
        try:
            if gw is not None:
                gw.stop()
        finally:
            if mock is not None:
                mock.stop()
            if rx is not None:  # after the gateway: it exports its last spans as it stops
                rx.close()

    def health(self, timeout: float = 2.0) -> str:
        if not self.up:
            return "down"
        try:
            with urllib.request.urlopen(f"{self.gateway.url}/health", timeout=timeout) as r:
                return f"{r.status} {r.read(200).decode('utf-8', 'replace').strip()}"
        except Exception as e:  # noqa: BLE001 - status must report, not raise
            return f"unreachable ({e})"

    def status(self) -> dict[str, Any]:
        if not self.up:
            return {"state": "down"}
        from gateway.twins import Switches

        return {
            "state": "up",
            "url": self.gateway.url,
            "pid": getattr(self.gateway, "pid", None),
            "mock_url": self.mock.url,
            "mock_pid": getattr(self.mock, "pid", None),
            "mode": self.mode,
            "switches": Switches(self.mode, self.impl).label(),
            "shell": self.shell or "asgi (default)",
            "tracing": self.tracing
            + (
                f" ({len(self.otlp.spans())} spans received at {self.otlp.endpoint})"
                if self.otlp is not None
                else ""
            ),
            "api_key": self.api_key,
            "uptime_s": round(time.time() - (self.started_at or time.time()), 1),
            "health": self.health(),
        }


_SESSION = GatewaySession()
atexit.register(_SESSION.stop)


def session() -> GatewaySession:
    """The notebook's gateway session (one per kernel)."""
    return _SESSION


# --- benchmarks ----------------------------------------------------------------------------


def run_bench(
    name: str,
    args: list[str] | None = None,
    json_out: str | Path | None = None,
    quiet: bool = False,
    timeout_s: float | None = 1800,
) -> dict:
    """Run `gatewaylab bench NAME ARGS --json OUT` in a child process (pyperf spawns its own
    workers, which a kernel cannot host) and return the parsed JSON."""
    args = list(args or [])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(json_out) if json_out else Path(tmp) / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "harness.cli", "bench", name, *args, "--json", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        if not quiet and proc.stdout.strip():
            print(proc.stdout.rstrip())
        if proc.returncode != 0:
            raise RuntimeError(
                f"`gatewaylab bench {name} {' '.join(args)}` failed (exit {proc.returncode}):\n"
                f"{proc.stderr.strip()[-3000:]}"
            )
        return json.loads(out.read_text())


def bench_frame(name: str, data: dict):
    """The benchmark's rows as a DataFrame (the full JSON stays in `df.attrs['raw']`)."""
    import pandas as pd

    rows = data.get("rows") if isinstance(data, dict) else None
    df = pd.DataFrame(rows) if isinstance(rows, list) else pd.json_normalize(data)
    df.attrs["raw"] = data
    df.attrs["bench"] = name
    return df


# --- sweeps --------------------------------------------------------------------------------


def sweep_parser() -> argparse.ArgumentParser:
    """The CLI's own `gatewaylab sweep` options (one definition), plus `--no-panel`."""
    p = _Parser(prog="%sweep", add_help=True)
    from harness.commands import sweep as sweep_cmd

    sweep_cmd.add_arguments(p)
    p.add_argument("--no-panel", action="store_true", help="do not show the live sweep panel")
    return p


def sweep_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Parsed CLI options -> `run_sweep` keywords: the sweep command's own mapping."""
    from harness.commands import sweep as sweep_cmd

    return dict(sweep_cmd.sweep_kwargs(args))


def run_sweep_with_panel(panel=None, **kwargs):
    """`harness.infra.sweep.run_sweep(**kwargs)` with a live panel fed through `on_cell`."""
    from harness.infra.sweep import run_sweep

    if panel is not None:
        user_cb = kwargs.pop("on_cell", None)

        def on_cell(cell):
            panel.on_cell(cell)
            if user_cb:
                user_cb(cell)

        kwargs["on_cell"] = on_cell
        kwargs.setdefault("progress", False)
    result = run_sweep(**kwargs)
    if panel is not None:
        panel.done(result)
    return result


# --- the magics ----------------------------------------------------------------------------


@magics_class
class LabMagics(Magics):
    # %gateway up|down|status
    @line_magic
    def gateway(self, line: str):
        p = _Parser(prog="%gateway")
        p.add_argument("action", choices=["up", "down", "status"])
        p.add_argument("--mode", choices=list(MODES), default="py")
        p.add_argument("--impl", action="append", default=[], metavar="COMPONENT=python|rust")
        p.add_argument(
            "--stages", default=None, metavar="all|none|LIST", help="hot-path stages (default all)"
        )
        p.add_argument("--audit", choices=["on", "off"], default=None, help="audit ledger (default on)")
        p.add_argument(
            "--tracing",
            default=None,
            metavar="off|on|sampled:R",
            help="OpenTelemetry spans to a local receiver (default off; session().otlp.spans())",
        )
        p.add_argument("--shell", choices=["fastapi", "asgi"], default=None)
        p.add_argument("--latency-ms", type=float, default=None, help="mock upstream latency")
        p.add_argument("--api-key", default=None)
        p.add_argument("--quiet", action="store_true")
        a = p.parse_args(shlex.split(line))
        s = session()
        if a.action == "up":
            from gateway.twins import parse_impl

            s.start(
                mode=a.mode,
                impl=parse_impl(a.impl),
                shell=a.shell,
                latency_ms=a.latency_ms,
                api_key=a.api_key,
                stages=a.stages,
                audit=a.audit,
                tracing=a.tracing,
            )
            if not a.quiet:
                print(
                    f"gateway up at {s.gateway.url} (mode {s.mode}, switches {s.status()['switches']}) "
                    f"-> mock {s.mock.url}; API key {s.api_key}"
                )
            return None
        if a.action == "down":
            was = s.up
            s.stop()
            if not a.quiet:
                print("gateway stopped" if was else "gateway was not running")
            return None
        st = s.status()
        if not a.quiet:
            width = max(map(len, st))
            print("\n".join(f"{k:<{width}}  {v}" for k, v in st.items()))
        return None

    # %sweep (the CLI's options)
    @line_magic
    def sweep(self, line: str):
        p = sweep_parser()
        a = p.parse_args(shlex.split(line))
        kwargs = sweep_kwargs(a)
        panel = None
        if not a.no_panel:
            from IPython.display import display

            from lab_ext.widgets import SweepPanel

            panel = SweepPanel.for_sweep(kwargs)
            display(panel.widget)
        return run_sweep_with_panel(panel, **kwargs)

    # %bench NAME [options]: every `gatewaylab bench` benchmark (instructions included)
    @line_magic
    def bench(self, line: str):
        from harness.commands.bench import _available

        names = _available()
        argv = shlex.split(line)
        if not argv or argv[0] in ("-h", "--help"):
            print(f"usage: %bench {'|'.join(names)} [benchmark options, e.g. --quick]")
            return None
        name, rest = argv[0], argv[1:]
        if name not in names:
            raise MagicUsageError(f"%bench: unknown benchmark {name!r}; expected {'|'.join(names)}")
        # instruction counts run targets under valgrind for many minutes; their own steps are bounded
        return bench_frame(name, run_bench(name, rest, timeout_s=None if name == "instructions" else 1800))

    # %%profile [--tool py-spy|perf|scalene] [--target kernel|gateway|PID]
    @cell_magic
    def profile(self, line: str, cell: str):
        p = _Parser(prog="%%profile")
        p.add_argument("--tool", choices=["py-spy", "perf", "scalene"], default="py-spy")
        p.add_argument(
            "--target",
            default="kernel",
            help="the process to profile while the cell runs: kernel (this one, default), gateway "
            "(the %%gateway session's) or a pid (a peer, say); py-spy and perf only",
        )
        p.add_argument(
            "--out", default=None, help="folder for the profile (default: a temp folder kept for the session)"
        )
        p.add_argument("--rate", type=int, default=None, help="samples per second (py-spy 250, perf 99)")
        p.add_argument("--native", action="store_true", help="py-spy: include native (Rust/C) frames")
        p.add_argument("--format", choices=["flamegraph", "speedscope"], default="flamegraph")
        a = p.parse_args(shlex.split(line))
        pid = profile_target(a.target, a.tool)
        out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="lab-profile-"))
        out.mkdir(parents=True, exist_ok=True)
        if a.tool == "py-spy":
            return profile_with_pyspy(
                self.shell, cell, out, rate=a.rate or 250, native=a.native, fmt=a.format, pid=pid
            )
        if a.tool == "perf":
            return profile_with_perf(self.shell, cell, out, pid, rate=a.rate or 99)
        return profile_with_scalene(cell, out)


def _exe(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def profile_target(target: str, tool: str) -> int:
    """`--target` -> a pid: this kernel, the session's gateway (its app process), or a pid.
    py-spy on a process without an interpreter is refused in one line naming perf."""
    if target == "kernel":
        return os.getpid()
    if tool == "scalene":
        raise MagicUsageError("%%profile: scalene runs the cell itself; --target is for py-spy and perf")
    if target == "gateway":
        s = session()
        if not s.up:
            raise MagicUsageError("%%profile --target gateway: no gateway is up (%gateway up --mode ...)")
        from gateway.twins import NO_INTERPRETER_MODES, NOT_APPLICABLE

        if tool == "py-spy" and s.mode in NO_INTERPRETER_MODES:
            raise MagicUsageError(f"%%profile --tool py-spy: {s.mode}: {NOT_APPLICABLE}; use --tool perf")
        return int(s.gateway.app_pid)
    try:
        pid = int(target)
    except ValueError:
        raise MagicUsageError(f"%%profile --target {target!r}: expected kernel, gateway or a pid") from None
    if not Path(f"/proc/{pid}").exists():
        raise MagicUsageError(f"%%profile --target {pid}: no such process")
    return pid


def profile_with_perf(shell, cell: str, out: Path, pid: int, rate: int = 99) -> Path:
    """perf on every thread of `pid` while the cell runs (folded and drawn by inferno); the
    flamegraph is shown inline with its label. A missing perf or inferno is one line."""
    from harness.profilers import perf

    why = perf.missing_tools()
    if why:
        raise MagicUsageError(f"%%profile --tool perf: {why}")
    stem = f"profile-{time.strftime('%H%M%S')}"
    res = perf.record(
        pid,
        None,
        out,
        stem,
        rate=rate,
        load=lambda: shell.run_cell(cell),
        title=f"%%profile cell: every thread of pid {pid} (perf)",
    )
    if res["svg"] is None:
        raise RuntimeError(f"perf wrote no flamegraph: {res['missing']}")
    from IPython.display import SVG, display

    display(SVG(filename=res["svg"]))
    threads = ", ".join(f"{n} ({k})" for n, k in res["threads"].items())
    print(f"{res['label']}; {res['process']}; threads (samples): {threads}")
    print(f"perf profile: {res['svg']} · speedscope: {res['speedscope']}")
    return Path(res["svg"])


def profile_with_pyspy(
    shell,
    cell: str,
    out: Path,
    rate: int = 250,
    native: bool = False,
    fmt: str = "flamegraph",
    pid: int | None = None,
) -> Path:
    """Attach py-spy to this kernel (or `pid`) while the cell runs; the flamegraph is shown inline."""
    pid = os.getpid() if pid is None else pid
    ext = "svg" if fmt == "flamegraph" else "speedscope.json"
    path = out / f"profile-{time.strftime('%H%M%S')}.{ext}"
    cmd = [
        _exe("py-spy"),
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--format",
        fmt,
        "--output",
        str(path),
    ]
    # native frames need py-spy to pause the process per sample; without them, do not pause
    cmd.append("--native" if native else "--nonblocking")
    spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # let py-spy attach before the cell starts
        if spy.poll() is not None:
            raise RuntimeError(f"py-spy could not attach: {spy.stderr.read().strip()}")
        shell.run_cell(cell)
    finally:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
    if not path.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.strip()[-1000:]}")
    from IPython.display import SVG, display

    if fmt == "flamegraph":
        display(SVG(filename=str(path)))
    print(
        f"sampled (py-spy{' --native' if native else ''}, {rate} Hz); pid {pid}; the Python threads"
        f"\npy-spy profile: {path}"
    )
    return path


def profile_with_scalene(cell: str, out: Path) -> Path:
    """Scalene cannot attach to a running kernel: the cell runs as a script in a child
    process under `scalene run` (so it must be self-contained), and the top lines by
    CPU time are shown."""
    script = out / "cell.py"
    script.write_text(cell)
    path = out / "scalene-profile.json"
    proc = subprocess.run(
        [_exe("scalene"), "run", "--cpu-only", "-o", str(path), str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0 or not path.exists():
        raise RuntimeError(f"scalene failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    import pandas as pd
    from IPython.display import display

    data = json.loads(path.read_text())
    rows = []
    for _fname, f in data.get("files", {}).items():
        for ln in f.get("lines", []):
            py, nat, sys_ = (
                ln.get(k, 0.0) for k in ("n_cpu_percent_python", "n_cpu_percent_c", "n_sys_percent")
            )
            if py + nat + sys_ > 0:
                rows.append(
                    {
                        "line": ln.get("lineno"),
                        "code": ln.get("line", "").rstrip(),
                        "python %": py,
                        "native %": nat,
                        "system %": sys_,
                    }
                )
    df = pd.DataFrame(rows)
    if not df.empty:
        df["total %"] = df["python %"] + df["native %"] + df["system %"]
        display(df.sort_values("total %", ascending=False).head(15))
    print(
        f"scalene profile: {path} (elapsed {data.get('elapsed_time_sec', data.get('elapsed_time_seconds', '?'))} s)"
    )
    return path
