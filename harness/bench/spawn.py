"""`gatewaylab bench spawn`: per-call cost of the gateway's real `_spawn_background` (the only
audit work on the hot path, gateway/background.py) beside a bare `asyncio.create_task` of a
no-op coroutine, in the same run, same loop, alternating rounds so drift hits both.

Each call is timed on its own (`perf_counter_ns` around the call); the timer's own cost is
measured too and reported (it is in both columns alike, so the ratio is fair). The spawned
jobs go through the real background path (queue -> record -> ledger in a temp folder); between
rounds the worker drains the queue so each round starts alike.

JSON (`--json OUT`):
    {"rows": [{"what": "spawn_background"|"create_task", "p50_us", "p99_us", "p50_min_us",
               "p50_max_us", "p99_min_us", "p99_max_us", "calls"}],
     "ratio_p50": {"median", "min", "max"}, "ratio_p99": {...}, "timer_overhead_ns": ...,
     "pyperf_json": PATH, "meta": {...}}
p50/p99 are over all calls; *_min/_max are the spread of the per-round figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time

import numpy as np


async def _noop() -> None:
    return None


def _job():
    from gateway.audit.job import AuditJob
    from gateway.pipeline import AuditMaterial

    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
    resp = b'{"id":"x","choices":[{"message":{"role":"assistant","content":"hi there"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}'
    material = AuditMaterial(time.time_ns(), "req-bench", "key-bench", "gpt-4o-mini", body, 5, "allow")
    return AuditJob(material, 200, resp, False, 100)


async def _measure(rounds: int, calls: int, mode: str, ledger_dir: str) -> dict:
    from gateway.background import BackgroundAudit
    from gateway.metrics import Metrics
    from gateway.twins import Switches

    loop = asyncio.get_running_loop()
    bg = BackgroundAudit(ledger_dir, Switches.resolve(mode=mode), Metrics())
    bg.start()
    job = _job()
    pc = time.perf_counter_ns
    timer = np.empty(calls, np.int64)
    for i in range(calls):
        t0 = pc()
        timer[i] = pc() - t0
    per = {"spawn_background": [], "create_task": []}
    try:
        for r in range(rounds):
            order = ("spawn_background", "create_task") if r % 2 == 0 else ("create_task", "spawn_background")
            for what in order:
                dt = np.empty(calls, np.int64)
                tasks = []
                if what == "spawn_background":
                    spawn = bg._spawn_background
                    for i in range(calls):
                        t0 = pc()
                        spawn(job)
                        dt[i] = pc() - t0
                    await asyncio.gather(*list(bg._tasks))
                    while bg._queue.qsize():
                        await asyncio.sleep(0.001)
                else:
                    create = loop.create_task
                    for i in range(calls):
                        t0 = pc()
                        t = create(_noop())
                        dt[i] = pc() - t0
                        tasks.append(t)
                    await asyncio.gather(*tasks)
                per[what].append(dt)
    finally:
        await bg.drain()
    return {"per": per, "timer_overhead_ns": float(np.median(timer)), "appended": bg.appended}


def measure(
    rounds: int = 10, calls: int = 2000, mode: str = "py", quick: bool = False, pyperf_json: str | None = None
) -> dict:
    if quick:
        rounds, calls = min(rounds, 4), min(calls, 500)
    with tempfile.TemporaryDirectory(prefix="gatewaylab-spawn-") as d:
        raw = asyncio.run(_measure(rounds, calls, mode, d))
    rows, p50s, p99s = [], {}, {}
    for what, arrs in raw["per"].items():
        allv = np.concatenate(arrs) / 1e3
        r50 = [float(np.percentile(a, 50)) / 1e3 for a in arrs]
        r99 = [float(np.percentile(a, 99)) / 1e3 for a in arrs]
        p50s[what], p99s[what] = r50, r99
        rows.append(
            {
                "what": what,
                "calls": int(allv.size),
                "p50_us": float(np.percentile(allv, 50)),
                "p99_us": float(np.percentile(allv, 99)),
                "p50_min_us": min(r50),
                "p50_max_us": max(r50),
                "p99_min_us": min(r99),
                "p99_max_us": max(r99),
            }
        )

    def ratio(d):
        rs = [a / b for a, b in zip(d["spawn_background"], d["create_task"])]
        return {"median": float(np.median(rs)), "min": float(min(rs)), "max": float(max(rs))}

    from harness.results.meta import collect

    result = {
        "rows": rows,
        "ratio_p50": ratio(p50s),
        "ratio_p99": ratio(p99s),
        "timer_overhead_ns": raw["timer_overhead_ns"],
        "records_appended": raw["appended"],
        "meta": collect(
            parameters={"bench": "spawn", "rounds": rounds, "calls": calls, "mode": mode, "quick": quick}
        ),
    }
    if pyperf_json:
        _write_pyperf(pyperf_json, raw["per"])
        result["pyperf_json"] = str(pyperf_json)
    return result


def _write_pyperf(path: str, per: dict) -> None:
    """One pyperf benchmark per side; each value is a round's mean seconds per call."""
    import pyperf

    benches = []
    for what, arrs in per.items():
        runs = [
            pyperf.Run(
                [float(a.mean()) / 1e9],
                metadata={"name": f"spawn.{what}", "unit": "second"},
                collect_metadata=False,
            )
            for a in arrs
        ]
        benches.append(pyperf.Benchmark(runs))
    suite = pyperf.BenchmarkSuite(benches)
    import os

    if os.path.exists(path):
        os.unlink(path)
    suite.dump(path)


def markdown(result: dict) -> str:
    lines = ["| what | p50 µs [rounds min–max] | p99 µs [rounds min–max] | calls |", "|---|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(
            f"| `{r['what']}` | {r['p50_us']:.2f} [{r['p50_min_us']:.2f}–{r['p50_max_us']:.2f}] | "
            f"{r['p99_us']:.2f} [{r['p99_min_us']:.2f}–{r['p99_max_us']:.2f}] | {r['calls']:,} |"
        )
    a, b = result["ratio_p50"], result["ratio_p99"]
    lines.append("")
    lines.append(
        f"_spawn_background / create_task: p50 {a['median']:.2f}x [{a['min']:.2f}–{a['max']:.2f}], "
        f"p99 {b['median']:.2f}x [{b['min']:.2f}–{b['max']:.2f}] (per-round ratios); "
        f"timer overhead {result['timer_overhead_ns']:.0f} ns per call is included in both"
    )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=10, help="alternating rounds (default 10)")
    p.add_argument("--calls", type=int, default=2000, help="calls per round and side (default 2000)")
    p.add_argument("--mode", default="py", choices=["py", "py+rs"], help="twins of the background path")
    p.add_argument("--quick", action="store_true", help="4 rounds x 500 calls")
    p.add_argument("--json", default=None, metavar="OUT", help="write the result JSON here")
    p.add_argument("--pyperf-json", default=None, metavar="OUT", help="also write pyperf JSON")


def run(args: argparse.Namespace) -> int:
    result = measure(args.rounds, args.calls, args.mode, args.quick, args.pyperf_json)
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
        print(f"result JSON: {args.json}", file=sys.stderr)
    return 0
