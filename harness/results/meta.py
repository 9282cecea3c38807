"""Run metadata: what docs/architecture.md ("Measurements") says is stored with every result.

API (small on purpose; everything returns plain JSON-able values):

    collect(*, parameters=None, switches=None, shell=None, hardware_profile=None,
            profile_satisfied=None, cores_used=None, start_time=None, extra=None) -> dict
        git sha and dirty flag, build profile of gateway._native, Python and rustc versions,
        CPU model, cores available/used, CPU affinity, hardware profile, mode and
        per-component switches, shell, parameters, start time (UTC, ISO 8601), host, and how
        the CPUs idle (`cpu_idle`: harness.infra.cpuidle.describe).
        `switches` is a gateway.twins.Switches (default: Switches.resolve(), i.e. the
        environment). Expensive probes (git, rustc) are cached per process.
    describe(meta) -> str
        one line for reports: "AMD EPYC ... · 2/2 cores · release build · py · CPython 3.11.7 · rustc 1.xx · load 0.3 ·
         idle haltpoll/haltpoll (poll 0 ns), QoS none · abc1234+dirty"
    build_profile() -> str | None      "release" / "debug", None when the extension is missing
    git_info(root=REPO) -> {"git_sha", "git_dirty"}

Missing facts are None, never guessed. `provenance` says where the code came from
(harness.infra.bundle.provenance): a checkout, or a bundle on the target hardware, whose manifest
then gives the git sha, dirty flag and rustc version (an installed bundle has no .git, no rustc).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@functools.cache
def git_info(root: Path = REPO) -> dict[str, Any]:
    sha = _run(["git", "rev-parse", "HEAD"], cwd=root)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return {"git_sha": sha, "git_dirty": None if status is None else bool(status)}


@functools.cache
def rustc_version() -> str | None:
    return _run(["rustc", "--version"])


def build_profile() -> str | None:
    try:
        from gateway import _native
    except ImportError:
        return None
    return str(getattr(_native, "build_profile", None) or "unknown")


@functools.cache
def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu_affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine widens every spread."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def collect(
    *,
    parameters: Mapping[str, Any] | None = None,
    switches=None,
    shell: str | None = None,
    hardware_profile: str | None = None,
    profile_satisfied: bool | None = None,
    cores_used: int | None = None,
    start_time: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything docs/architecture.md asks to store with a result (see module docstring)."""
    from gateway.twins import Switches
    from harness.infra import cpuidle
    from harness.infra.bundle import provenance
    from harness.infra.interpreters import running_label

    sw = switches if switches is not None else Switches.resolve()
    affinity = cpu_affinity()
    prov = provenance()
    built = (
        {"git_sha": prov["git_sha"], "git_dirty": prov["git_dirty"]}
        if prov["kind"] in ("bundle", "venv")
        else git_info()
    )
    meta: dict[str, Any] = {
        **built,
        "provenance": prov,
        "build_profile": build_profile(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "python": running_label(),  # implementation, version, build flags (harness.infra.interpreters)
        "rustc_version": prov["rustc_version"] if prov["kind"] == "bundle" else rustc_version(),
        "cpu_model": cpu_model(),
        "cores_total": os.cpu_count(),
        "cores_available": len(affinity),
        "cores_used": cores_used if cores_used is not None else len(affinity),
        "cpu_affinity": affinity,
        "hardware_profile": hardware_profile,
        "profile_satisfied": profile_satisfied,
        "mode": sw.mode,
        "switches": sw.as_dict(),
        "switches_label": sw.label(),
        "shell": shell,
        "parameters": dict(parameters or {}),
        "start_time": start_time or utc_now(),
        "load_average": load_average(),
        "cpu_idle": cpuidle.describe(),  # idle states and the PM QoS limit: c = 1 latency depends on them
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }
    from gateway import inject
    from gateway.twins import REGISTRY

    injected = inject.active(REGISTRY)
    if injected:  # test-only regressions (gateway/inject.py): never carried silently
        meta["inject"] = list(injected)
    if extra:
        meta.update(extra)
    return meta


def describe(meta: Mapping[str, Any]) -> str:
    """One line describing the machine, build and switches, for report headers."""
    parts = [meta.get("cpu_model") or "unknown CPU"]
    parts.append(
        f"{meta.get('cores_used')}/{meta.get('cores_available')} cores (of {meta.get('cores_total')})"
    )
    if meta.get("hardware_profile"):
        sat = meta.get("profile_satisfied")
        parts.append(f"profile {meta['hardware_profile']}" + ("" if sat in (None, True) else " (clamped)"))
    parts.append(f"{meta.get('build_profile') or 'no'} build")
    parts.append(f"mode {meta.get('switches_label') or meta.get('mode')}")
    parts.append(
        meta.get("python") or f"{meta.get('python_implementation', 'Python')} {meta.get('python_version')}"
    )
    if meta.get("rustc_version"):
        parts.append(meta["rustc_version"].split(" (")[0])
    if meta.get("load_average"):
        parts.append(f"load {meta['load_average'][0]:.1f}")
    if meta.get("cpu_idle"):
        from harness.infra import cpuidle

        parts.append(cpuidle.line(meta["cpu_idle"]))
    sha = (meta.get("git_sha") or "nogit")[:10]
    parts.append(sha + ("+dirty" if meta.get("git_dirty") else ""))
    if meta.get("peers"):  # peer gateways measured in the run, at their installed versions
        parts.append("peers " + ", ".join(f"{k} {v}" for k, v in sorted(meta["peers"].items())))
    return " · ".join(str(p) for p in parts)
