"""`gatewaylab load`: the native load generator (gatewaylab-tools, Rust), as its own process.

Closed loop (`--concurrency C`) or open loop (`--rate R`, latency from each request's intended
send time: coordinated omission corrected). Always bounded: `--duration` and/or `--requests`
(a count-only run is capped by `--max-duration`). `--json` prints one JSON object:
{"mode", "concurrency", "rate", "duration_s", "requests", "errors", "rps", "latency_us",
["ttfb_us",] "series", "meta"} (see native/tools/src/load.rs for the definitions).
"""

from __future__ import annotations

import argparse
import json
import sys

from harness.commands.mock import pin


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="http://host:port/path")
    loop = p.add_mutually_exclusive_group(required=True)
    loop.add_argument("--concurrency", "-c", type=int, help="closed loop: C workers, one connection each")
    loop.add_argument("--rate", "-r", type=float, help="open loop: R requests per second")
    p.add_argument("--duration", type=float, default=None, help="measured seconds (after warm-up)")
    p.add_argument("--requests", "-n", type=int, default=None, help="stop after N measured requests")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds of unrecorded load first")
    p.add_argument("--connections", type=int, default=None, help="open loop: connection pool size")
    p.add_argument("--arrival", choices=["uniform", "poisson"], default="uniform", help="open-loop arrivals")
    p.add_argument("--method", default=None, help="default POST with a body, else GET")
    p.add_argument("--header", "-H", action="append", default=[], metavar="K:V", help="repeatable")
    p.add_argument("--body", default=None, help="request body, or @FILE")
    p.add_argument("--stream", action="store_true", help="also record time to first body byte (ttfb_us)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    p.add_argument("--max-duration", type=float, default=600.0, help="cap for count-bounded runs, seconds")
    p.add_argument("--threads", type=int, default=1, help="1 = single-threaded runtime")
    p.add_argument("--seed", type=int, default=0, help="seeds Poisson arrivals")
    p.add_argument("--cpus", default=None, help="pin to these CPUs, e.g. 0")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _headers(items: list[str]) -> list[list[str]]:
    from gateway.errors import InvalidInput

    out = []
    for h in items:
        if ":" not in h:
            raise InvalidInput(f"--header {h!r}: expected K:V")
        k, v = h.split(":", 1)
        out.append([k.strip(), v.strip()])
    return out


def _body(text: str | None) -> str | None:
    if text is not None and text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            return f.read()
    return text


def config_from_args(args: argparse.Namespace) -> dict:
    if args.duration is None and args.requests is None:
        from gateway.errors import InvalidInput

        raise InvalidInput("give --duration and/or --requests: a run must be bounded")
    return {
        "url": args.url,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "connections": args.connections,
        "duration_s": args.duration,
        "requests": args.requests,
        "warmup_s": args.warmup,
        "method": args.method,
        "headers": _headers(args.header),
        "body": _body(args.body),
        "stream": args.stream,
        "timeout_s": args.timeout,
        "threads": args.threads,
        "seed": args.seed,
        "arrival": args.arrival,
        "max_duration_s": args.max_duration,
    }


def summary(r: dict) -> str:
    lat = r["latency_us"]
    loop = f"closed c={r['concurrency']}" if r["mode"] == "closed" else f"open rate={r['rate']:g}/s"
    lines = [
        f"{loop}  {r['duration_s']:.2f}s  requests={r['requests']}  ok={r['meta']['ok']}  rps={r['rps']:.1f}",
        "latency us: " + "  ".join(f"{k}={lat[k]}" for k in ("p50", "p90", "p95", "p99", "p999", "max")),
    ]
    if "ttfb_us" in r:
        lines.append(
            "ttfb us:    "
            + "  ".join(f"{k}={r['ttfb_us'][k]}" for k in ("p50", "p90", "p95", "p99", "p999", "max"))
        )
    if r["errors"]:
        lines.append("errors: " + ", ".join(f"{k}={n}" for k, n in sorted(r["errors"].items())))
    if r["mode"] == "open" and r["meta"].get("late_sends"):
        lines.append(f"late sends (all connections busy): {r['meta']['late_sends']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from gateway import twins

    cfg = config_from_args(args)
    native = twins.native()
    pin(args.cpus)
    result = json.loads(native.run_load(json.dumps(cfg)))
    result["meta"]["cpus"] = args.cpus
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(summary(result))
    ok = int(result["meta"].get("ok") or 0)
    if ok == 0:
        # 0 req/s is not a result: say why (e.g. a POST endpoint loaded without --body gives 4xx)
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(result["errors"].items())) or "no request finished"
        print(f"gatewaylab load: every request failed ({result['requests']} sent; {kinds})", file=sys.stderr)
        return 1
    return 0
