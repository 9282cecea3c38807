"""`gatewaylab bench NAME ... --pythons 3.11,3.12,3.13`: one benchmark on each interpreter, and
one comparison (docs/interpreters.md).

Each interpreter runs the whole benchmark command in its own venv (harness.interpreters):

    <venv>/bin/python -m harness.cli bench NAME ARGS --json OUT.<slug>.json

so every part of it -- pyperf's worker processes, the spawn rounds in-process, the mock the
stage benchmark starts -- runs on that interpreter, with that venv's copy of the project and
its extension. The interpreters run one after the other, in the order given.

JSON (`--json OUT`; each interpreter's own result also stays in OUT.<slug>.json):
    {"format": "gatewaylab.bench-pythons/1", "bench": NAME, "args": [...],
     "discovery": {"usable": [...], "unusable": [...]} | null,
     "pythons": [{"label", "tag", "interpreter": {...}, "venv": {...}, "json": PATH}],
     "results": {label: <the benchmark's own JSON>},
     "comparison": [{"component", "measure", "python", "tag", "value", "min", "max", "unit", "desc"}],
     "not_compared": "...",     # when the benchmark has no headline figures (tools, mmrstore, ...)
     "meta": {...}}            # the harness's own meta (git sha, machine)

`comparison` holds each benchmark's headline figures per interpreter (`headlines`): the Rust
advantage (Python twin's cost / Rust twin's cost, >1 = Rust cheaper) per component, and the
costs that have no twin (spawn). Each carries the spread the benchmark gives (median [min-max]).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.errors import GatewayLabError

FORMAT = "gatewaylab.bench-pythons/1"
FLAG = "--pythons"


def split_pythons_flag(rest: list[str]) -> tuple[list[str], str | None]:
    """Take `--pythons X` / `--pythons=X` out of a benchmark's own arguments."""
    out, spec, i = [], None, 0
    while i < len(rest):
        a = rest[i]
        if a == FLAG:
            if i + 1 >= len(rest) or rest[i + 1].startswith("-"):
                raise GatewayLabError("--pythons needs a value, e.g. --pythons 3.11,3.12,3.13")
            spec, i = rest[i + 1], i + 2
            continue
        if a.startswith(FLAG + "="):
            spec = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return out, spec


def _take_option(rest: list[str], name: str) -> tuple[list[str], str | None]:
    out, val, i = [], None, 0
    while i < len(rest):
        a = rest[i]
        if a == name and i + 1 < len(rest):
            val, i = rest[i + 1], i + 2
            continue
        if a.startswith(name + "="):
            val = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return out, val


def _suffixed(path: str, slug: str) -> Path:
    p = Path(path)
    stem = p.name.removesuffix(".json")
    return p.with_name(f"{stem}.{slug}.json")


