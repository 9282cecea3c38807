"""What the label rules change: each sweep cell judged by the rules it runs under now and by
the rules the harness had before them, from the same measurement.

Before, a cell was "ok" when any request succeeded, and its CPU per request divided the CPU
time by every finished request, failures included. Now (harness.infra.sweep.cell_verdict) a
cell with errors it did not set out to cause is failed, a cell whose claimed stages did not
each run once per request is failed, and CPU per request counts successful answers only.
Both verdicts come from one cell's own numbers, so they are exact for that measurement.

The limiter's part is a measurement of its own: a sweep with `--governance on,on-unlimited`
runs everything on with the key's limits (the limiter runs) and without them (how "on" ran
before: the limiter looks the key up and returns at once), interleaved; `limiter_pairs`
sets each `on` cell beside its `on-unlimited` twin (same target, concurrency, repeat) and
says whether the unlimited cell would have passed the stage check under the old label, which
claimed the limiter ran (`ratelimit` counts a bucket consulted: with no limits, none is).

    gatewaylab verdicts RUN_DIR [RUN_DIR ...] [--json OUT]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

# the reasons only the rules added since give a cell (cell_verdict and the stage check)
NEW_RULE_REASONS = ("unexpected errors:", "errors on ", "stage check:")


def cell_tables(paths: Iterable[str | Path]) -> list[tuple[Path, pd.DataFrame]]:
    """Every cells table under the given run folders (a folder of runs: each run in it)."""
    from gateway.errors import InvalidInput

    out: list[tuple[Path, pd.DataFrame]] = []
    seen: set[str] = set()  # a notebook's folder repeats its main sweep's table: each run once
    for p in map(Path, paths):
        if not p.is_dir():
            raise InvalidInput(f"{p}: not a run folder")
        found = sorted(p.rglob("cells.parquet"))
        if not found:
            raise InvalidInput(f"{p}: no cells.parquet under it (a sweep run folder, or a folder of them)")
        for f in found:
            try:
                d = pd.read_parquet(f)
            except Exception as e:  # noqa: BLE001 - a damaged table is one line, not a traceback
                raise InvalidInput(f"{f}: not a readable cells table ({type(e).__name__}: {e})") from None
            ids = set(d["run_id"].astype(str)) if "run_id" in d else {str(f)}
            if ids and ids <= seen:
                continue
            seen |= ids
            out.append((f, d))
    return out


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def finished(row: pd.Series) -> float | None:
    """Requests that finished in the window (answered or failed): successes / (1 - error share)."""
    ok, share = _num(row.get("requests")), _num(row.get("error_share"))
    if ok is None:
        return None
    if share is None or share == 0.0:
        return ok
    if share >= 1.0:
        return _num(row.get("errors"))
    return ok / (1.0 - share)


def old_status(row: pd.Series) -> str:
    """The cell's verdict under the rules before: ok when any request succeeded (a cell the
    new rules failed for errors or stages); otherwise what it is now (skipped, an exception)."""
    status, err = str(row.get("status") or ""), str(row.get("error") or "")
    ok = _num(row.get("requests")) or 0.0
    if status == "failed" and ok > 0 and err.startswith(NEW_RULE_REASONS):
        return "ok"
    return status


def old_cpu_us_per_req(row: pd.Series) -> float | None:
    """CPU µs per finished request, failures included (the rule before)."""
    user, sys_, n = _num(row.get("cpu_user_s")), _num(row.get("cpu_sys_s")), finished(row)
    if user is None or sys_ is None or not n:
        return None
    return (user + sys_) / n * 1e6


def judge(tables: list[tuple[Path, pd.DataFrame]]) -> pd.DataFrame:
    """One row per cell: its run, target, concurrency/rate, repeat, the verdict now and before,
    CPU µs/request now and before, and whether the verdict changed."""
    rows = []
    for path, d in tables:
        for _, r in d.iterrows():
            now_cpu, old_cpu = _num(r.get("cpu_us_per_req")), old_cpu_us_per_req(r)
            rows.append(
                {
                    "run": str(path.parent),
                    "mode": r.get("mode"),
                    "governance": r.get("governance"),
                    "concurrency": r.get("concurrency"),
                    "rate": r.get("rate"),
                    "repeat": r.get("repeat"),
                    "status": r.get("status"),
                    "status_before": old_status(r),
                    "error": r.get("error") or "",
                    "error_share": _num(r.get("error_share")),
                    "cpu_us_per_req": now_cpu,
                    "cpu_us_per_req_before": old_cpu,
                    "cpu_ratio": (now_cpu / old_cpu) if now_cpu and old_cpu else None,
                }
            )
    out = pd.DataFrame(rows)
    if len(out):
        out["verdict_changed"] = out["status"] != out["status_before"]
        ratio = out["cpu_ratio"].astype(float)
        out["cpu_changed"] = ratio.notna() & ((ratio - 1.0).abs() > 1e-9)
    return out


def limiter_pairs(tables: list[tuple[Path, pd.DataFrame]]) -> pd.DataFrame:
    """Each `on` cell beside its `on-unlimited` twin of the same run (target, concurrency or
    rate, repeat): both statuses, req/s and CPU µs/request, and on / on-unlimited ratios."""
    rows = []
    key = ["mode", "concurrency", "rate", "repeat"]
    for path, d in tables:
        if "governance" not in d or not {"on", "on-unlimited"} <= set(d["governance"]):
            continue
        on = d[d["governance"] == "on"].set_index(key)
        un = d[d["governance"] == "on-unlimited"].set_index(key)
        for k in on.index.intersection(un.index):
            a, b = on.loc[k], un.loc[k]
            row = dict(zip(key, k if isinstance(k, tuple) else (k,), strict=True))
            rps_a, rps_b = _num(a.get("rps")), _num(b.get("rps"))
            runs_b = json.loads(b.get("stage_runs") or "{}")
            cpu_a, cpu_b = _num(a.get("cpu_us_per_req")), _num(b.get("cpu_us_per_req"))
            row.update(
                run=str(path.parent),
                status_on=a.get("status"),
                status_unlimited=b.get("status"),
                gov_ratelimit_on=bool(a.get("gov_ratelimit")),
                gov_ratelimit_unlimited=bool(b.get("gov_ratelimit")),
                # the claim "on" made before: the limiter ran once per answer; did it?
                ratelimit_runs_unlimited=int(runs_b.get("ratelimit", 0)),
                on_label_holds_unlimited=int(runs_b.get("ratelimit", 0))
                >= (_num(b.get("requests")) or 0)
                > 0,
                rps_on=rps_a,
                rps_unlimited=rps_b,
                rps_ratio=(rps_a / rps_b) if rps_a and rps_b else None,
                cpu_on=cpu_a,
                cpu_unlimited=cpu_b,
                cpu_ratio=(cpu_a / cpu_b) if cpu_a and cpu_b else None,
            )
            rows.append(row)
    return pd.DataFrame(rows)


def summary(judged: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, Any]:
    """The counts the report prints (and --json writes)."""
    out: dict[str, Any] = {"cells": len(judged)}
    if len(judged):
        changed = judged[judged["verdict_changed"]]
        out["verdict_changed"] = len(changed)
        out["changed_cells"] = changed[
            ["run", "mode", "governance", "concurrency", "repeat", "status_before", "status", "error"]
        ].to_dict("records")
        r = judged["cpu_ratio"].dropna().astype(float)
        moved = judged[judged["cpu_changed"]]
        out["cpu_changed"] = len(moved)
        out["cpu_ratio_max"] = float(r.max()) if len(r) else None
        out["with_errors"] = int((judged["error_share"].fillna(0.0) > 0).sum())
    if len(pairs):
        by = []
        for (mode, c), g in pairs.groupby(["mode", "concurrency"], sort=False):
            rr, cr = g["rps_ratio"].dropna().astype(float), g["cpu_ratio"].dropna().astype(float)
            by.append(
                {
                    "mode": mode,
                    "concurrency": c,
                    "pairs": len(g),
                    "rps_ratio_median": float(rr.median()) if len(rr) else None,
                    "rps_ratio_min": float(rr.min()) if len(rr) else None,
                    "rps_ratio_max": float(rr.max()) if len(rr) else None,
                    "cpu_ratio_median": float(cr.median()) if len(cr) else None,
                    "cpu_ratio_min": float(cr.min()) if len(cr) else None,
                    "cpu_ratio_max": float(cr.max()) if len(cr) else None,
                    "status_changed": int((g["status_on"] != g["status_unlimited"]).sum()),
                    "on_label_fails": int((~g["on_label_holds_unlimited"].astype(bool)).sum()),
                    "ratelimit_runs_unlimited": int(g["ratelimit_runs_unlimited"].sum()),
                }
            )
        out["limiter"] = by
    return out


def _f(x: Any, fmt: str = ".3f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def markdown(s: dict[str, Any]) -> str:
    """The report in words and tables."""
    lines = [
        f"{s['cells']} cells judged by the rules now and before (ok when any request succeeded; "
        "CPU over every finished request).",
    ]
    if s["cells"]:
        lines += [
            f"- verdict changed: {s['verdict_changed']} (cells with errors: {s['with_errors']})",
            f"- CPU µs/request changed: {s['cpu_changed']} (largest now/before: {_f(s['cpu_ratio_max'])})",
        ]
        if s["changed_cells"]:
            lines += [
                "",
                "| run | target | governance | c | repeat | before | now | why |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for c in s["changed_cells"]:
                lines.append(
                    f"| {Path(c['run']).name} | {c['mode']} | {c['governance']} | {c['concurrency']} | "
                    f"{c['repeat']} | {c['status_before']} | {c['status']} | {c['error'][:120]} |"
                )
    if s.get("limiter"):
        lines += [
            "",
            "The limiter, measured: `on` (the key's limits never reached: it runs) over `on-unlimited` "
            "(no limits: it returns at once), same run, interleaved; median (range) over repeats.",
            "",
            "| target | c | pairs | req/s on / unlimited | CPU µs/req on / unlimited | status changed "
            "| unlimited cells the old `on` label fails (limiter runs) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in s["limiter"]:
            lines.append(
                f"| {r['mode']} | {r['concurrency']} | {r['pairs']} | {_f(r['rps_ratio_median'])} "
                f"({_f(r['rps_ratio_min'])}–{_f(r['rps_ratio_max'])}) | {_f(r['cpu_ratio_median'])} "
                f"({_f(r['cpu_ratio_min'])}–{_f(r['cpu_ratio_max'])}) | {r['status_changed']} "
                f"| {r['on_label_fails']} of {r['pairs']} (ratelimit ran {r['ratelimit_runs_unlimited']} times) |"
            )
    return "\n".join(lines)
