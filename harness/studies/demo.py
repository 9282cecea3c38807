"""The main study, what `make demo` runs: `python -m harness.studies.demo [--quick] [--steps a,b]`.

It creates one run folder (`data/runs/<timestamp>-demo/`), runs each study step into it,
and writes `report.md` (a one-line machine/build description, then one section per step:
markdown tables with spread) beside each step's JSON, pyperf JSON and Parquet tables.

A step is `Step(name, title, run)` where `run(ctx) -> str` does its measurements, writes
its artefacts through `ctx.run` (a harness.results.runs.Run) and returns its markdown section.
Adding to the study is appending to `STEPS`. Steps today: the MMR study (bench mmr), the
WAL study (bench wal), spawn cost (bench spawn) and the concurrency sweep over the rungs py, py+rs
and rs-core. Everything runs on the harness's own interpreter; the report ends with the one
command that repeats the study on every interpreter the machine has (`INTERPRETER_AXIS`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.results import runs
from harness.results.meta import describe


@dataclass
class Context:
    run: runs.Run
    quick: bool = False
    results: dict = field(default_factory=dict)  # step name -> whatever the step wants to share

    def log(self, msg: str) -> None:
        print(f"[demo] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[Context], str]


def step_mmr(ctx: Context) -> str:
    from harness.bench import mmr

    res = mmr.measure(quick=ctx.quick, pyperf_json=ctx.run.artefact("mmr.pyperf.json"))
    ctx.run.write_json("mmr.json", res)
    ctx.run.write_table("mmr", res["rows"])
    ctx.run.write_table("mmr_sha256_bound", res["sha256_bound"])
    r = mmr.ratios(res)
    ctx.results["mmr"] = {"result": res, "ratios": r}
    lines = [
        "Leaves/s appending seed leaves (`sha256(i.to_bytes(8, 'big'))`) to a fresh MMR; "
        "median (slowest–fastest) over every pyperf value; ratios as median (worst–best pairing).",
        "",
        mmr.markdown(res),
        "",
        f"At N = {r['n']:,}: Rust/Python per leaf **{r.get('rust_over_python_per_leaf', float('nan')):.1f}x** "
        f"(the seed reports 3.34x); Rust batch/Python **{r.get('batch_over_python', float('nan')):.1f}x**; "
        f"Rust batch reaches **{r.get('batch_share_of_sha256_bound', float('nan')):.0%}** of the SHA-256 bound "
        "(leaf hashing alone, OpenSSL's libcrypto from Rust).",
        "",
        "Artefacts: `mmr.json`, `mmr.pyperf.json` (`python -m pyperf compare_to` works on it), `mmr.parquet`, "
        "`mmr_sha256_bound.parquet`.",
    ]
    return "\n".join(lines)


def step_wal(ctx: Context) -> str:
    from harness.bench import wal

    tmp = ctx.run.artefact("wal-tmp/x").parent  # on the same disk as the results, not a tmpfs
    res = wal.measure(quick=ctx.quick, directory=str(tmp), pyperf_json=ctx.run.artefact("wal.pyperf.json"))
    try:
        tmp.rmdir()
    except OSError:
        pass
    ctx.run.write_json("wal.json", res)
    ctx.run.write_table("wal", res["rows"])
    ctx.results["wal"] = {"result": res}
    size = res["rows"][0]["size"] if res["rows"] else 0
    return "\n".join(
        [
            f"Records/s appending {size}-byte records, including the final `flush()`; per fsync policy and twin; "
            "median (slowest–fastest). `always` fsyncs every record, `group` once per batch "
            "(bounded delay; `append_many` is one batch), `none` never.",
            "",
            wal.markdown(res),
            "",
            "Artefacts: `wal.json`, `wal.pyperf.json`, `wal.parquet`.",
        ]
    )


def step_spawn(ctx: Context) -> str:
    from harness.bench import spawn

    res = spawn.measure(quick=ctx.quick, pyperf_json=str(ctx.run.artefact("spawn.pyperf.json")))
    ctx.run.write_json("spawn.json", res)
    ctx.run.write_table("spawn", res["rows"])
    ctx.results["spawn"] = res
    return "\n".join(
        [
            "Per-call cost of the gateway's real `_spawn_background` (the only audit work on the hot path) beside a "
            "bare `asyncio.create_task` of a no-op, same loop, alternating rounds; median [per-round min–max].",
            "",
            spawn.markdown(res),
            "",
            "Artefacts: `spawn.json`, `spawn.pyperf.json`, `spawn.parquet`.",
        ]
    )


RUNGS = ("py", "py+rs", "rs-core")


def step_sweep(ctx: Context) -> str:
    from harness.infra.sweep import run_sweep
    from harness.results.report import peaks

    kw = (
        dict(ci=True) if ctx.quick else dict(concurrency=range(1, 17), duration_s=3.0, warmup_s=1.0, repeat=3)
    )
    res = run_sweep(  # throughput cells only: the demo reports no GIL view
        modes=RUNGS,
        profile="xeon-4c",
        out=ctx.run.path / "sweeps",
        name="rungs",
        progress=True,
        gil=False,
        **kw,
    )
    ctx.results["sweep"] = res
    pk = peaks(res.table)
    lines = [
        f"Closed-loop sweep over the rungs {', '.join(f'`{m}`' for m in RUNGS)} (asgi shell), profile {res.meta.get('hardware_profile')} "
        f"(profile_satisfied: {str(res.meta.get('profile_satisfied')).lower()}). Full report: "
        f"`{res.dir.relative_to(ctx.run.path)}/report.md` and `report.html`.",
        "",
    ]
    if len(pk):
        lines += [
            "| line | peak c | peak req/s | req/s at c=1 | p99 at peak µs |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r.line} | {r.peak_concurrency} | {r.peak_rps:,.0f} | {r.rps_at_c1:,.0f} | {r.p99_at_peak_us:,.0f} |"
            for r in pk.itertuples()
        ]
    bad = res.table[res.table["status"] != "ok"]
    if len(bad):
        lines += ["", f"{len(bad)} cell(s) did not complete; see the sweep report."]
    return "\n".join(lines)


# The interpreter axis (docs/interpreters.md): the report's last line, with this run's interpreter.
INTERPRETER_AXIS = (
    "These figures are from {python}. The interpreter is an axis too: "
    "`gatewaylab sweep --modes py,py+rs,rs-core --pythons 3.11,3.12,3.13` (and `gatewaylab bench mmr "
    "--pythons 3.11,3.12,3.13`) repeat the study on each CPython found, each in its own venv "
    "(docs/interpreters.md; notebook 11_interpreters)."
)

STEPS: list[Step] = [
    Step("mmr", "MMR: Python twin vs Rust twin vs the SHA-256 bound", step_mmr),
    Step("wal", "WAL: records/s per fsync policy and twin", step_wal),
    Step("spawn", "Spawn cost: _spawn_background vs a bare create_task", step_spawn),
    Step("sweep", "Concurrency sweep: py vs py+rs vs rs-core", step_sweep),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.studies.demo", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    p.add_argument(
        "--steps",
        default=",".join(s.name for s in STEPS),
        help="comma-separated steps to run (default: all): " + ", ".join(s.name for s in STEPS),
    )
    p.add_argument("--name", default="demo", help="run folder name suffix")
    p.add_argument("--root", default=None, help="runs root (default data/runs or $GATEWAYLAB_RUNS_DIR)")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    known = {s.name: s for s in STEPS}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        p.error(f"unknown steps {unknown}; known: {', '.join(known)}")

    from gateway.errors import GatewayLabError
    from harness.bench._runner import require_release

    try:
        require_release()
    except GatewayLabError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    run = runs.create_run(args.name, parameters={"quick": args.quick, "steps": wanted}, root=args.root)
    ctx = Context(run=run, quick=args.quick)
    ctx.log(f"run folder {run.path}")
    header = [
        "# gatewaylab study",
        "",
        f"_{describe(run.meta)}_",
        "",
        f"Run `{run.name}`{' (quick, CI-sized)' if args.quick else ''}; started {run.meta.get('start_time')}.",
        "",
    ]
    sections, timings = [], {}
    for name in wanted:
        step = known[name]
        ctx.log(f"step {name}: {step.title} ...")
        t0 = time.monotonic()
        try:
            body = step.run(ctx)
        except GatewayLabError as e:
            body = f"**step failed:** {e}"
            ctx.log(f"step {name} failed: {e}")
        timings[name] = round(time.monotonic() - t0, 1)
        sections.append(f"## {step.title}\n\n{body}\n")
        run.write_text("report.md", "\n".join(header + sections))  # a partial report survives a later failure
    end_load = runs._meta.load_average()
    run.update_meta(end_time=runs._meta.utc_now(), step_seconds=timings, load_average_end=end_load)
    if end_load:
        header.append(
            f"Load average (1 min) at start {run.meta['load_average'][0]:.1f}, at end {end_load[0]:.1f} "
            f"on {run.meta['cores_available']} cores: other work on the machine widens the spreads.\n"
        )
    footer = [INTERPRETER_AXIS.format(python=run.meta.get("python") or "this interpreter"), ""]
    report = run.write_text("report.md", "\n".join(header + sections + footer))
    ctx.log(INTERPRETER_AXIS.format(python=run.meta.get("python") or "this interpreter"))
    print(report)
    return 0 if all("**step failed:**" not in s for s in sections) else 1


if __name__ == "__main__":
    sys.exit(main())
