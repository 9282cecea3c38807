"""`gatewaylab bench tools`: are the measuring tools ever the bottleneck?

On one core each, same run: the mock upstream pinned to the last CPU (single-threaded
runtime), the load generator pinned to the first. For each route (`GET /health`, and
`POST /v1/chat/completions` answering 16 tokens of JSON) and each concurrency, our load
generator and `wrk` (Debian package, `make dev` installs it) take turns against the *same*
mock process, closed loop, same connection count and duration, alternating which goes first.

Reported per cell (median with min–max over the repeats):
- rps and p50/p99 latency of each tool;
- CPU utilisation of the mock (psutil, its process over the run) and of the generator
  (ours: its own getrusage over the run; wrk: RUSAGE_CHILDREN around it): the side near 1.0
  is the bottleneck, and on a busy machine (other work on the same cores) rps / utilisation
  is the figure that stays comparable;
- mock capacity on one core = rps / mock CPU utilisation (req per mock core-second), and
  load-generator capacity = rps / generator CPU utilisation (req per generator core-second);
- ours / wrk: the ratio of req/s and of p50, paired per repeat.

JSON (`--json OUT`): {"machine": {"cores", "cpu_model", "mock_cpu", "gen_cpu"},
"params": {...}, "rows": [{"tool", "route", "concurrency", "rps", "p50_us", "p99_us",
"mock_cpu_util", "gen_cpu_util", "mock_capacity_rps", "gen_capacity_rps"}, ...] (each value
{"median", "min", "max", "n"}), "ratios": [{"route", "concurrency", "rps_ours_over_wrk",
"p50_ours_over_wrk", "gen_efficiency_ours_over_wrk"}], "headline": {...}, "meta": {...}}.

Our generator runs in this process, pinned and with the GIL released (the same native code
`gatewaylab load` runs), so its CPU and wall time cover the run only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from harness.bench import _runner as R

ROUTES = {
    "health": ("GET", "/health", None),
    "chat": (
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {"model": "mock-1", "messages": [{"role": "user", "content": "Say something about gateways."}]}
        ),
    ),
}


def _unit_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsed wrk duration {text!r}")
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 6e7}[u]


def parse_wrk(out: str) -> dict:
    """Requests/sec, latency percentiles (µs) and error counts from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise ValueError(f"wrk printed no Requests/sec:\n{out}")
    pct = {m.group(1): _unit_us(m.group(2)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)),
        "p50_us": pct.get("50"),
        "p99_us": pct.get("99"),
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0),
    }


