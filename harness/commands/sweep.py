"""`gatewaylab sweep`: a concurrency sweep (docs/formats.md "CLI contract"; engine: harness.infra.sweep).

    gatewaylab sweep --modes py,py+rs --concurrency 1..16 --profile xeon-4c --duration 5 --repeat 3 --gil
    gatewaylab sweep --ci                      # c in {1,2,4,8,16}, 1.5 s cells, 1 repeat
    gatewaylab sweep --modes py,rs-core --workers 1,2,4 --concurrency 1,4,16   # scale out vs up
    gatewaylab sweep --impl mmr=python --impl wal=rust --shells asgi,fastapi --flamegraph
    gatewaylab sweep --targets py,py+rs,litellm,litellm-rust,portkey,noveum --concurrency 1,16
    gatewaylab sweep --targets py+rs,noveum --rates 250,500,1000,2000 --p99-cap-ms 50   # open-loop ladders
    gatewaylab sweep --targets py+rs,portkey --stream --upstream-ttft-ms 20 --upstream-itl-ms 5 --rates 50
    gatewaylab sweep --raw --modes py,py+rs     # lean install (no pandas): JSON rows, `gatewaylab import` later
    gatewaylab sweep --modes py,py+rs,rs-core --pythons 3.11,3.12,3.13   # the interpreter axis
    gatewaylab sweep --targets rs-server,noveum --concurrency 16 --repeat 8 --order alternate --no-gil
    gatewaylab sweep --targets rs-server,noveum --concurrency 1 --cpu-latency-us 0   # CPUs poll, never idle

Lists accept commas or spaces (`--modes py,py+rs` or `--modes py py+rs`); `--concurrency`
takes ranges and lists (`1..16`, `1,2,4,8,16`). Each `--impl` value is one switches set
swept against every mode (`--impl mmr=python,wal=python` is one set of two overrides).
Prints the run folder and the report path; exits 130 when interrupted (the partial run
is kept and marked `partial: true`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _csv(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v for item in values for v in item.split(",") if v.strip()]


def _microseconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole microseconds, 0 or more")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help="comma list of modes: py, py+rs, rs-core, rs-server (default py,py+rs)",
    )
    p.add_argument(
        "--targets",
        nargs="+",
        default=None,
        help="comma list of rungs and peers instead of --modes: py,py+rs,litellm,litellm-rust,"
        "litellm-chat,portkey,noveum (peers: `gatewaylab peers install` first)",
    )
    p.add_argument(
        "--rates",
        nargs="+",
        default=None,
        help="open-loop rate ladder in req/s, e.g. 250,500,1000 (instead of --concurrency)",
    )
    p.add_argument(
        "--p99-cap-ms",
        type=float,
        default=50.0,
        help="open loop: a rate is sustained when p99 <= this (default 50) and errors < 1%%",
    )
    p.add_argument(
        "--stream", action="store_true", help="stream: true requests; records TTFB and its overhead"
    )
    p.add_argument(
        "--impl",
        action="append",
        default=[],
        metavar="COMPONENT=python|rust[,...]",
        help="a per-component switches set swept with every mode (repeatable)",
    )
    p.add_argument("--shells", nargs="+", default=None, help="comma list: asgi,fastapi (default asgi)")
    p.add_argument(
        "--governance",
        nargs="+",
        default=None,
        help="comma list of on (every stage + audit), off (plain forwarding), stages-only, audit-only, "
        "on-unlimited (on with a key without limits: the limiter returns at once) (default on)",
    )
    p.add_argument(
        "--tracing",
        nargs="+",
        default=None,
        help="comma list of off, on, sampled:R: OpenTelemetry spans on the rungs, to a local OTLP "
        "receiver (default off; docs/tracing.md)",
    )
    p.add_argument(
        "--pythons",
        nargs="+",
        default=None,
        help="the interpreter axis: versions or paths, e.g. 3.11,3.12,3.13 (py, py+rs, rs-core run "
        "on each, in its own venv; docs/interpreters.md)",
    )
    p.add_argument("--server", default="uvicorn", choices=["uvicorn", "granian"])
    p.add_argument("--concurrency", nargs="+", default=None, help="1..16 (default) or 1,2,4,8,16")
    p.add_argument(
        "--workers",
        nargs="+",
        default=None,
        help="comma list of gateway process counts per rung, e.g. 1,2,4 (default 1; docs/workers.md)",
    )
    p.add_argument(
        "--profile", default="xeon-4c", help="xeon-4c (default), ci-2c, all, or 'gateway=0-3;mock=4;load=5'"
    )
    p.add_argument(
        "--duration", type=float, default=None, help="measured seconds per cell (default 5; --ci 1.5)"
    )
    p.add_argument(
        "--warmup", type=float, default=None, help="warm-up seconds per cell (default 1; --ci 0.5)"
    )
    p.add_argument("--repeat", type=int, default=None, help="repeats per cell (default 3; --ci 1)")
    p.add_argument(
        "--order",
        default="fixed",
        help="fixed (default) or alternate: every other repeat measures the configurations in reverse (A B C, C B A), "
        "so a drift in the machine's load falls on every configuration alike (interleaved rounds)",
    )
    p.add_argument(
        "--cpu-latency-us",
        type=_microseconds,
        default=None,
        metavar="US",
        help="hold a CPU latency request (PM QoS, /dev/cpu_dma_latency) for the run: 0 keeps the CPUs "
        "polling instead of idling, so a wake-up does not cost an idle state's exit (needs root; "
        "default: leave the machine as it is; meta.json cpu_idle records it either way)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--gil",
        dest="gil",
        action="store_true",
        default=True,
        help="GIL/loop view cells beside the throughput cells on interpreter rungs: the in-gateway "
        "probes and py-spy run there only (default on)",
    )
    g.add_argument("--no-gil", dest="gil", action="store_false", help="throughput cells only (no view cells)")
    p.add_argument(
        "--flamegraph",
        action="store_true",
        help="flamegraphs per cell (SVG + speedscope): py-spy --native on the Python threads, "
        "perf cpu-clock on every thread of a rung with native threads or a peer",
    )
    p.add_argument(
        "--scalene", action="store_true", help="a scalene profile per configuration at the top concurrency"
    )
    p.add_argument("--upstream-latency-ms", type=float, default=0.0, help="mock upstream latency")
    p.add_argument(
        "--upstream-ttft-ms", type=float, default=None, help="mock time to first token (streaming)"
    )
    p.add_argument("--upstream-itl-ms", type=float, default=None, help="mock inter-token delay (streaming)")
    p.add_argument("--upstream-tokens", type=int, default=None, help="mock tokens per answer")
    p.add_argument("--out", default=None, help="folder for the run folder (default data/runs)")
    p.add_argument("--name", default="sweep", help="run name (folder suffix)")
    p.add_argument("--ci", action="store_true", help="CI size: c in {1,2,4,8,16}, short cells, 1 repeat")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write report.md/html at the end")
    p.add_argument(
        "--raw",
        action="store_true",
        help="write the tables as JSON rows, no report (lean install without pandas; "
        "`gatewaylab import RUN_DIR` makes the Parquet tables and report later)",
    )


def sweep_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Parsed options -> `harness.infra.sweep.run_sweep` keywords (also used by lab_ext's %sweep)."""
    conc = ",".join(args.concurrency) if args.concurrency else None
    kw: dict[str, Any] = {
        "modes": tuple(_csv(args.modes) or ("py", "py+rs")),
        "switches": list(args.impl) or None,
        "shells": tuple(_csv(args.shells) or ("asgi",)),
        "governance": tuple(_csv(args.governance) or ("on",)),
        "workers": ",".join(_csv(args.workers) or ("1",)),
        "tracing": tuple(_csv(args.tracing) or ("off",)),
        "pythons": _csv(getattr(args, "pythons", None)),
        "profile": args.profile,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "repeat": args.repeat,
        "order": args.order,
        "cpu_latency_us": args.cpu_latency_us,
        "gil": args.gil,
        "flamegraph": args.flamegraph,
        "scalene": args.scalene,
        "upstream": {
            k: v
            for k, v in {
                "latency_ms": args.upstream_latency_ms,
                "ttft_ms": args.upstream_ttft_ms,
                "itl_ms": args.upstream_itl_ms,
                "tokens": args.upstream_tokens,
            }.items()
            if v is not None
        },
        "targets": _csv(args.targets),
        "rates": ",".join(_csv(args.rates)) if args.rates else None,
        "p99_cap_ms": args.p99_cap_ms,
        "stream": args.stream,
        "out": args.out,
        "ci": args.ci,
        "name": args.name,
        "server": args.server,
        "progress": not getattr(args, "no_progress", False),
        "report": not getattr(args, "no_report", False),
        "results": "raw" if getattr(args, "raw", False) else "parquet",
    }
    if conc:
        kw["concurrency"] = conc
    return kw


