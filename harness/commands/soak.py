"""`gatewaylab soak --mode M --duration S [--rate R]`: a steady open-loop soak of one rung
(harness/infra/soak.py), writing a run folder with a plot; `--scenario overload|chaos|idle|peak` runs
the other checks of harness/infra/soak.py instead. Prints a summary (or `--json`)."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.ladder import SERVERS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", required=True, help="the rung, as `gatewaylab serve --mode` takes it")
    p.add_argument("--duration", type=float, required=True, help="seconds of load")
    p.add_argument(
        "--rate", type=float, default=None, help="steady: requests/s (default 70%% of a probed capacity)"
    )
    p.add_argument("--scenario", choices=["steady", "overload", "chaos", "idle", "peak"], default="steady")
    p.add_argument("--server", choices=list(SERVERS), default=None, help="Python rungs (default: uvicorn)")
    p.add_argument("--factor", type=float, default=2.0, help="overload: times capacity")
    p.add_argument(
        "--connections",
        type=int,
        default=None,
        help="idle: slowloris connections (default 1000); peak: connections at a peak (default 256)",
    )
    p.add_argument(
        "--max-in-flight",
        dest="max_in_flight",
        type=int,
        default=None,
        help="overload: the gateway's admission limit (limits.max_in_flight; default: the config default)",
    )
    p.add_argument(
        "--latency-ms", dest="latency_ms", type=float, default=1.0, help="overload: the mock's latency"
    )
    p.add_argument("--out", default=None, help="steady: runs root (default data/runs)")
    p.add_argument("--no-images", action="store_true", help="steady: HTML plot only, no PNG")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from harness.infra import soak

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.scenario == "steady":
        r = soak.run_steady(
            args.mode,
            args.duration,
            args.rate,
            server=args.server,
            out_root=args.out,
            images=not args.no_images,
            log=log,
        )
        line = (
            f"soak {r['mode']} {r['rate']:g} req/s {r['duration_s']:g}s: ok={r['ok']}/{r['requests']} "
            f"RSS {r['rss_mb_after_warmup']:.1f} -> {r['rss_mb_end']:.1f} MiB ({r['rss_growth']:+.2%}; "
            f"second half {r['rss_growth_second_half']:+.2%}), "
            f"p99 {r['p99_us_first_third']} -> {r['p99_us_last_third']} us (x{r['p99_drift']:.2f}), "
            f"fds {r['fds_after_warmup']} -> {r['fds_end']} (max {r['fds_max']}), "
            f"audit lag max {r['audit_lag_max']}; {r['run_dir']}"
        )
    elif args.scenario == "overload":
        if args.max_in_flight is not None and args.max_in_flight < 1:
            raise SystemExit(
                f"gatewaylab soak: error: --max-in-flight: expected a positive integer, got {args.max_in_flight}"
            )
        r = soak.run_overload(
            args.mode,
            args.duration,
            args.factor,
            server=args.server,
            log=log,
            max_in_flight=args.max_in_flight,
            mock_latency_ms=args.latency_ms,
        )
        line = (
            f"overload {r['mode']} {r['rate']:.0f} req/s ({args.factor:g}x): ok={r['ok']}/{r['requests']} "
            f"errors={r['errors']} shed={r['shed']} ({r['shed_rate']:.1%}), admitted p99 "
            f"{r['admitted_latency_us'].get('p99')} us, admitted lost from the ledger {r['admitted_lost']}, "
            f"peak RSS {r['rss_peak_mb']:.1f} MiB (before {r['rss_mb_before']:.1f}), "
            f"recovery {r['recovery_s'] if r['recovery_s'] is None else round(r['recovery_s'], 2)} s"
        )
    elif args.scenario == "chaos":
        r = soak.run_chaos(args.mode, args.duration, args.rate or 100.0, server=args.server)
        line = (
            f"chaos {r['mode']}: answered {r['answered']} of {r['requests']}, audited {r['audited']} "
            f"{r['audited_by_status']}, transport failures {r['transport_failures']}"
        )
    elif args.scenario == "peak":
        r = soak.run_peak(
            args.mode,
            256 if args.connections is None else args.connections,
            args.duration,
            300.0 if args.rate is None else args.rate,
            server=args.server,
        )
        steps = " ".join(f"{p['phase']}:{p['rss_mb']:.1f}" for p in r["phases"])
        line = (
            f"peak {r['mode']} ({r['connections']} connections, {r['seconds']:g} s "
            f"per peak): RSS MiB {steps}; first peak {r['first_peak_mb']:+.2f}, later peaks "
            f"{r['later_peaks_mb']:+.2f}, given back after peaks {r['returned_after_peaks_mb']:.2f}; "
            f"ok {r['ok']}/{r['requests']}"
        )
    else:
        r = soak.run_idle(
            args.mode,
            1000 if args.connections is None else args.connections,
            args.duration,
            server=args.server,
        )
        line = (
            f"idle {r['mode']}: {r['held_open_at_end']} of {r['connections']} slow connections held, "
            f"good requests {r['good_ok']}/{r['good_requests']} ok, p99 {r['latency_us']['p99']} us"
        )
    print(json.dumps(r) if args.json else line)
    return 0