def _wrk_script(method: str, body: str | None, tmp: str) -> str | None:
    if method == "GET":
        return None
    path = os.path.join(tmp, "req.lua")
    with open(path, "w") as f:
        f.write(
            f'wrk.method = "{method}"\nwrk.body = {json.dumps(body or "")}\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    return path


def _cpu(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run_wrk(url: str, concurrency: int, duration_s: float, script: str | None, cpu: int, mock_proc) -> dict:
    argv = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script:
        argv += ["-s", script]
    argv.append(url)
    import resource

    def children_cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    c0, m0, t0 = children_cpu(), _cpu(mock_proc), time.perf_counter()
    p = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed: {p.stderr.strip()}")
    r = parse_wrk(p.stdout)
    r["mock_cpu_util"] = (_cpu(mock_proc) - m0) / wall
    r["gen_cpu_util"] = (children_cpu() - c0) / wall  # wrk is the only child reaped meanwhile
    return r


def run_ours(
    url: str, concurrency: int, duration_s: float, warmup_s: float, method: str, body: str | None, mock_proc
) -> dict:
    from gateway import twins

    cfg = {
        "url": url,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "method": method,
        "body": body,
    }
    m0, t0 = _cpu(mock_proc), time.perf_counter()
    r = json.loads(twins.native().run_load(json.dumps(cfg)))
    wall = time.perf_counter() - t0
    return {
        "rps": r["rps"],
        "p50_us": float(r["latency_us"]["p50"]),
        "p99_us": float(r["latency_us"]["p99"]),
        "errors": sum(r["errors"].values()),
        "mock_cpu_util": (_cpu(mock_proc) - m0) / wall,
        "gen_cpu_util": r["meta"]["cpu_util"],
    }


def measure(
    duration_s: float = 3.0,
    repeats: int = 5,
    concurrencies=(1, 32),
    routes=("health", "chat"),
    warmup_s: float = 0.5,
    quick: bool = False,
) -> dict:
    import psutil

    from harness.infra.native_procs import start_mock
    from harness.results.stats import summarize

    R.require_release()
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package `wrk`; `make dev` installs it)")
    if quick:
        duration_s, repeats, warmup_s = 1.0, 2, 0.2
    cpus = sorted(os.sched_getaffinity(0))
    mock_cpu, gen_cpu = cpus[-1], cpus[0]
    own_affinity = set(cpus)
    samples: dict[tuple, list[dict]] = {}
    with (
        start_mock(cpus=[mock_cpu], threads=1, tokens=16, seed=1) as mock,
        tempfile.TemporaryDirectory() as tmp,
    ):
        mproc = psutil.Process(mock.pid)
        os.sched_setaffinity(0, {gen_cpu})
        try:
            for rep in range(repeats):
                for route in routes:
                    method, path, body = ROUTES[route]
                    script = _wrk_script(method, body, tmp)
                    for c in concurrencies:
                        order = ("ours", "wrk") if rep % 2 == 0 else ("wrk", "ours")
                        for tool in order:
                            if tool == "ours":
                                r = run_ours(mock.url + path, c, duration_s, warmup_s, method, body, mproc)
                            else:
                                r = run_wrk(mock.url + path, c, duration_s, script, gen_cpu, mproc)
                            samples.setdefault((tool, route, c), []).append(r)
            stats_total = mock.stats()["total"]
        finally:
            os.sched_setaffinity(0, own_affinity)

    rows, ratios = [], []
    for (tool, route, c), rs in samples.items():
        row = {
            "tool": tool,
            "route": route,
            "concurrency": c,
            "repeats": len(rs),
            "errors": sum(r["errors"] for r in rs),
        }
        for k in ("rps", "p50_us", "p99_us", "mock_cpu_util", "gen_cpu_util"):
            row[k] = summarize(r[k] for r in rs if r[k] is not None)
        row["mock_capacity_rps"] = summarize(
            r["rps"] / r["mock_cpu_util"] for r in rs if r["mock_cpu_util"] > 0
        )
        row["gen_capacity_rps"] = summarize(r["rps"] / r["gen_cpu_util"] for r in rs if r["gen_cpu_util"])
        rows.append(row)
    for route in routes:
        for c in concurrencies:
            ours, wrk = samples[("ours", route, c)], samples[("wrk", route, c)]
            ratios.append(
                {
                    "route": route,
                    "concurrency": c,
                    "rps_ours_over_wrk": summarize(o["rps"] / w["rps"] for o, w in zip(ours, wrk)),
                    "p50_ours_over_wrk": summarize(
                        o["p50_us"] / w["p50_us"] for o, w in zip(ours, wrk) if w["p50_us"]
                    ),
                    # requests per generator CPU-second: robust to other load on the machine
                    "gen_efficiency_ours_over_wrk": summarize(
                        (o["rps"] / o["gen_cpu_util"]) / (w["rps"] / w["gen_cpu_util"])
                        for o, w in zip(ours, wrk)
                        if o["gen_cpu_util"] and w["gen_cpu_util"] and w["rps"]
                    ),
                }
            )

    def row(tool, route, c):
        return next(r for r in rows if (r["tool"], r["route"], r["concurrency"]) == (tool, route, c))

    cmax = max(concurrencies)
    headline = {
        "mock_rps_one_core_chat": row("ours", "chat", cmax)["rps"] if "chat" in routes else None,
        "mock_rps_one_core_health": row("ours", "health", cmax)["rps"] if "health" in routes else None,
        "mock_capacity_per_core_chat": row("ours", "chat", cmax)["mock_capacity_rps"]
        if "chat" in routes
        else None,
        "loadgen_capacity_per_core_health": row("ours", routes[0], cmax)["gen_capacity_rps"],
        "rps_ours_over_wrk": {f"{r['route']}@c{r['concurrency']}": r["rps_ours_over_wrk"] for r in ratios},
        "p50_ours_over_wrk": {f"{r['route']}@c{r['concurrency']}": r["p50_ours_over_wrk"] for r in ratios},
        "gen_efficiency_ours_over_wrk": {
            f"{r['route']}@c{r['concurrency']}": r["gen_efficiency_ours_over_wrk"] for r in ratios
        },
        "load_avg_1m_after": os.getloadavg()[0],
    }
    from harness.results.meta import collect, cpu_model

    params = {
        "bench": "tools",
        "duration_s": duration_s,
        "warmup_s_ours": warmup_s,
        "repeats": repeats,
        "concurrencies": list(concurrencies),
        "routes": list(routes),
        "quick": quick,
        "wrk": "wrk -t1 -cC -dD --latency",
        "mock": "threads=1 tokens=16",
    }
    return {
        "machine": {
            "cores": os.cpu_count(),
            "cores_available": len(cpus),
            "cpu_model": cpu_model(),
            "mock_cpu": mock_cpu,
            "gen_cpu": gen_cpu,
            "note": f"{os.cpu_count()}-core machine: mock and generator get one core each"
            + ("" if len(cpus) >= 2 else " (only one core available: they share it)"),
        },
        "params": params,
        "rows": rows,
        "ratios": ratios,
        "headline": headline,
        "mock_requests_seen": stats_total,
        "meta": collect(parameters=params, cores_used=min(2, len(cpus))),
    }


def _s(d, fmt=R.fmt_rate) -> str:
    if not d or d.get("n", 0) == 0:
        return "–"
    return f"{fmt(d['median'])} ({fmt(d['min'])}–{fmt(d['max'])})"


def _x(v: float) -> str:
    return f"{v:.2f}"


def markdown(result) -> str:
    m = result["machine"]
    lines = [
        f"machine: {m['cores']} cores ({m['cpu_model']}); mock on CPU {m['mock_cpu']}, generators on CPU {m['gen_cpu']}",
        "",
        "| tool | route | c | req/s | p50 µs | p99 µs | mock CPU | gen CPU | req/s per mock core | req/s per gen core |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(result["rows"], key=lambda r: (r["route"], r["concurrency"], r["tool"])):
        lines.append(
            f"| {r['tool']} | {r['route']} | {r['concurrency']} | {_s(r['rps'])} | {_s(r['p50_us'])} | "
            f"{_s(r['p99_us'])} | {_s(r['mock_cpu_util'], _x)} | {_s(r['gen_cpu_util'], _x)} | "
            f"{_s(r['mock_capacity_rps'])} | {_s(r['gen_capacity_rps'])} |"
        )
    lines += [
        "",
        "| route | c | req/s ours / wrk | p50 ours / wrk | req per gen CPU-s ours / wrk |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["ratios"]:
        lines.append(
            f"| {r['route']} | {r['concurrency']} | {_s(r['rps_ours_over_wrk'], _x)} | {_s(r['p50_ours_over_wrk'], _x)} | "
            f"{_s(r['gen_efficiency_ours_over_wrk'], _x)} |"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="1 s runs, 2 repeats")
    p.add_argument(
        "--duration", type=float, default=3.0, help="seconds per run (wrk rounds to whole seconds)"
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--concurrency", type=int, action="append", help="repeatable; default 1 and 32")
    p.add_argument("--route", choices=sorted(ROUTES), action="append", help="repeatable; default both")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT")


def run(args: argparse.Namespace) -> int:
    result = measure(
        duration_s=args.duration,
        repeats=args.repeats,
        concurrencies=tuple(args.concurrency or (1, 32)),
        routes=tuple(args.route or ("health", "chat")),
        quick=args.quick,
    )
    print(markdown(result))
    if args.json_out:
        print(f"\nJSON: {R.write_json(args.json_out, result)}")
    return 0