def _have_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from gateway.errors import ConfigError
    from harness.infra.sweep import run_sweep

    kw = sweep_kwargs(args)
    if kw["results"] == "parquet" and not _have_pandas():
        raise ConfigError(
            "pandas is not installed (a lean install): sweep with --raw, then `gatewaylab import "
            "RUN_DIR` on a machine with the analysis extra"
        )
    res = run_sweep(**kw)
    meta = res.meta
    if kw["results"] == "raw":
        ok = sum(r.get("status") == "ok" for r in res.table)
    else:
        ok = int((res.table["status"] == "ok").sum()) if len(res.table) else 0
    print(f"run: {res.dir}")
    print(
        f"cells: {ok} ok, {len(res.table) - ok} not ok; profile {meta.get('hardware_profile')} "
        f"(profile_satisfied: {str(meta.get('profile_satisfied')).lower()})"
    )
    if kw["results"] == "raw":
        print(
            f"raw results (JSON rows): {res.dir / 'tables'}; tables and report: gatewaylab import {res.dir}"
        )
    elif res.report.get("md"):
        print(f"report: {res.report['md']}")
        print(f"report: {res.report.get('html')}")
    elif res.report.get("error"):
        print(f"report failed: {res.report['error']}", file=sys.stderr)
    if res.partial:
        print("sweep interrupted: partial run kept (meta.json partial: true)", file=sys.stderr)
        return 130
    return 0
