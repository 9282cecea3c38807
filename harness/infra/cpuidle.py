"""How the CPUs idle, and a way to keep them out of idle for a run (docs/architecture.md
"Measurements", docs/rs_server.md "Where the added latency at c = 1 goes").

At low concurrency the gateway's core goes idle between requests, and so do the mock's and
the load generator's. Waking an idle CPU costs its idle state's exit latency: a deep C-state
on bare metal, or, in a virtual machine whose guest halts instead of polling, a round trip
through the hypervisor. Measured on this project's 2-core VM (haltpoll, poll window 0 ns),
that wake-up was most of the added p50 at c = 1, so a latency figure is not read without
knowing how the CPUs idled. Two things here:

    describe() -> dict
        the cpuidle driver and governor, CPU 0's idle states (name, exit latency in µs,
        disabled), the guest halt-poll window when the haltpoll governor is loaded, the CPU
        frequency governor, and the effective PM QoS CPU latency limit (µs; None when the
        limit is unset or cannot be read). Every run's meta.json carries it
        (harness.results.meta.collect: `cpu_idle`). Missing facts are None, never guessed.
    hold_latency(us) -> context manager
        holds a PM QoS CPU latency request of `us` microseconds (`/dev/cpu_dma_latency`, the
        kernel's interface for it: tuned's latency profiles and cyclictest use the same) for
        as long as the context is open. 0 keeps every CPU polling instead of entering an idle
        state. The kernel drops the request when the file closes, so a crash cannot leave the
        machine changed. Needs permission to write the file (root, usually); when it is
        missing the error says so in one line (ConfigError), nothing is silently skipped.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

QOS_DEVICE = Path("/dev/cpu_dma_latency")
CPUIDLE = Path("/sys/devices/system/cpu/cpuidle")
CPU0 = Path("/sys/devices/system/cpu/cpu0")
HALTPOLL_NS = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
# The kernel's "no limit": PM_QOS_CPU_LATENCY_DEFAULT_VALUE, 2 * USEC_PER_SEC (what the
# device reads when nobody holds a request).
QOS_UNSET = 2_000_000_000


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def qos_limit_us() -> int | None:
    """The effective PM QoS CPU latency limit in µs; None when unset or not readable."""
    try:
        with QOS_DEVICE.open("rb") as f:
            raw = f.read(4)
    except OSError:
        return None
    if len(raw) != 4:
        return None
    value = struct.unpack("<i", raw)[0]
    return None if value >= QOS_UNSET else value


def describe() -> dict[str, Any]:
    """How the CPUs idle now (see the module docstring)."""
    states = []
    for d in sorted((CPU0 / "cpuidle").glob("state*"), key=lambda p: int(p.name[5:] or 0)):
        states.append(
            {
                "name": _read(d / "name"),
                "exit_latency_us": _int(_read(d / "latency")),
                "disabled": _read(d / "disable") == "1",
            }
        )
    governor = _read(CPUIDLE / "current_governor") or _read(CPUIDLE / "current_governor_ro")
    return {
        "driver": _read(CPUIDLE / "current_driver"),
        "governor": governor,
        "states": states,
        "haltpoll_poll_ns": _int(_read(HALTPOLL_NS)),
        "cpufreq_governor": _read(CPU0 / "cpufreq" / "scaling_governor"),
        "qos_limit_us": qos_limit_us(),
    }


def line(info: dict[str, Any]) -> str:
    """One line for reports: 'idle haltpoll/haltpoll (poll 0 ns), QoS none'."""
    if not info or not info.get("driver"):
        return "idle states unknown"
    text = f"idle {info['driver']}/{info.get('governor') or '?'}"
    if info.get("haltpoll_poll_ns") is not None:
        text += f" (poll {info['haltpoll_poll_ns']} ns)"
    qos = info.get("qos_limit_us")
    return text + (", QoS none" if qos is None else f", QoS {qos} µs")


@contextlib.contextmanager
def hold_latency(us: int) -> Iterator[int]:
    """Hold a PM QoS CPU latency request of `us` µs while the context is open."""
    if us < 0:
        raise ConfigError(f"--cpu-latency-us must be 0 or more (got {us})")
    try:
        f = QOS_DEVICE.open("r+b", buffering=0)
    except OSError as e:
        raise ConfigError(
            f"cannot hold a CPU latency request: {QOS_DEVICE}: {e.strerror or e} "
            "(needs write permission, usually root; or drop --cpu-latency-us)"
        ) from None
    try:
        f.write(struct.pack("<i", us))
        yield us
    finally:
        f.close()
