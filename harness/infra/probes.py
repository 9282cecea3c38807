"""Probes that watch the gateway from outside its process (docs/architecture.md "Measurements").

- ``TreeSampler``: gateway process-tree CPU (user + sys seconds from /proc/<pid>/stat,
  threads included; children included; exact at clock-tick resolution) and peak RSS of the
  tree during the window (sampled at 20 Hz), plus the main process's VmHWM after resetting
  it at window start (exact, when /proc/<pid>/clear_refs is writable).
- ``PySpyGil``: ``py-spy record --gil --idle --threads --format raw`` over the window; the
  raw output is parsed into per-thread GIL ownership shares (labelled *sampled*).
- ``record_flamegraph``: ``py-spy record --native`` as an SVG flamegraph and a speedscope JSON.
- ``scalene_command``: the command prefix that runs the gateway under scalene.

A probe that cannot run returns a ``missing`` reason instead of empty figures.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _venv_bin(name: str) -> str | None:
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    return shutil.which(name)


# ---------------------------------------------------------------- CPU and RSS of a tree


def _read_stat(pid: int) -> tuple[int, int, int, int] | None:
    """(utime, stime, cutime, cstime) in clock ticks, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data[data.rindex(")") + 2 :].split()
    # fields after ")" start at field 3 (state); utime is field 14 -> index 11
    return int(rest[11]), int(rest[12]), int(rest[13]), int(rest[14])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            out += kids
            stack += kids
    return out


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def _hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def thread_cpu(pid: int) -> dict[str, float]:
    """Per-thread user+sys CPU seconds so far: {'name (tid)': seconds}."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                data = f.read().decode()
        except FileNotFoundError:
            continue
        name = data[data.index("(") + 1 : data.rindex(")")]
        rest = data[data.rindex(")") + 2 :].split()
        out[f"{name} ({tid})"] = (int(rest[11]) + int(rest[12])) / CLK_TCK
    return out


class TreeSampler:
    """CPU (exact, /proc) and peak RSS (sampled) of a process tree over a window."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: dict[str, Any] = {}

    def _snapshot(self) -> dict[int, tuple[int, int, int, int]]:
        snap = {}
        for p in [self.pid, *_children(self.pid)]:
            s = _read_stat(p)
            if s is not None:
                snap[p] = s
        return snap

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = sum(_rss_bytes(p) for p in [self.pid, *_children(self.pid)])
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval_s)

    def start(self) -> TreeSampler:
        self.hwm_reset = False
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.hwm_reset = True
        except OSError:
            pass
        self.t0 = time.monotonic()
        self.s0 = self._snapshot()
        self.threads0 = thread_cpu(self.pid)
        self._thread = threading.Thread(target=self._loop, name="gatewaylab-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        s1 = self._snapshot()
        t1 = time.monotonic()
        threads1 = thread_cpu(self.pid)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        user = sys_ = 0
        for p, (u, s, cu, cs) in s1.items():
            u0, s0_, cu0, cs0 = self.s0.get(p, (0, 0, cu, cs))
            user += (u - u0) + (cu - cu0)  # reaped children land in cutime/cstime
            sys_ += (s - s0_) + (cs - cs0)
        for p, (u0, s0_, _, _) in self.s0.items():
            if p not in s1:  # exited during the window: its parent's cutime counted its total
                user -= u0
                sys_ -= s0_
        wall = t1 - self.t0
        hwm = _hwm_kb(self.pid)
        self.result = {
            "wall_s": wall,
            "cpu_user_s": max(user, 0) / CLK_TCK,
            "cpu_sys_s": max(sys_, 0) / CLK_TCK,
            "cpu_cores": max(user + sys_, 0) / CLK_TCK / wall if wall > 0 else None,
            "rss_peak_mb": self.peak_rss / 2**20 if self.peak_rss else None,
            "rss_hwm_mb": hwm / 1024 if (hwm is not None and self.hwm_reset) else None,
            "threads_cpu_s": {k: v - self.threads0.get(k, 0.0) for k, v in threads1.items()},
            "missing": [] if self.hwm_reset else ["rss_hwm: /proc/<pid>/clear_refs not writable"],
        }
        return self.result


# ---------------------------------------------------------------- py-spy

_THREAD_RE = re.compile(r"^thread \((0x[0-9a-fA-F]+|\d+)\)(?::\s*([^;]*))?")
_SAMPLES_RE = re.compile(r"Samples:\s*(\d+)\s+Errors:\s*(\d+)")


def parse_pyspy_raw(text: str) -> dict[str, int]:
    """Raw (collapsed) py-spy output with --threads -> {thread label: samples}."""
    per: dict[str, int] = {}
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        first = stack.split(";", 1)[0]
        m = _THREAD_RE.match(first)
        label = f"{(m.group(2) or '').strip() or 'thread'} ({m.group(1)})" if m else first
        per[label] = per.get(label, 0) + n
    return per


def pyspy_available() -> tuple[bool, str | None]:
    exe = _venv_bin("py-spy")
    if exe is None:
        return False, "py-spy executable not found"
    return True, None


def _preexec(cpus: list[int] | None):
    def fn():
        os.setsid()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return fn


class PySpyGil:
    """GIL view 1 (sampled): py-spy --gil --idle over a window, parsed per thread."""

    LABEL = "sampled"

    def __init__(
        self,
        pid: int,
        duration_s: int,
        out_raw: Path,
        rate: int = 100,
        cpus: list[int] | None = None,
        main_tid: int | None = None,
        nonblocking: bool = True,
    ) -> None:
        self.pid, self.duration_s, self.out_raw, self.rate, self.cpus = (
            pid,
            duration_s,
            Path(out_raw),
            rate,
            cpus,
        )
        self.nonblocking = nonblocking
        self.main_tid = main_tid or pid
        self.proc: subprocess.Popen | None = None
        self.missing: str | None = None

    def start(self) -> PySpyGil:
        ok, why = pyspy_available()
        if not ok:
            self.missing = why
            return self
        # --nonblocking: never pause the gateway during a measured window (a paused process
        # would inflate the latency and loop-lag figures being measured at the same time);
        # GIL ownership is one read of the interpreter's current thread state per tick.
        cmd = [
            _venv_bin("py-spy"),
            "record",
            "--gil",
            "--idle",
            "--threads",
            "--format",
            "raw",
            "--rate",
            str(self.rate),
            "--duration",
            str(max(1, round(self.duration_s))),
            "--pid",
            str(self.pid),
            "--output",
            str(self.out_raw),
        ]
        if self.nonblocking:
            cmd.append("--nonblocking")
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=_preexec(self.cpus),
            )
            _LIVE.add(self.proc)
        except OSError as e:
            self.missing = f"py-spy could not start: {e}"
        return self

    def stop(self, timeout: float = 15.0) -> dict[str, Any]:
        res: dict[str, Any] = {
            "label": self.LABEL,
            "available": False,
            "reason": self.missing,
            "threads": {},
            "samples": 0,
        }
        if self.proc is None:
            return res
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            out, _ = self.proc.communicate()
            res["reason"] = "py-spy did not finish in time"
            return res
        finally:
            _LIVE.discard(self.proc)
        if self.proc.returncode != 0:
            tail = " ".join((out or "").strip().splitlines()[-3:])
            if "ptrace" in (out or "").lower() or "permission" in (out or "").lower():
                res["reason"] = f"py-spy cannot attach (ptrace not permitted): {tail}"
            else:
                res["reason"] = f"py-spy exited {self.proc.returncode}: {tail}"
            return res
        m = _SAMPLES_RE.search(out or "")
        text = self.out_raw.read_text() if self.out_raw.exists() else ""
        per = parse_pyspy_raw(text)
        traces = int(m.group(1)) if m else sum(per.values())
        # py-spy's "Samples" counts kept traces (one per GIL-holding thread per tick), not ticks:
        # the denominator is the number of ticks, rate x duration.
        total = int(self.rate * max(1, round(self.duration_s)))
        if m is None:
            res["reason"] = f"py-spy printed no sample summary: {(out or '').strip()[-200:]}"
            return res
        main = {
            k: v
            for k, v in per.items()
            if k.endswith(f"({self.main_tid})") or k.endswith(f"({hex(self.main_tid)})")
        }
        held = sum(per.values())
        res.update(
            available=True,
            reason=None,
            samples=total,
            traces=traces,
            threads=per,
            held_share=min(held / total, 1.0),
            main_share=min(sum(main.values()) / total, 1.0),
            other_share=min((held - sum(main.values())) / total, 1.0),
            main_threads=sorted(main),
            behind="behind in sampling" in (out or ""),
        )
        return res


