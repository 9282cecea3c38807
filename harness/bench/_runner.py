"""Parent side of the benchmarks: build case specs, run the pyperf worker as a subprocess,
read its JSON back as plain summaries. Shared by harness/bench/{mmr,wal,hash,entropy}.py.

    require_release()                      refuse a debug (or missing) extension build
    run_cases(cases, pyperf_json, quick=False, pyperf_args=()) -> {name: Summary}
    add_common_arguments(parser)           --impl python|rust|both, --json, --pyperf-json, --quick, --pyperf-args
    impls_from(args) -> ["python", "rust"] ...
    write_json(path, obj)

A Summary holds seconds per unit of work (median, min, max over every pyperf value,
and the number of values); callers turn it into rates.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayLabError

QUICK_ARGS = ["--processes", "2", "--values", "2", "--warmups", "1", "--min-time", "0.01"]
FULL_ARGS = ["--processes", "8", "--values", "3", "--warmups", "1", "--min-time", "0.1"]


class DebugBuildRefused(GatewayLabError):
    """Benchmarks refuse to report numbers from a debug build of gateway._native."""


def require_release() -> str:
    from harness.results.meta import build_profile

    prof = build_profile()
    if prof != "release":
        raise DebugBuildRefused(
            f"gateway._native build profile is {prof!r}: refusing to report benchmark numbers "
            "from anything but a release build (run `make dev`)"
        )
    return prof


@dataclass(frozen=True)
class Summary:
    median: float  # seconds per unit
    min: float
    max: float
    values: int

    def rate(self) -> tuple[float, float, float]:
        """(median, min, max) units per second; min comes from the slowest value."""
        return 1.0 / self.median, 1.0 / self.max, 1.0 / self.min


def run_cases(
    cases: list[dict],
    pyperf_json: str | os.PathLike,
    quick: bool = False,
    pyperf_args: list[str] | tuple[str, ...] = (),
    timeout: float = 3600,
) -> dict[str, Summary]:
    import pyperf

    out = Path(pyperf_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()  # pyperf refuses to overwrite
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-spec-", delete=False) as fh:
        json.dump(cases, fh)
        spec = fh.name
    try:
        cmd = [
            sys.executable,
            "-m",
            "harness.bench._worker",
            "--spec",
            spec,
            "-o",
            str(out),
            "--quiet",
            *(QUICK_ARGS if quick else FULL_ARGS),
            *pyperf_args,
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            log = out.with_name(out.name + ".stderr.txt")
            log.write_text(r.stderr)
            raise GatewayLabError(
                f"benchmark worker failed (exit {r.returncode}): {_root_cause(r.stderr)} (full log: {log})"
            )
    finally:
        os.unlink(spec)
    suite = pyperf.BenchmarkSuite.load(str(out))
    res: dict[str, Summary] = {}
    for b in suite.get_benchmarks():
        vals = b.get_values()
        res[b.get_name()] = Summary(b.median(), min(vals), max(vals), len(vals))
    missing = [c["name"] for c in cases if c["name"] not in res]
    if missing:
        raise GatewayLabError(f"benchmark worker produced no result for {missing}")
    return res


def _root_cause(stderr: str) -> str:
    """The first exception line of a worker's stderr (pyperf re-raises in its manager, so
    the last line is only 'worker failed')."""
    for line in stderr.splitlines():
        if line and not line[0].isspace() and not line.startswith("Traceback") and ": " in line:
            return line.strip()
    return (stderr.strip().splitlines() or ["no output"])[-1]


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", choices=["python", "rust", "both"], default="both")
    p.add_argument("--json", metavar="OUT", help="write the result JSON here")
    p.add_argument(
        "--pyperf-json",
        metavar="PATH",
        help="keep pyperf's JSON here (default: OUT with .pyperf.json, else a temp file)",
    )
    p.add_argument("--quick", action="store_true", help="CI-sized run: fewer processes/values, smaller N")
    p.add_argument("--pyperf-args", default="", help="extra pyperf options, e.g. '--rigorous'")


def impls_from(args) -> list[str]:
    return ["python", "rust"] if args.impl == "both" else [args.impl]


def pyperf_path(args, default_name: str) -> Path:
    if args.pyperf_json:
        return Path(args.pyperf_json)
    if args.json:
        j = Path(args.json)
        return j.with_name(j.name.removesuffix(".json") + ".pyperf.json")
    return Path(tempfile.gettempdir()) / default_name


def pyperf_extra(args) -> list[str]:
    return shlex.split(args.pyperf_args or "")


def write_json(path: str | os.PathLike, obj) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2) + "\n")
    return p


def fmt_rate(x: float) -> str:
    for unit, k in (("M", 1e6), ("k", 1e3)):
        if x >= k:
            return f"{x / k:.3g}{unit}"
    return f"{x:.3g}"


def fmt_spread(med: float, lo: float, hi: float) -> str:
    return f"{fmt_rate(med)} ({fmt_rate(lo)}–{fmt_rate(hi)})"


def fmt_ns(sec: float) -> str:
    ns = sec * 1e9
    return f"{ns / 1000:.3g} µs" if ns >= 1000 else f"{ns:.3g} ns"


def twin_cost_cell(r: dict | None) -> str:
    """`median (min–max)` of a per-call row in ns, or – when the twin was not measured."""
    if r is None:
        return "–"
    return f"{fmt_ns(r['ns_per_call'] / 1e9)} ({fmt_ns(r['min'] / 1e9)}–{fmt_ns(r['max'] / 1e9)})"


def twin_cost_ratio(py: dict | None, rs: dict | None) -> str:
    """Python / Rust per-call cost: median ratio and the worst–best pairing of the spreads."""
    if not (py and rs):
        return "–"
    return f"{py['ns_per_call'] / rs['ns_per_call']:.2f}x ({py['min'] / rs['max']:.2f}–{py['max'] / rs['min']:.2f})"


def emit(args, result: dict, markdown, pyperf_json: Path) -> int:
    """Print a benchmark's markdown table and where its pyperf JSON went; write --json."""
    print(markdown(result))
    print(f"\npyperf JSON: {pyperf_json}")
    if args.json:
        write_json(args.json, result)
        print(f"result JSON: {args.json}", file=sys.stderr)
    return 0
