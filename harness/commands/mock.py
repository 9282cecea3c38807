"""`gatewaylab mock`: the native mock upstream (gatewaylab-tools, Rust), as its own process.

Prints `listening on http://HOST:PORT` (flushed) once bound, serves until SIGTERM/SIGINT,
then exits 0. `--port 0` (the default) picks a free port. Per-request headers override every
default: x-mock-latency-ms, x-mock-jitter-ms, x-mock-ttft-ms, x-mock-itl-ms, x-mock-tokens,
x-mock-error-status, x-mock-error-rate, x-mock-drop-rate, x-mock-stall-ms.
"""

from __future__ import annotations

import argparse
import json
import os
import signal


def parse_cpus(text: str | None) -> set[int] | None:
    """'0', '1,3', '0-2,5' -> a CPU set (None when not given)."""
    if text is None or text == "":
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        elif part:
            cpus.add(int(part))
    if not cpus:
        raise ValueError(f"empty CPU list {text!r}")
    return cpus


def pin(cpus: str | None) -> None:
    """Pin this process (and the native threads it will start) to `cpus`."""
    s = parse_cpus(cpus)
    if s is not None:
        from gateway.errors import ConfigError

        try:
            os.sched_setaffinity(0, s)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"--cpus {cpus}: cannot pin to {sorted(s)} ({e}); available: {sorted(os.sched_getaffinity(0))}"
            ) from e


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port (printed)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before the answer's headers")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="extra uniform random delay 0..J")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token")
    p.add_argument("--itl-ms", type=float, default=0.0, help="delay between tokens")
    p.add_argument("--tokens", type=int, default=16, help="completion tokens per answer")
    p.add_argument("--error-status", type=int, default=None, help="status of injected errors (default 500)")
    p.add_argument("--error-rate", type=float, default=None, help="share of API requests that get the error")
    p.add_argument(
        "--drop-rate", type=float, default=0.0, help="share of API requests whose connection is dropped"
    )
    p.add_argument("--stall-every", type=int, default=0, help="every N-th API request freezes the server ...")
    p.add_argument("--stall-ms", type=float, default=0.0, help="... for this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="1 = single-threaded runtime; N = N worker threads")
    p.add_argument("--model", default="mock-1")
    p.add_argument("--cpus", default=None, help="pin to these CPUs, e.g. 1 or 0,2-3")


def config_from_args(args: argparse.Namespace) -> dict:
    return {
        "host": args.host,
        "port": args.port,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "ttft_ms": args.ttft_ms,
        "itl_ms": args.itl_ms,
        "tokens": args.tokens,
        "error_status": args.error_status,
        "error_rate": args.error_rate,
        "drop_rate": args.drop_rate,
        "stall_every": args.stall_every,
        "stall_ms": args.stall_ms,
        "seed": args.seed,
        "threads": args.threads,
        "model": args.model,
    }


def run(args: argparse.Namespace) -> int:
    from gateway import twins

    native = twins.native()
    pin(args.cpus)
    # The native server handles SIGINT/SIGTERM itself; with default dispositions here,
    # Python has no pending KeyboardInterrupt to raise once it returns.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    native.run_mock(json.dumps(config_from_args(args)))
    return 0