def run_across(name: str, rest: list[str], spec: str, out=print) -> int:
    """Run `gatewaylab bench NAME REST` on each interpreter of `spec`; print each table and the
    comparison; write the combined JSON when REST has --json."""
    import argparse
    import importlib

    from harness.infra import interpreters as I

    mod = importlib.import_module(f"harness.bench.{name}")
    # the benchmark's own options are checked here, before any venv is built
    p = argparse.ArgumentParser(prog=f"gatewaylab bench {name}")
    mod.add_arguments(p)
    p.parse_args(rest)
    rest, json_out = _take_option(rest, "--json")
    rest, pyperf_out = _take_option(rest, "--pyperf-json")
    found, envs = I.from_spec(spec, log=out)
    tmp = tempfile.TemporaryDirectory(prefix=f"gatewaylab-bench-{name}-")
    base = json_out or str(Path(tmp.name) / f"{name}.json")
    pythons, results = [], {}
    try:
        for env in envs:
            child_json = _suffixed(base, env.interp.slug)
            child_json.parent.mkdir(parents=True, exist_ok=True)
            cmd = [str(env.python), "-m", "harness.cli", "bench", name, *rest, "--json", str(child_json)]
            if pyperf_out:
                cmd += ["--pyperf-json", str(_suffixed(pyperf_out, env.interp.slug))]
            how = {"reused": "venv reused", "built": "venv built", "reinstalled": "project reinstalled"}
            out(f"\n## {env.label} — {env.interp.path} ({how[env.action]} in {env.seconds:.1f} s)\n")
            with env.hold():
                r = subprocess.run(cmd, cwd=env.venv, env=env.env(), capture_output=True, text=True)
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["no output"])[-1]
                raise GatewayLabError(f"bench {name} on {env.label} failed (exit {r.returncode}): {last}")
            out(r.stdout.rstrip())
            results[env.label] = json.loads(child_json.read_text())
            pythons.append(
                {
                    "label": env.label,
                    "tag": env.interp.tag,
                    "interpreter": env.interp.to_dict(),
                    "venv": env.to_dict(),
                    "json": str(child_json) if json_out else None,
                }
            )
    finally:
        tmp.cleanup()
    rows = [h for label, res in results.items() for h in headlines(name, res, label, _tag(pythons, label))]
    out("")
    out(
        comparison_markdown(rows)
        if rows
        else f"_bench {name}: no headline figures to compare across interpreters_"
    )
    if json_out:
        from harness.bench._runner import write_json
        from harness.results.meta import collect

        doc: dict[str, Any] = {
            "format": FORMAT,
            "bench": name,
            "args": rest,
            "discovery": found.to_dict() if found is not None else None,
            "pythons": pythons,
            "results": results,
            "comparison": rows,
            "meta": collect(parameters={"bench": name, "args": rest, "pythons": spec}),
        }
        if not rows:
            doc["not_compared"] = f"bench {name} has no headline figures (harness.bench._pythons.headlines)"
        write_json(json_out, doc)
        print(f"result JSON: {json_out}", file=sys.stderr)
    return 0


def _tag(pythons: list[dict], label: str) -> str:
    return next(p["tag"] for p in pythons if p["label"] == label)


# --- headline figures of each benchmark -----------------------------------------------------


def _adv_cost(py: dict, rs: dict, k: str) -> tuple[float, float, float]:
    """Python cost / Rust cost from per-call costs (median, min = fastest, max = slowest)."""
    return py[k] / rs[k], py["min"] / rs["max"], py["max"] / rs["min"]


def _adv_rate(py: dict, rs: dict, k: str) -> tuple[float, float, float]:
    """Rust rate / Python rate from rates (median, min = slowest, max = fastest)."""
    return rs[k] / py[k], rs["min"] / py["max"], rs["max"] / py["min"]


def _row(component, measure, label, tag, trip, unit, desc) -> dict:
    v, lo, hi = trip
    return {
        "component": component,
        "measure": measure,
        "python": label,
        "tag": tag,
        "value": float(v),
        "min": float(lo),
        "max": float(hi),
        "unit": unit,
        "desc": desc,
    }


