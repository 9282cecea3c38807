"""`gatewaylab bench ledger_layouts`: what the single-writer ledger costs per request against
the in-process one (docs/single_writer.md "Cost").

    gatewaylab bench ledger_layouts --mode py --concurrency 8 --duration 3 --repeat 5 --ack background,durable

The real gateway (a config file with `ledger.layout: single | single-writer`) on the profile's
gateway cores, the native mock and load generator on the others. Per repeat, every (ack,
layout) configuration in turn (so drift spreads over all of them): a fresh ledger, a warm-up,
then a closed-loop window at `--concurrency` while the CPU of the gateway's process tree is
read from /proc (the ledger process is the gateway's child, so it is counted). After each
window the gateway is stopped (drained) and its ledger must hold a record for every
completed request. Printed and returned: per configuration req/s and CPU µs per request,
median (min–max) over the repeats, and per repeat the ratio single-writer / single, with its
median (min–max). Timings on a loaded machine are noisy: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

LAYOUTS = ("single", "single-writer")
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise the GIL in one line."}]}
KEY = "sk-gatewaylab-bench"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", default="py", choices=["py", "py+rs"])
    p.add_argument("--ack", default="background", help="comma list: background,durable")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--profile", default="xeon-4c")
    p.add_argument("--json", default=None, help="write the result here")


def _config(d: Path, upstream: str, layout: str, ack: str) -> str:
    from gateway.stages.auth import hash_key
    from harness.infra.targets import unreachable_limits

    lim = unreachable_limits()  # the rate limiter runs, never refuses (harness.targets)
    p = d / "gw.yaml"
    p.write_text(
        f"model_list: [{{model_name: gpt-4o-mini, upstream: {{base_url: '{upstream}'}}}}]\n"
        f"keys: [{{id: bench, sha256: {hash_key(KEY)}, rpm: {lim['rpm']}, tpm: {lim['tpm']}}}]\n"
        f"ledger: {{dir: {d / 'ledger'}, layout: {layout}, ack: {ack}}}\n"
    )
    return str(p)


def _spread(v: list[float]) -> dict[str, float]:
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def _fmt(s: dict[str, float]) -> str:
    from harness.bench._runner import fmt_spread

    return fmt_spread(s["median"], s["min"], s["max"])


def measure(
    mode: str = "py",
    acks=("background",),
    concurrency: int = 8,
    duration_s: float = 3.0,
    warmup_s: float = 0.5,
    repeat: int = 5,
    profile: str = "xeon-4c",
) -> dict[str, Any]:
    from gateway.audit.ledger import WAL_NAME
    from gateway.audit.wal import WriteAheadLog
    from gateway.serving.launch import start_gateway
    from harness.infra.native_procs import run_load, start_mock
    from harness.infra.probes import TreeSampler
    from harness.infra.profiles import resolve
    from harness.results.meta import collect

    prof = resolve(profile)
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="gatewaylab-layouts-") as tmp,
        start_mock(cpus=prof.mock_cpus, latency_ms=0) as mock,
    ):
        for rep in range(repeat):
            for ack in acks:
                for layout in LAYOUTS:
                    d = Path(tmp) / f"r{rep}-{ack}-{layout}"
                    d.mkdir()
                    gw = start_gateway(
                        None,
                        None,
                        mode=mode,
                        config=_config(d, mock.url, layout, ack),
                        cpus=prof.gateway_cpus,
                    )
                    try:
                        url = gw.url + "/v1/chat/completions"
                        run_load(
                            url,
                            concurrency=concurrency,
                            duration_s=warmup_s,
                            cpus=prof.load_cpus,
                            body=CHAT,
                            headers=headers,
                        )
                        sampler = TreeSampler(gw.pid).start()
                        r = run_load(
                            url,
                            concurrency=concurrency,
                            duration_s=duration_s,
                            cpus=prof.load_cpus,
                            body=CHAT,
                            headers=headers,
                        )
                        cpu = sampler.stop()
                    finally:
                        code = gw.stop()
                    ok = int((r.get("meta") or {}).get("ok") or 0)
                    records = len(WriteAheadLog.replay(str(d / "ledger" / WAL_NAME)))
                    if code != 0 or records < ok:
                        raise RuntimeError(
                            f"{layout}/{ack}: gateway exit {code}, {records} records for {ok} answers"
                        )
                    rows.append(
                        {
                            "repeat": rep,
                            "ack": ack,
                            "layout": layout,
                            "rps": r["rps"],
                            "requests": ok,
                            "records": records,
                            "cpu_s": cpu["cpu_user_s"] + cpu["cpu_sys_s"],
                            "cpu_us_per_req": (cpu["cpu_user_s"] + cpu["cpu_sys_s"]) / max(ok, 1) * 1e6,
                            "lat_p50_us": r["latency_us"]["p50"],
                            "lat_p99_us": r["latency_us"]["p99"],
                        }
                    )
    summary: dict[str, Any] = {}
    for ack in acks:
        per = {lay: [r for r in rows if r["ack"] == ack and r["layout"] == lay] for lay in LAYOUTS}
        s: dict[str, Any] = {
            lay: {
                m: _spread([r[m] for r in per[lay]])
                for m in ("rps", "cpu_us_per_req", "lat_p50_us", "lat_p99_us")
            }
            for lay in LAYOUTS
        }
        s["ratio_single_writer_over_single"] = {
            m: _spread([b[m] / a[m] for a, b in zip(per["single"], per["single-writer"])])
            for m in ("rps", "cpu_us_per_req", "lat_p50_us", "lat_p99_us")
        }
        summary[ack] = s
    return {
        "mode": mode,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "repeat": repeat,
        "profile": prof.to_dict(),
        "rows": rows,
        "summary": summary,
        "meta": collect(
            parameters={
                "bench": "ledger_layouts",
                "mode": mode,
                "acks": list(acks),
                "concurrency": concurrency,
                "duration_s": duration_s,
                "repeat": repeat,
            },
            hardware_profile=prof.name,
            profile_satisfied=prof.profile_satisfied,
        ),
    }


def run(args: argparse.Namespace) -> int:
    from harness.bench._runner import require_release

    require_release()
    acks = tuple(a for a in args.ack.split(",") if a)
    res = measure(args.mode, acks, args.concurrency, args.duration, args.warmup, args.repeat, args.profile)
    print(
        f"ledger layouts, mode {args.mode}, c={args.concurrency}, {args.duration:g} s x {args.repeat} "
        f"(profile {res['profile']['name']}, satisfied: {res['profile']['profile_satisfied']}; "
        f"load {res['meta']['load_average']})"
    )
    for ack, s in res["summary"].items():
        for lay in LAYOUTS:
            print(
                f"  ack {ack:<10} {lay:<13} req/s {_fmt(s[lay]['rps'])}   CPU us/req {_fmt(s[lay]['cpu_us_per_req'])}"
                f"   p50 us {_fmt(s[lay]['lat_p50_us'])}"
            )
        r = s["ratio_single_writer_over_single"]
        print(
            f"  ack {ack:<10} single-writer / single: req/s {_fmt(r['rps'])}, CPU/req {_fmt(r['cpu_us_per_req'])}, "
            f"p50 {_fmt(r['lat_p50_us'])}, p99 {_fmt(r['lat_p99_us'])}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
        print(f"json: {args.json}")
    return 0
