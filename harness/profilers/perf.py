"""Native flamegraphs of any process: `perf record -e cpu-clock`, folded and drawn by inferno.

    res = record(pid, 3.0, out_dir, "rs-server-c016", rate=99, cpus=[1], load=drive)
    res["svg"], res["speedscope"], res["folded"]   # paths (None when not written)
    res["label"]      # "sampled (perf cpu-clock, 99 Hz)"
    res["process"]    # "pid 4242 (gatewaylab-serv): native/target/release/gatewaylab-server ..."
    res["threads"]    # {"tokio-runtime-w": 180, "gatewaylab-serv": 3, ...} samples per thread name
    res["unwound_share"]  # share of samples unwound whole (no `[unknown]` frame)
    res["missing"]    # one line saying why nothing was drawn, or None

How the samples are taken (one choice for every process, checked on our release builds):

- **event** `cpu-clock`: the kernel's software timer. Machines of this kind expose no
  hardware counters, and a software clock samples on-CPU time alike everywhere.
- **call graphs** `--call-graph dwarf`: the stack is copied at each sample and unwound
  afterwards from the binary's unwind tables. Our release builds (like most Rust and C
  binaries) omit frame pointers, so `--call-graph fp` stops after one or two frames; DWARF
  unwinding gives whole stacks for our crates (`[profile.release] debug = 1` adds the line
  tables that name inlined frames) and for the peers' binaries (their `.eh_frame`).
- **every thread** of the process (`-p PID`): the root frame of each stack is its thread's
  name (`tokio-runtime-w`, `python3`, `gatewaylab-ledg`...), so the graph says which threads
  it covers. Kernel frames carry inferno's `_[k]` suffix, JIT frames `_[j]`.
- **JIT code** (Node.js): perf can name V8's compiled functions only from the map file node
  writes with `--perf-basic-prof` (`/tmp/perf-<pid>.map`); `PERF_MAP_ENV` is the environment
  that turns it on. Without it JIT frames are bare addresses.

inferno (`cargo install inferno --locked`, `make flame-tools`) folds `perf script` output
(`inferno-collapse-perf`) and draws the SVG (`inferno-flamegraph`). The folded stacks are
also written as a speedscope JSON file (speedscope's "sampled" profile, one per thread name).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.infra.probes import _LIVE, _preexec, kill_group

EVENT = "cpu-clock"
CALL_GRAPH = "dwarf,65528"  # bytes of stack copied per sample (the most perf takes)
INSTALL_HINT = "`make flame-tools` installs it (cargo install inferno --locked)"
# node: write /tmp/perf-<pid>.map for JIT code, and give interpreted JS frames their own
# native frames, so perf names both (https://nodejs.org/en/learn/diagnostics/poor-performance/using-linux-perf)
PERF_MAP_ENV = {"NODE_OPTIONS": "--perf-basic-prof --interpreted-frames-native-stack"}
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def label(rate: int) -> str:
    """The measurement label of a perf flamegraph (sampled, like py-spy's)."""
    return f"sampled (perf {EVENT}, {int(rate)} Hz)"


def find(name: str) -> str | None:
    """An executable on PATH, or in cargo's bin folder (where `cargo install` puts inferno)."""
    hit = shutil.which(name)
    if hit:
        return hit
    cargo_bin = Path(os.environ.get("CARGO_HOME") or Path.home() / ".cargo") / "bin" / name
    return str(cargo_bin) if os.access(cargo_bin, os.X_OK) else None


def missing_tools(need_perf: bool = True) -> str | None:
    """One line naming what is missing for a native flamegraph, or None when all is there."""
    if need_perf and find("perf") is None:
        return "perf not found (Debian: apt-get install linux-perf)"
    lacking = [t for t in ("inferno-collapse-perf", "inferno-flamegraph") if find(t) is None]
    if lacking:
        return f"inferno not found ({', '.join(lacking)}): {INSTALL_HINT}"
    return None


def describe_process(pid: int) -> str:
    """`pid 42 (comm): argv...` for the label (argv shortened)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    cmd = " ".join(a.decode(errors="replace") for a in argv if a)
    root = str(Path(__file__).resolve().parents[2]) + os.sep
    cmd = cmd.replace(root, "")
    return f"pid {pid} ({comm}): {cmd[:160]}{'...' if len(cmd) > 160 else ''}"


def thread_names(pid: int) -> Counter:
    """How many threads of the process carry each name, now."""
    names: Counter = Counter()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                names[Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()] += 1
            except OSError:
                continue
    except OSError:
        pass
    return names


def _tail(text: str, n: int = 2) -> str:
    return " ".join((text or "").strip().splitlines()[-n:])[-300:]


def record(
    pid: int,
    duration_s: float | None,
    out_dir: Path,
    stem: str,
    rate: int = 99,
    cpus: list[int] | None = None,
    load: Callable[[], Any] | None = None,
    title: str | None = None,
    keep_data: bool = False,
) -> dict[str, Any]:
    """Sample every thread of `pid` for `duration_s` with perf; fold and draw with inferno.

    `load()` (optional) drives the process while perf records (called once, 0.2 s after perf
    starts); with `duration_s=None` perf records until `load()` returns. perf runs pinned to
    `cpus` (the harness's cores). The perf.data file is deleted after folding unless
    `keep_data` (DWARF samples are large; the folded file is the record).
    """
    out: dict[str, Any] = {
        "tool": "perf",
        "svg": None,
        "speedscope": None,
        "folded": None,
        "label": label(rate),
        "process": describe_process(pid),
        "threads": {},
        "samples": 0,
        "unwound_share": None,
        "missing": missing_tools(),
    }
    if out["missing"]:
        return out
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / f"{stem}.perf.data"
    cmd = [
        find("perf"),
        "record",
        "-e",
        EVENT,
        "-F",
        str(int(rate)),
        "--call-graph",
        CALL_GRAPH,
        "-p",
        str(pid),
        "-o",
        str(data),
    ]
    if duration_s is not None:
        cmd += ["--", "sleep", f"{max(0.5, float(duration_s)):g}"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_preexec(cpus)
    )
    _LIVE.add(proc)
    try:
        time.sleep(0.2)  # perf attached before the load starts
        if load is not None:
            load()
        if duration_s is None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # perf writes its data and exits on SIGINT
        text, _ = proc.communicate(timeout=(duration_s or 0) + 60)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        text = "timeout"
    finally:
        if proc.poll() is None:
            kill_group(proc)
        _LIVE.discard(proc)
    if proc.returncode not in (0, -signal.SIGINT) or not data.exists():
        out["missing"] = f"perf record failed (exit {proc.returncode}): {_tail(text)}"
        return out
    try:
        folded = out_dir / f"{stem}.perf.folded"
        fold(data, folded, cpus=cpus)
        lines = folded.read_text().splitlines()
        out["threads"] = dict(thread_samples(lines).most_common())
        out["samples"] = sum(out["threads"].values())
        out["unwound_share"] = unwound_share(lines)
        out["folded"] = str(folded)
        if not lines:
            out["missing"] = "perf recorded no samples (the process did not run on a CPU in the window)"
            return out
        names = ", ".join(f"{n} ({k})" for n, k in list(out["threads"].items())[:6])
        svg = out_dir / f"{stem}.perf.svg"
        draw(
            folded,
            svg,
            title=title or f"{stem}: every thread (perf)",
            subtitle=f"{out['label']}; {out['samples']} samples, {out['unwound_share']:.0%} whole stacks; "
            f"{out['process'].split(':', 1)[0]}; threads: {names}",
        )
        out["svg"] = str(svg)
        out["speedscope"] = str(
            to_speedscope(lines, out_dir / f"{stem}.perf.speedscope.json", name=title or stem, rate=rate)
        )
    except (subprocess.SubprocessError, OSError) as e:
        out["missing"] = f"perf flamegraph failed: {_tail(str(e))}"
    finally:
        if not keep_data:
            data.unlink(missing_ok=True)
            Path(str(data) + ".old").unlink(missing_ok=True)
    return out


def fold(data: Path, folded: Path, cpus: list[int] | None = None) -> Path:
    """`perf script` on a perf.data file, collapsed by inferno (kernel `_[k]`, JIT `_[j]`)."""
    script = subprocess.Popen(
        # no `period` field: inferno then counts samples (with it, nanoseconds of cpu-clock)
        [find("perf"), "script", "-i", str(data), "-F", "comm,pid,tid,time,event,ip,sym,dso"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_preexec(cpus),
    )
    with open(folded, "wb") as f:
        collapse = subprocess.run(
            [find("inferno-collapse-perf"), "--all", "--nthreads", "1"],
            stdin=script.stdout,
            stdout=f,
            stderr=subprocess.PIPE,
            timeout=600,
            preexec_fn=_preexec(cpus),
        )
    script.stdout.close()
    err = script.stderr.read().decode(errors="replace")
    script.wait(timeout=60)
    if script.returncode != 0:
        raise subprocess.SubprocessError(f"perf script exited {script.returncode}: {_tail(err)}")
    if collapse.returncode != 0:
        raise subprocess.SubprocessError(
            f"inferno-collapse-perf exited {collapse.returncode}: {_tail(collapse.stderr.decode(errors='replace'))}"
        )
    return folded


def draw(
    folded: Path,
    svg: Path,
    title: str,
    subtitle: str = "",
    countname: str = "samples",
    factor: float | None = None,
    inverted: bool = False,
    colors: str = "rust",
) -> Path:
    """inferno-flamegraph over a folded file."""
    cmd = [
        find("inferno-flamegraph"),
        "--title",
        title,
        "--countname",
        countname,
        "--colors",
        colors,
        "--hash",
        "--minwidth",
        "0.1",
    ]
    if subtitle:
        cmd += ["--subtitle", subtitle]
    if factor is not None:
        cmd += ["--factor", repr(float(factor))]
    if inverted:
        cmd.append("--inverted")
    with open(svg, "wb") as f:
        r = subprocess.run([*cmd, str(folded)], stdout=f, stderr=subprocess.PIPE, timeout=300)
    if r.returncode != 0:
        raise subprocess.SubprocessError(
            f"inferno-flamegraph exited {r.returncode}: {_tail(r.stderr.decode(errors='replace'))}"
        )
    return svg


def _parse(line: str) -> tuple[list[str], int] | None:
    stack, _, count = line.rstrip().rpartition(" ")
    if not stack:
        return None
    try:
        return stack.split(";"), int(count)
    except ValueError:
        return None


def thread_samples(lines: Iterable[str]) -> Counter:
    """Samples per thread name (the root frame inferno-collapse-perf writes)."""
    per: Counter = Counter()
    for line in lines:
        p = _parse(line)
        if p:
            per[p[0][0]] += p[1]
    return per


def unwound_share(lines: Iterable[str]) -> float | None:
    """Share of samples whose stack has no `[unknown]` frame (perf could unwind it whole)."""
    total = bad = 0
    for line in lines:
        p = _parse(line)
        if p:
            total += p[1]
            bad += p[1] if "[unknown]" in p[0] else 0
    return (total - bad) / total if total else None


def to_speedscope(lines: Iterable[str], path: Path, name: str, rate: int) -> Path:
    """Folded stacks -> a speedscope file: one sampled profile per thread name (the root
    frame), frames shared, each stack's weight its sample count (the unit: samples)."""
    frames: list[dict[str, str]] = []
    index: dict[str, int] = {}
    profiles: dict[str, dict[str, Any]] = {}
    for line in lines:
        p = _parse(line)
        if not p:
            continue
        stack, n = p
        thread, rest = stack[0], stack[1:]
        ids = []
        for fr in rest:
            if fr not in index:
                index[fr] = len(frames)
                frames.append({"name": fr})
            ids.append(index[fr])
        prof = profiles.setdefault(
            thread,
            {
                "type": "sampled",
                "name": f"{thread} (perf {EVENT}, {rate} Hz)",
                "unit": "none",
                "startValue": 0,
                "endValue": 0,
                "samples": [],
                "weights": [],
            },
        )
        prof["samples"].append(ids)
        prof["weights"].append(n)
        prof["endValue"] += n
    doc = {
        "$schema": SPEEDSCOPE_SCHEMA,
        "name": name,
        "exporter": "gatewaylab (perf + inferno-collapse-perf)",
        "activeProfileIndex": 0,
        "shared": {"frames": frames},
        "profiles": sorted(profiles.values(), key=lambda p: -p["endValue"]),
    }
    path.write_text(json.dumps(doc))
    return path
