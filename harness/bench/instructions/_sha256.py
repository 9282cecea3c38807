"""The SHA-256 skew: how many blocks a unit of work hashes, and what a block costs under
Cachegrind (exact) and natively (exact with perf and hardware counters, else estimated).

Valgrind's simulated CPU hides SHA-NI, so SHA-256 takes its portable path under Cachegrind
while natively a CPU with SHA-NI hashes a block in a fraction of the instructions. The skew of
a figure is blocks x (Cachegrind Ir per block - native instructions per block).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from gateway.errors import GatewayLabError
from harness.bench.instructions._common import driver_argv, driver_env, last_line, precompile, run_driver

SHA256_UNITS = (64, 192)  # blocks per message in the two Cachegrind runs, hashed SHA256_CALLS times
SHA256_CALLS = 16


def sha256_blocks(nbytes: int) -> int:
    """Blocks SHA-256 compresses for a message of `nbytes` (padding: 0x80, zeros, 8-byte length)."""
    return (nbytes + 9 + 63) // 64


def mmr_node_blocks(leaves: int) -> int:
    """Blocks an MMR hashes for its internal nodes over `leaves` appends: one node per merge
    (leaves - popcount(leaves) in all), each H(0x01 || left || right) of 65 bytes = 2 blocks."""
    return 2 * (leaves - bin(leaves).count("1"))


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _perf_counts_instructions() -> bool:
    """True when `perf stat -e instructions:u` counts here (hardware counters exposed)."""
    perf = shutil.which("perf")
    if perf is None:
        return False
    try:
        r = subprocess.run(
            [perf, "stat", "-x,", "-e", "instructions:u", "true"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and any(
        line.split(",")[0].strip().isdigit() for line in r.stderr.splitlines() if "instructions" in line
    )


def _native_seconds_per_block(impl: str, env: dict[str, str] | None = None, blocks: int = 16384) -> float:
    """Native seconds per block of one long message: the best of 3 fresh processes x 5 hashes."""
    best = float("inf")
    for _ in range(3):
        r = subprocess.run(
            driver_argv({"kind": "time_sha256", "impl": impl}, blocks),
            capture_output=True,
            text=True,
            timeout=300,
            env=driver_env(env),
        )
        if r.returncode != 0:
            raise GatewayLabError(f"native SHA-256 timing ({impl}) failed: {last_line(r.stderr)}")
        best = min(best, json.loads(r.stdout)["seconds"] / blocks)
    return best


def _perf_instructions_per_block(impl: str, n1: int = 1024, n2: int = 4096, calls: int = 8) -> float:
    """Native instructions per block, exact: the sha256 driver under `perf stat` at two sizes."""
    counts = []
    case = {"kind": "sha256", "impl": impl, "sizes": [n1, n2], "calls": calls}
    for n in (n1, n2):
        r = subprocess.run(
            ["perf", "stat", "-x,", "-e", "instructions:u", *driver_argv(case, n)],
            capture_output=True,
            text=True,
            timeout=300,
            env=driver_env(),
        )
        line = next(x for x in r.stderr.splitlines() if "instructions" in x)
        counts.append(int(line.split(",")[0]))
    return (counts[1] - counts[0]) / ((n2 - n1) * calls)


# OpenSSL's capability mask that hides SHA-NI (CPUID leaf 7 EBX bit 29): the path valgrind's CPU takes.
OPENSSL_NO_SHA_NI = {"OPENSSL_ia32cap": ":~0x20000000"}

_CALIBRATION: dict[str, Any] | None = None


def sha256_calibration(refresh: bool = False) -> dict[str, Any]:
    """What one SHA-256 block costs: Cachegrind Ir per block per implementation (exact; the
    path valgrind's CPU takes), and natively on this CPU (exact with perf and hardware
    counters; else estimated: native seconds per block x the instructions per second of the
    portable path, measured natively on OpenSSL with SHA-NI masked). Cached per process."""
    global _CALIBRATION
    if _CALIBRATION is not None and not refresh:
        return _CALIBRATION
    precompile()
    n1, n2 = SHA256_UNITS
    calls = SHA256_CALLS
    flags = _cpu_flags()
    sha_ni = "sha_ni" in flags
    out: dict[str, Any] = {"cpu_sha_ni": sha_ni, "impls": {}, "notes": []}
    cg_ir = {}
    for impl in ("openssl", "rust"):
        case = {"kind": "sha256", "impl": impl, "sizes": [n1, n2], "calls": calls}
        a = run_driver(case, n1).total
        b = run_driver(case, n2).total
        cg_ir[impl] = (b - a) / ((n2 - n1) * calls)
    perf = _perf_counts_instructions()
    if not sha_ni:
        out["method"] = "no SHA-NI on this CPU: the native path is the portable one (skew 0)"
        for impl in cg_ir:
            out["impls"][impl] = {"cachegrind_ir_per_block": cg_ir[impl], "native_ir_per_block": cg_ir[impl]}
    elif perf:
        out["method"] = "exact: perf stat -e instructions:u, natively, two sizes"
        for impl in cg_ir:
            out["impls"][impl] = {
                "cachegrind_ir_per_block": cg_ir[impl],
                "native_ir_per_block": _perf_instructions_per_block(impl),
            }
    else:
        portable_s = _native_seconds_per_block("openssl", OPENSSL_NO_SHA_NI)
        ir_per_s = cg_ir["openssl"] / portable_s  # the portable path's instructions per second here
        out["method"] = (
            "estimate: no hardware counters (perf cannot count instructions on this machine); "
            "native seconds per block x the portable path's instructions per second (OpenSSL with "
            "SHA-NI masked, timed natively)"
        )
        out["portable_openssl_ns_per_block"] = portable_s * 1e9
        for impl in cg_ir:
            s = _native_seconds_per_block(impl)
            out["impls"][impl] = {
                "cachegrind_ir_per_block": cg_ir[impl],
                "native_ns_per_block": s * 1e9,
                "native_ir_per_block": s * ir_per_s,
            }
            if s >= 0.8 * portable_s:
                out["notes"].append(
                    f"{impl}: native SHA-256 is not faster than the portable path "
                    f"({s * 1e9:.0f} vs {portable_s * 1e9:.0f} ns/block): SHA-NI may not be in use"
                )
    out["method_short"] = "none" if not sha_ni else ("perf" if perf else "timing-estimate")
    _CALIBRATION = out
    return out


def skew_fields(blocks: float | None, impl: str | None, ir_per_unit: float | None, by_symbol, cal) -> dict:
    """The SHA-256 columns of a row (harness.schema._SKEW)."""
    f: dict[str, Any] = {
        "sha256_ir_by_symbol_per_unit": by_symbol,
        "sha256_method": cal["method_short"],
        "sha256_blocks_per_unit": blocks,
    }
    if blocks == 0:  # nothing hashed: nothing skewed
        f.update(sha256_ir_per_unit=0.0, sha256_native_ir_est_per_unit=0.0, sha256_skew_per_unit=0.0)
        f["sha256_skew_share"] = 0.0
        return f
    if blocks is None or impl is None:
        return f
    c = cal["impls"][impl]
    cg_ir, nat = blocks * c["cachegrind_ir_per_block"], blocks * c["native_ir_per_block"]
    f.update(
        sha256_ir_per_unit=cg_ir,
        sha256_native_ir_est_per_unit=nat,
        sha256_skew_per_unit=cg_ir - nat,
        sha256_skew_share=(cg_ir - nat) / ir_per_unit if ir_per_unit else None,
    )
    return f


def hash_impl(target: str) -> str:
    """Which SHA-256 a rung hashes with: hashlib on py, the Rust twins' on the others (both are
    OpenSSL's libcrypto underneath; the two calibrate apart, since the calls around the block
    code differ)."""
    return "openssl" if target == "py" else "rust"