def record_flamegraph(
    pid: int,
    duration_s: float,
    out_dir: Path,
    stem: str,
    rate: int = 100,
    cpus: list[int] | None = None,
    load=None,
) -> dict[str, Any]:
    """`py-spy record --native` twice over consecutive windows: SVG flamegraph, speedscope JSON.

    `load()` (optional) drives load for one window; it is called once per format while
    py-spy records (py-spy can only record one format per run, and one tracer may attach).
    """
    ok, why = pyspy_available()
    out = {"svg": None, "speedscope": None, "missing": None}
    if not ok:
        out["missing"] = why
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt, suffix, key in (("flamegraph", ".svg", "svg"), ("speedscope", ".speedscope.json", "speedscope")):
        path = out_dir / f"{stem}{suffix}"
        cmd = [
            _venv_bin("py-spy"),
            "record",
            "--native",
            "--format",
            fmt,
            "--rate",
            str(rate),
            "--duration",
            str(max(1, round(duration_s))),
            "--pid",
            str(pid),
            "--output",
            str(path),
        ]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_preexec(cpus)
        )
        _LIVE.add(proc)
        try:
            if load is not None:
                time.sleep(0.2)
                load()
            text, _ = proc.communicate(timeout=duration_s + 30)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            text = "timeout"
        finally:
            _LIVE.discard(proc)
        if proc.returncode == 0 and path.exists():
            out[key] = str(path)
        else:
            out["missing"] = (
                f"py-spy --native ({fmt}) failed: {' '.join((text or '').strip().splitlines()[-2:])}"
            )
    return out


def scalene_command(out_json: Path) -> tuple[list[str] | None, str | None]:
    """Command prefix running a Python module under scalene (CLI, JSON out), or a reason why not."""
    exe = _venv_bin("scalene")
    if exe is None:
        return None, "scalene not installed"
    root = str(Path(__file__).resolve().parents[2])
    # scalene writes its profile at a normal exit, but a signalled uvicorn/uvloop server exits
    # without it; --profile-interval makes it rewrite the (cumulative) profile every second.
    return [
        sys.executable,
        "-m",
        "scalene",
        "run",
        "--outfile",
        str(out_json),
        "--program-path",
        root,
        "--profile-interval",
        "1",
        "{script}",
        "---",
    ], None


# ---------------------------------------------------------------- process hygiene

_LIVE: set[subprocess.Popen] = set()


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 3.0) -> None:
    """Stop a child we started in its own session (process group), escalating to SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=wait)


def cleanup_all() -> None:
    for p in list(_LIVE):
        kill_group(p)
        _LIVE.discard(p)


import atexit as _atexit  # noqa: E402

_atexit.register(cleanup_all)
