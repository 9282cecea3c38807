"""The reliability figures of docs/reliability.md, in one run folder (data/runs/<t>-reliability).

    python -m harness.studies.reliability_figures [--modes py,py+rs] [--kills 100] [--durable-kills 30]
        [--soak-s 1800] [--overload-s 30] [--chaos-s 30] [--ack-repeat 5] [--skip torture,ack,...]

Per rung: torture (kills, records lost, roots checked, torn tails; with --ack durable:
acknowledged answers missing), the cost of ledger.ack durable against background (c = 1 p50
and c = 16 req/s, fsync group and always, median [min-max] over --ack-repeat runs and the
ratio), a steady soak (RSS growth after warm-up, p99 drift), overload at 2x (peak RSS,
recovery time), overload at 2x with admission control (--shed-max-in-flight against a mock
at --shed-latency-ms: shed rate, p99 of the admitted, admitted answers missing from the
ledger), upstream chaos (answered vs audited). Writes figures.json and figures.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import yaml

STEPS = ("torture", "ack", "soak", "overload", "shed", "chaos")


def _spread(xs) -> str:
    return f"{statistics.median(xs):.4g} [{min(xs):.4g}–{max(xs):.4g}]"


def ack_cost(mode: str, repeat: int, seconds: float = 4.0) -> list[dict]:
    """c=1 p50 and c=16 req/s, background vs durable, fsync group and always; interleaved."""
    from gateway.serving.launch import start_gateway
    from gateway.stages.auth import hash_key
    from harness.infra.native_procs import run_load, start_mock

    key = "sk-ack-cost"
    body = {"model": "mock", "messages": [{"role": "user", "content": "ack cost"}], "max_tokens": 8}
    rows = []
    with start_mock(latency_ms=1.0, seed=11) as mock, tempfile.TemporaryDirectory() as tmp:
        for fsync in ("group", "always"):
            res: dict = {}
            for k in range(repeat):
                for ack in ("background", "durable"):
                    cfg = os.path.join(tmp, f"{fsync}-{ack}-{k}.yaml")
                    with open(cfg, "w") as f:
                        yaml.safe_dump(
                            {
                                "model_list": [
                                    {
                                        "model_name": "mock",
                                        "upstream": {"kind": "openai", "base_url": mock.url},
                                    }
                                ],
                                "keys": [{"id": "a", "sha256": hash_key(key)}],
                                "ledger": {
                                    "dir": os.path.join(tmp, f"l-{fsync}-{ack}-{k}"),
                                    "fsync": fsync,
                                    "ack": ack,
                                },
                            },
                            f,
                        )
                    gw = start_gateway(None, None, mode=mode, config=cfg)
                    try:
                        url = gw.url + "/v1/chat/completions"
                        h = {"Authorization": f"Bearer {key}"}
                        c1 = run_load(
                            url, concurrency=1, duration_s=seconds, warmup_s=0.5, headers=h, body=body
                        )
                        c16 = run_load(
                            url, concurrency=16, duration_s=seconds, warmup_s=0.5, headers=h, body=body
                        )
                    finally:
                        gw.stop()
                    r = res.setdefault(ack, {"c1_p50_us": [], "c16_rps": []})
                    r["c1_p50_us"].append(c1["latency_us"]["p50"])
                    r["c16_rps"].append(c16["rps"])
            b, d = res["background"], res["durable"]
            rows.append(
                {
                    "mode": mode,
                    "fsync": fsync,
                    "repeat": repeat,
                    "c1_p50_us_background": b["c1_p50_us"],
                    "c1_p50_us_durable": d["c1_p50_us"],
                    "c16_rps_background": b["c16_rps"],
                    "c16_rps_durable": d["c16_rps"],
                    "c1_p50_ratio": statistics.median(d["c1_p50_us"]) / statistics.median(b["c1_p50_us"]),
                    "c16_rps_ratio": statistics.median(d["c16_rps"]) / statistics.median(b["c16_rps"]),
                }
            )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.studies.reliability_figures")
    p.add_argument("--modes", default="py,py+rs")
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--durable-kills", type=int, default=30)
    p.add_argument("--soak-s", type=float, default=1800)
    p.add_argument("--overload-s", type=float, default=30)
    p.add_argument("--chaos-s", type=float, default=30)
    p.add_argument("--ack-repeat", type=int, default=5)
    p.add_argument("--shed-max-in-flight", type=int, default=8)
    p.add_argument("--shed-latency-ms", type=float, default=50.0)
    p.add_argument("--skip", default="")
    p.add_argument("--out", default=None, help="runs root")
    a = p.parse_args(argv)
    from gateway.errors import GatewayLabError
    from harness.infra import soak
    from harness.infra.torture import run_torture
    from harness.results.runs import create_run

    skip = set(filter(None, a.skip.split(",")))
    modes = a.modes.split(",")
    run = create_run("reliability", parameters=vars(a), root=a.out)
    figs: dict = {"modes": modes, "machine_load_start": os.getloadavg()}

    def save():
        run.write_json("figures.json", figs)

    def log(s):
        print(s, file=sys.stderr, flush=True)

    for mode in modes:
        f = figs.setdefault(mode, {})
        if "torture" not in skip:
            t0 = time.monotonic()
            f["torture"] = run_torture(mode, a.kills, seed=100, log=log).as_dict()
            try:
                f["torture_durable"] = run_torture(
                    mode, a.durable_kills, ack="durable", seed=101, log=log
                ).as_dict()
            except GatewayLabError as e:  # a rung without ledger.ack durable refuses it
                f["torture_durable"] = {"error": str(e)}
            log(f"{mode} torture done in {time.monotonic() - t0:.0f}s")
            save()
        if "ack" not in skip:
            f["ack_cost"] = ack_cost(mode, a.ack_repeat)
            save()
        if "chaos" not in skip:
            f["chaos"] = soak.run_chaos(mode, a.chaos_s, 100.0)
            save()
        if "overload" not in skip:
            f["overload"] = soak.run_overload(mode, a.overload_s, 2.0, log=log)
            save()
        if "shed" not in skip:
            f["shed"] = soak.run_overload(
                mode,
                a.overload_s,
                2.0,
                max_in_flight=a.shed_max_in_flight,
                mock_latency_ms=a.shed_latency_ms,
                connections=64,
                log=log,
            )
            save()
        if "soak" not in skip:
            f["soak"] = soak.run_steady(mode, a.soak_s, out_root=a.out, log=log)
            save()
    figs["machine_load_end"] = os.getloadavg()
    save()
    run.write_text("figures.md", to_markdown(figs))
    print(run.path)
    return 0


def to_markdown(figs: dict) -> str:
    out = [
        "# Reliability figures",
        "",
        f"load average at start {figs['machine_load_start']}, end {figs.get('machine_load_end')}",
        "",
    ]
    for mode in figs["modes"]:
        f = figs.get(mode, {})
        out.append(f"## {mode}")
        if "torture" in f:
            t, d = f["torture"], f["torture_durable"]
            out.append(
                f"- torture (background): kills {t['kills']}, records lost {t['records_lost']}, roots checked "
                f"{t['roots_checked']} (failed {t['roots_failed']}), torn tails {t['torn_tails']}, "
                f"acknowledged answers missing after a kill {t['acked_missing']} of {t['acked']}"
            )
            if "error" in d:
                out.append(f"- torture (durable): {d['error']}")
            else:
                out.append(
                    f"- torture (durable): kills {d['kills']}, records lost {d['records_lost']}, acknowledged "
                    f"answers missing {d['acked_missing']} of {d['acked']}, roots checked {d['roots_checked']}"
                )
        for r in f.get("ack_cost", []):
            out.append(
                f"- ack durable vs background, fsync {r['fsync']} (n={r['repeat']}): c=1 p50 "
                f"{_spread(r['c1_p50_us_durable'])} vs {_spread(r['c1_p50_us_background'])} us "
                f"(x{r['c1_p50_ratio']:.2f}); c=16 req/s {_spread(r['c16_rps_durable'])} vs "
                f"{_spread(r['c16_rps_background'])} (x{r['c16_rps_ratio']:.2f})"
            )
        if "chaos" in f:
            c = f["chaos"]
            out.append(
                f"- chaos: answered {c['answered']} of {c['requests']}, audited {c['audited']} "
                f"{c['audited_by_status']}, transport failures {c['transport_failures']}"
            )
        if "overload" in f:
            o = f["overload"]
            out.append(
                f"- overload 2x ({o['rate']:.0f} req/s, {o['duration_s']:g}s): ok {o['ok']} of {o['requests']}, "
                f"errors {o['errors']}, p99 {o['latency_us']['p99']} us, peak RSS {o['rss_peak_mb']:.1f} MiB "
                f"(before {o['rss_mb_before']:.1f}), recovery {o['recovery_s']} s"
            )
        if "shed" in f:
            o = f["shed"]
            out.append(
                f"- overload 2x with max_in_flight {o['max_in_flight']} (mock {o['mock_latency_ms']:g} ms, "
                f"{o['rate']:.0f} req/s, {o['duration_s']:g}s): shed {o['shed']} of {o['requests']} "
                f"({o['shed_rate']:.1%}), admitted p99 {o['admitted_latency_us'].get('p99')} us (all answers "
                f"{o['latency_us']['p99']} us), errors {o['errors']}, admitted missing from the ledger "
                f"{o['admitted_lost']} of {o['admitted_total']}, peak RSS {o['rss_peak_mb']:.1f} MiB, "
                f"recovery {o['recovery_s']} s"
            )
        if "soak" in f:
            s = f["soak"]
            out.append(
                f"- soak {s['duration_s']:g}s at {s['rate']:g} req/s: RSS {s['rss_mb_after_warmup']:.1f} -> "
                f"{s['rss_mb_end']:.1f} MiB ({s['rss_growth']:+.2%}), p99 drift x{s['p99_drift']:.2f}, "
                f"audit lag max {s['audit_lag_max']}"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