def headlines(bench: str, result: dict, label: str, tag: str) -> list[dict]:
    """The figures a comparison across interpreters shows for one benchmark result: the Rust
    advantage per component (`measure` "rust_advantage", unit "x") and the Python twin's own
    cost ("python_cost"). Empty for benchmarks without twins to compare."""
    rows: list[dict] = []
    if bench == "stages":
        by = {(r["stage"], r["impl"]): r for r in result["rows"]}
        for (stage, impl), r in by.items():
            if impl != "python":
                continue
            py = (r["us_per_request"], r["min"], r["max"])
            rows.append(_row(stage, "python_cost", label, tag, py, "µs", f"{stage}: Python µs per request"))
            rs = by.get((stage, "rust"))
            if rs:
                rows.append(
                    _row(
                        stage,
                        "rust_advantage",
                        label,
                        tag,
                        _adv_cost(r, rs, "us_per_request"),
                        "x",
                        f"{stage}: Python / Rust µs per request",
                    )
                )
    elif bench == "hash":
        by = {(r["impl"], r["size"]): r for r in result["rows"]}
        for (impl, size), py in by.items():
            rs = by.get(("rust", size))
            if impl == "python" and rs:
                rows.append(
                    _row(
                        f"hash {size} B",
                        "rust_advantage",
                        label,
                        tag,
                        _adv_cost(py, rs, "ns_per_call"),
                        "x",
                        f"sha256_hex of {size} B: Python / Rust ns per call",
                    )
                )
    elif bench == "entropy":
        by = {(r["impl"], r["case"]): r for r in result["rows"]}
        for (impl, case), py in by.items():
            rs = by.get(("rust", case))
            if impl == "python" and rs:
                rows.append(
                    _row(
                        f"entropy {case}",
                        "rust_advantage",
                        label,
                        tag,
                        _adv_cost(py, rs, "ns_per_call"),
                        "x",
                        f"entropy ({case} body): Python / Rust ns per call",
                    )
                )
    elif bench == "mmr":
        n = max(r["n"] for r in result["rows"])
        by = {(r["impl"], r["api"]): r for r in result["rows"] if r["n"] == n}
        py = by.get(("python", "per_leaf"))
        py_cost = (1e9 / py["leaves_per_s"], 1e9 / py["max"], 1e9 / py["min"]) if py else None
        if py_cost:
            rows.append(
                _row("mmr append", "python_cost", label, tag, py_cost, "ns", f"Python ns per leaf, N={n}")
            )
        for api in ("per_leaf", "batch"):
            rs = by.get(("rust", api))
            if py and rs:
                rows.append(
                    _row(
                        f"mmr append ({api.replace('_', '-')})",
                        "rust_advantage",
                        label,
                        tag,
                        _adv_rate(py, rs, "leaves_per_s"),
                        "x",
                        f"Rust {api} / Python per-leaf leaves/s, N={n}",
                    )
                )
    elif bench == "wal":
        by = {(r["impl"], r["policy"], r["api"]): r for r in result["rows"]}
        for (impl, policy, api), py in by.items():
            rs = by.get(("rust", policy, api))
            if impl == "python" and rs:
                rows.append(
                    _row(
                        f"wal {policy} {api.replace('_', '-')}",
                        "rust_advantage",
                        label,
                        tag,
                        _adv_rate(py, rs, "records_per_s"),
                        "x",
                        f"WAL fsync={policy} {api}: Rust / Python records/s",
                    )
                )
    elif bench == "spawn":
        by = {r["what"]: r for r in result["rows"]}
        sp = by["spawn_background"]
        rows.append(
            _row(
                "spawn",
                "python_cost",
                label,
                tag,
                (sp["p50_us"], sp["p50_min_us"], sp["p50_max_us"]),
                "µs",
                "_spawn_background p50 µs per call",
            )
        )
        r50 = result["ratio_p50"]
        rows.append(
            _row(
                "spawn",
                "over_create_task",
                label,
                tag,
                (r50["median"], r50["min"], r50["max"]),
                "x",
                "_spawn_background / bare create_task, p50",
            )
        )
    return rows


def comparison_markdown(rows: list[dict]) -> str:
    """component | measure | one column per interpreter: median [min–max]."""
    labels = list(dict.fromkeys(r["python"] for r in rows))
    keys = list(dict.fromkeys((r["component"], r["measure"], r["unit"]) for r in rows))
    by = {(r["component"], r["measure"], r["python"]): r for r in rows}
    what = {
        "rust_advantage": "Rust advantage (Python / Rust)",
        "python_cost": "Python twin's cost",
        "over_create_task": "÷ bare create_task",
    }
    lines = [
        "| component | measure | " + " | ".join(labels) + " |",
        "|---|---|" + "---:|" * len(labels),
    ]
    for comp, meas, unit in keys:
        cells = []
        for lab in labels:
            r = by.get((comp, meas, lab))
            u = "x" if unit == "x" else f" {unit}"
            cells.append("–" if r is None else f"{r['value']:.3g}{u} [{r['min']:.3g}–{r['max']:.3g}]")
        lines.append(f"| {comp} | {what.get(meas, meas)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
