"""`gatewaylab bench mmrstore`: what the node store (docs/node_store.md) costs and buys,
beside the in-memory design it replaced, in one study.

  append    leaves/s of MerkleMountainRange(store=...) against MerkleMountainRange() (in
            memory), per twin, per leaf and in batches of 256 (the ledger's batch), N leaves,
            `--repeat` alternating runs; ratio store/memory with the worst–best pairing.
  restart   seconds to open an AuditLedger of N records (`--sizes`, default 1M): with the
            store (checkpoint + WAL tail) against the in-memory design (`nodes="memory"`:
            full WAL scan + every record through SHA-256), per twin; the ledger is built
            once per size with the Rust twins, records of `--record-bytes` bytes.
  proofs    inclusion-proof latency from disk at the largest size (p50/p99/max over
            `--proofs` random leaves, each timed alone; the page cache is warm, as it is on a
            running gateway -- cold-cache latency would need root to drop caches).
  soak      (`--soak SECONDS`) RSS of the gateway process sampled every `--sample` seconds
            under `gatewaylab load --rate R` (open loop), per mode (`--modes py,py+rs`) and
            per design (store, memory; rs-core and later rungs have only the store);
            growth per record = slope of a least-squares line
            of RSS over the ledger's count after the first third of the run (warm-up).

Timings are wall-clock medians (min–max) over repeats, taken on whatever else the machine is
running: the ratios, not the absolute figures, are the result. JSON (`--json OUT`):
{"append": [...], "restart": [...], "proofs": [...], "soak": [...], "meta": {...}}.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness.bench import _runner as R


def _spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "values": len(xs)}


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


# -- append ---------------------------------------------------------------------------------
def _append_once(MMR, leaves: list[bytes], api: str, store_dir: str | None) -> float:
    m = MMR(store=os.path.join(store_dir, "b.mmr")) if store_dir else MMR()
    t0 = time.perf_counter()
    if api == "per_leaf":
        app = m.append
        for p in leaves:
            app(p)
    else:
        for k in range(0, len(leaves), 256):
            m.append_many(leaves[k : k + 256])
    dt = time.perf_counter() - t0
    m.close()
    return len(leaves) / dt


def bench_append(impls, n: int, repeat: int) -> list[dict]:
    from gateway.twins import load

    leaves = _leaves(n)
    rows = []
    for impl in impls:
        MMR = load("mmr", impl)
        for api in ("per_leaf", "batch256"):
            rates: dict[str, list[float]] = {"memory": [], "store": []}
            for _ in range(repeat):  # alternate, so drift in machine load hits both alike
                rates["memory"].append(_append_once(MMR, leaves, api, None))
                d = tempfile.mkdtemp(prefix="gatewaylab-mmrstore-")
                try:
                    rates["store"].append(_append_once(MMR, leaves, api, d))
                finally:
                    shutil.rmtree(d, ignore_errors=True)
            mem, st = _spread(rates["memory"]), _spread(rates["store"])
            rows.append(
                {
                    "impl": impl,
                    "api": api,
                    "n": n,
                    "memory_leaves_per_s": mem,
                    "store_leaves_per_s": st,
                    "ratio": st["median"] / mem["median"],
                    "ratio_min": st["min"] / mem["max"],
                    "ratio_max": st["max"] / mem["min"],
                }
            )
    return rows


# -- restart and proofs ---------------------------------------------------------------------
def build_ledger(directory: Path, n: int, record_bytes: int) -> None:
    """A ledger of n records written with the Rust twins (fast), closed cleanly."""
    from gateway.audit.ledger import AuditLedger
    from gateway.twins import Switches

    pad = b"x" * max(0, record_bytes - 8)
    with AuditLedger(directory, fsync="none", switches=Switches("py+rs")) as led:
        for k in range(0, n, 8192):
            led.append_many([i.to_bytes(8, "big") + pad for i in range(k, min(n, k + 8192))])


def _open_time(d: Path, sw, nodes: str, n: int) -> float:
    from gateway.audit.ledger import AuditLedger

    gc.collect()  # the previous ledger's memory is freed before the clock starts, not during
    t0 = time.perf_counter()
    led = AuditLedger(d, fsync="none", switches=sw, nodes=nodes)
    dt = time.perf_counter() - t0
    assert led.count == n
    if nodes == "store":
        assert led.store_recovery["replayed"] == 0, led.store_recovery
    led.close()
    del led
    return dt


def bench_restart(
    impls, sizes, repeat: int, record_bytes: int, workdir: Path, proofs: int, memory_max: int
) -> tuple[list, list]:
    from gateway.audit.ledger import AuditLedger
    from gateway.twins import Switches

    restart, proof_rows = [], []
    for n in sizes:
        d = workdir / f"ledger-{n}"
        t0 = time.perf_counter()
        build_ledger(d, n, record_bytes)
        build_s = time.perf_counter() - t0
        print(f"bench mmrstore: built a ledger of {n:,} records in {build_s:.1f} s", file=sys.stderr)
        for impl in impls:
            sw = Switches("py", {"mmr": impl, "wal": impl})
            designs = ("store", "memory") if n <= memory_max else ("store",)
            times: dict[str, list[float]] = {d_: [] for d_ in designs}
            for _ in range(repeat):
                for nodes in designs:
                    times[nodes].append(_open_time(d, sw, nodes, n))
            st = _spread(times["store"])
            mem = _spread(times["memory"]) if "memory" in times else None
            restart.append(
                {
                    "impl": impl,
                    "n": n,
                    "store_s": st,
                    "memory_s": mem,
                    "speedup": mem["median"] / st["median"] if mem else None,
                }
            )
            if n == max(sizes):
                with AuditLedger(d, fsync="none", switches=sw) as led:
                    rng = random.Random(16)
                    lat, cpu = [], []
                    for _ in range(proofs):
                        i = rng.randrange(n)
                        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                        led.inclusion_proof(i)
                        lat.append(time.perf_counter_ns() - t0)
                        cpu.append(time.thread_time_ns() - c0)
                    lat.sort()
                    cpu.sort()
                    # Wall time includes waiting for a CPU on a shared machine; the calling
                    # thread's CPU time does not (the Rust twin's detached work is in it too).
                    proof_rows.append(
                        {
                            "impl": impl,
                            "n": n,
                            "proofs": proofs,
                            "p50_us": lat[len(lat) // 2] / 1e3,
                            "p99_us": lat[int(len(lat) * 0.99)] / 1e3,
                            "max_us": lat[-1] / 1e3,
                            "cpu_p50_us": cpu[len(cpu) // 2] / 1e3,
                            "cpu_p99_us": cpu[int(len(cpu) * 0.99)] / 1e3,
                            "resident_hashes": led.resident_hashes,
                        }
                    )
        shutil.rmtree(d, ignore_errors=True)
    return restart, proof_rows


# -- soak -----------------------------------------------------------------------------------
def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def soak_one(mode: str, nodes: str, seconds: float, rate: float, sample_s: float, workdir: Path) -> dict:
    import json
    import urllib.request

    from gateway.serving.launch import start_gateway
    from harness.infra.native_procs import run_load, start_mock
    from harness.infra.sweep import API_KEY, CHAT_BODY, CHAT_PATH
    from harness.infra.targets import write_bench_config

    ledger = workdir / f"soak-{mode}-{nodes}".replace("+", "p")
    mock = start_mock()
    gw = None
    try:
        ledger.mkdir(parents=True, exist_ok=True)
        config = write_bench_config(ledger.with_suffix(".yaml"), mock.url, API_KEY, ledger)
        gw = start_gateway(
            None,
            None,
            config=config,
            mode=mode,
            ledger_dir=str(ledger),
            env={"GATEWAYLAB_LEDGER_NODES": nodes},
        )
        pid = int(gw.app_pid)
        samples: list[tuple[float, int, int]] = []
        died: list[str] = []
        stop = threading.Event()

        def count() -> int:
            with urllib.request.urlopen(f"{gw.url}/audit/root", timeout=5) as r:
                return int(json.loads(r.read())["count"])

        def sampler():
            t0 = time.monotonic()
            while not stop.wait(sample_s):
                try:
                    samples.append((time.monotonic() - t0, count(), _rss_bytes(pid)))
                except OSError as e:  # the gateway went away: say so in the result, stop sampling
                    died.append(f"{e} (gateway exit code {gw.proc.poll()})")
                    return

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        try:
            load = run_load(
                gw.url + CHAT_PATH,
                rate=rate,
                duration_s=seconds,
                body=CHAT_BODY,
                timeout_s=2,
                headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
            )
        except Exception as e:  # noqa: BLE001 - a dead gateway: keep what was sampled, report it
            load = {"error": str(e)}
        stop.set()
        th.join()
        if not died:
            samples.append((samples[-1][0] + sample_s if samples else 0.0, count(), _rss_bytes(pid)))
    finally:
        if gw is not None:
            gw.stop()
        mock.stop()
    after = [s for s in samples if s[0] >= seconds / 3] or samples
    per_record = _slope([s[1] for s in after], [s[2] for s in after]) if len(after) > 1 else float("nan")
    shutil.rmtree(ledger, ignore_errors=True)
    return {
        "mode": mode,
        "nodes": nodes,
        "seconds": samples[-1][0] if samples else 0.0,
        "rate": rate,
        "records": samples[-1][1] if samples else 0,
        "died": died[0] if died else None,
        "rss_start_mb": samples[0][2] / 2**20 if samples else float("nan"),
        "rss_end_mb": samples[-1][2] / 2**20 if samples else float("nan"),
        "rss_growth_bytes_per_record": per_record,
        "samples": samples,
        "load_ok_per_s": load.get("throughput") or load.get("rps"),
        "errors": load.get("errors"),
    }


# -- report ---------------------------------------------------------------------------------
def _r(x: dict, fmt) -> str:
    return f"{fmt(x['median'])} ({fmt(x['min'])}–{fmt(x['max'])})"


def markdown(res: dict) -> str:
    out = []
    if res.get("append"):
        out += [
            "**Append** (leaves/s; store / memory as median, worst–best pairing)",
            "",
            "| twin | API | N | in memory | node store | store / memory |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in res["append"]:
            out.append(
                f"| {r['impl']} | {r['api']} | {r['n']:,} | {_r(r['memory_leaves_per_s'], R.fmt_rate)} | "
                f"{_r(r['store_leaves_per_s'], R.fmt_rate)} | {r['ratio']:.2f} ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) |"
            )
        out.append("")
    if res.get("restart"):
        out += [
            "**Restart** (seconds to open a cleanly closed ledger)",
            "",
            "| twin | records | node store | in memory (full replay) | speedup |",
            "|---|---:|---:|---:|---:|",
        ]
        sec = lambda s: f"{s:.3g}"  # noqa: E731
        for r in res["restart"]:
            mem = _r(r["memory_s"], sec) if r["memory_s"] else "not run"
            speed = f"{r['speedup']:.0f}x" if r["speedup"] else "–"
            out.append(f"| {r['impl']} | {r['n']:,} | {_r(r['store_s'], sec)} | {mem} | {speed} |")
        out.append("")
    if res.get("proofs"):
        out += [
            "**Inclusion proofs from disk** (warm page cache)",
            "",
            "| twin | records | proofs | p50 | p99 | max | CPU p50 | CPU p99 | node hashes in memory |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["proofs"]:
            out.append(
                f"| {r['impl']} | {r['n']:,} | {r['proofs']:,} | {r['p50_us']:.1f} µs | {r['p99_us']:.1f} µs | "
                f"{r['max_us']:.0f} µs | {r['cpu_p50_us']:.1f} µs | {r['cpu_p99_us']:.1f} µs | {r['resident_hashes']:,} |"
            )
        out.append("")
    if res.get("soak"):
        out += [
            "**Soak** (gateway RSS under a steady open-loop rate)",
            "",
            "| mode | MMR nodes | seconds | records | RSS start → end | growth per record (after warm-up) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in res["soak"]:
            note = f" (gateway died: {r['died']})" if r.get("died") else ""
            out.append(
                f"| {r['mode']} | {r['nodes']} | {r['seconds']:.0f} | {r['records']:,} | "
                f"{r['rss_start_mb']:.1f} → {r['rss_end_mb']:.1f} MB | {r['rss_growth_bytes_per_record']:.1f} B{note} |"
            )
    return "\n".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", choices=["python", "rust", "both"], default="both")
    p.add_argument("--json", metavar="OUT", help="write the result JSON here")
    p.add_argument("--quick", action="store_true", help="small sizes, no soak (CI)")
    p.add_argument("--n", type=int, default=200_000, help="append: leaves per run")
    p.add_argument("--repeat", type=int, default=5, help="append/restart: alternating runs per design")
    p.add_argument("--sizes", default="1000000", help="restart: ledger sizes, comma-separated")
    p.add_argument("--record-bytes", type=int, default=300, help="restart: bytes per WAL record")
    p.add_argument(
        "--memory-max",
        type=int,
        default=2_000_000,
        help="restart: time the in-memory design only up to this many records (it replays everything)",
    )
    p.add_argument("--proofs", type=int, default=20_000, help="proofs timed at the largest size")
    p.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="soak seconds per mode and design (0: skip)",
    )
    p.add_argument("--rate", type=float, default=2000.0, help="soak: requests per second")
    p.add_argument("--sample", type=float, default=5.0, help="soak: seconds between RSS samples")
    p.add_argument("--modes", default="py,py+rs", help="soak: gateway modes")
    p.add_argument("--parts", default="append,restart,soak", help="which parts to run")
    p.add_argument("--workdir", default=None, help="where ledgers are built (default: a temp dir)")


def run(args: argparse.Namespace) -> int:
    R.require_release()
    impls = R.impls_from(args)
    parts = set(args.parts.split(","))
    n = 20_000 if args.quick else args.n
    sizes = [20_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 2 if args.quick else args.repeat
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gatewaylab-mmrstore-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"append": [], "restart": [], "proofs": [], "soak": []}
    try:
        if "append" in parts:
            res["append"] = bench_append(impls, n, repeat)
        if "restart" in parts:
            res["restart"], res["proofs"] = bench_restart(
                impls,
                sizes,
                repeat,
                args.record_bytes,
                work,
                2000 if args.quick else args.proofs,
                args.memory_max,
            )
        if "soak" in parts and args.soak > 0 and not args.quick:
            for mode in args.modes.split(","):
                # The in-memory design exists only in the Python ledger (rungs py and py+rs).
                for nodes in ("memory", "store") if mode in ("py", "py+rs") else ("store",):
                    res["soak"].append(soak_one(mode, nodes, args.soak, args.rate, args.sample, work))
                    print(f"bench mmrstore: soak {mode} {nodes} done", file=sys.stderr)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    from harness.results.meta import collect

    res["meta"] = collect(
        parameters={"bench": "mmrstore", **{k: v for k, v in vars(args).items() if k != "json"}}
    )
    print(markdown(res))
    if args.json:
        R.write_json(args.json, res)
        print(f"result JSON: {args.json}", file=sys.stderr)
    return 0
