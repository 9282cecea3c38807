"""Statistics for repeated measurements and asv-style comparisons.

- ``summarize(values)``: median / min / max / n of the repeats of one cell.
- ``mann_whitney(a, b)``: two-sided Mann-Whitney U p-value (exact by enumeration for small
  samples, normal approximation with tie correction otherwise).
- ``bootstrap_ci(x)``: percentile bootstrap CI of a statistic (seeded: reproducible).
- ``compare_tables(a, b)``: per metric and cell, whether B differs from A **significantly
  and beyond a factor** (asv: significance and a factor, never one without the other).

How a comparison decides: see ``compare_tables`` (like cells only, >= 3 repeats per side, a
metric flagged when its repeats over all cells differ significantly and its factor is beyond
the A/A-derived threshold, and, for throughput and latency, beyond what the direct baseline
moved).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# metric -> True when higher is better. The metrics `compare` looks at by default.
METRICS: dict[str, bool] = {
    "rps": True,
    "lat_p50_us": False,
    "lat_p99_us": False,
    "ovh_p50_us": False,
    "ovh_p99_us": False,
    "cpu_us_per_req": False,
    "rss_peak_mb": False,
    "gil_wait_p99_us": False,
    "loop_lag_p99_us": False,
}

# The smallest factor that counts, per metric: derived, not chosen. Each is the largest move of
# the metric's geometric-mean factor between two runs of the same build in the recorded A/A
# study (data/aa/20261201-interleaved.json: 20 interleaved pairs of ci-sized sweeps on the
# shared 2-core machine), widened by 5% and never below DEFAULT_FACTOR
# (harness.studies.aa.derive_factors; tests/peers/test_compare_aa.py checks these are what it gives).
# CPU per request moved at most 1.09x between A/A runs, so a 20% slowdown (1.25x CPU) clears
# it; throughput and tails moved 1.4-5.9x (machine swings, scheduler stalls), so on this
# machine they flag only big changes.
FACTORS: dict[str, float] = {
    "rps": 1.44,
    "lat_p50_us": 1.34,
    "lat_p99_us": 2.69,
    "ovh_p50_us": 1.33,
    "ovh_p99_us": 4.12,
    "cpu_us_per_req": 1.15,
    "rss_peak_mb": 1.1,
    "gil_wait_p99_us": 1.94,
    "loop_lag_p99_us": 5.94,
}
DEFAULT_FACTOR = 1.10

# metric -> the direct baseline's column (load generator straight to the mock, measured in the
# same sweep just before the gateway's cells at the same point) that shows the same figure for
# the machine alone. A move that the direct baseline makes too is the machine's, not the
# gateway's: compare judges these metrics on the gateway's ratio *and* on that ratio over the
# direct baseline's (the "machine-normalised" ratio), and flags a cell only when both say so.
DIRECT: dict[str, str] = {"rps": "rps", "lat_p50_us": "lat_p50_us", "lat_p99_us": "lat_p99_us"}
POINT_KEY = ("concurrency", "rate", "route")


def summarize(values: Iterable[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and not _isnan(x)], dtype=float)
    if v.size == 0:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def _isnan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U test p-value (exact when the enumeration is small)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        return math.nan
    pooled = np.concatenate([a, b])
    ranks = _rankdata(pooled)
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    if math.comb(n1 + n2, n1) <= 20000:
        # Exact: the distribution of U over every assignment of the pooled ranks.
        obs = abs(u1 - mu)
        hits = total = 0
        for idx in itertools.combinations(range(n1 + n2), n1):
            u = ranks[list(idx)].sum() - n1 * (n1 + 1) / 2
            total += 1
            if abs(u - mu) >= obs - 1e-9:
                hits += 1
        return hits / total
    _, counts = np.unique(pooled, return_counts=True)
    n = n1 + n2
    tie = (counts**3 - counts).sum() / (n * (n - 1))
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie))
    if sigma == 0:
        return 1.0
    z = (abs(u1 - mu) - 0.5) / sigma
    return math.erfc(max(z, 0) / math.sqrt(2))


def _rankdata(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, float)
    sx = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def bootstrap_ci(
    x: Sequence[float],
    stat: Callable[[np.ndarray], float] = np.mean,
    n: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    x = np.asarray(x, float)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n, x.size))
    samples = x[idx]
    if stat is np.mean:
        stats = samples.mean(axis=1)
    elif stat is np.median:
        stats = np.median(samples, axis=1)
    else:
        stats = np.apply_along_axis(stat, 1, samples)
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass
class MetricVerdict:
    metric: str
    higher_is_better: bool
    factor: float  # geometric mean of B/A across comparable cells
    ci_low: float  # bootstrap CI of the factor (resampling cells; descriptive)
    ci_high: float
    cells: int  # cells with >= min_repeats on both sides
    significant: bool  # a majority of those cells flagged in one direction
    beyond_factor: bool
    verdict: str  # "same" | "better" | "worse" | "n/a"
    threshold: float = DEFAULT_FACTOR  # the factor this metric had to pass
    cells_flagged: int = 0  # cells whose own evidence flags them, in the verdict's direction

    @property
    def flagged(self) -> bool:
        return self.verdict in ("better", "worse")


MIN_REPEATS = 3
CELL_KEY = ("mode", "switches", "shell", "governance", "tracing", "route", "workers", "concurrency", "rate")


def pool_repeats(tables: Sequence[Any]):
    """Several runs of the same cells as one table whose repeats are all of theirs: run k's
    repeat r becomes repeat `offset_k + r`. This is how an interleaved comparison is read
    (sweeps of A and B alternating, A1 B1 A2 B2 ...: each side pooled over its own runs), so
    that a machine that drifts during the comparison moves both sides alike."""
    import pandas as pd

    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    out, offset = [], 0
    for t in tables:
        t = t.copy()
        if "repeat" in t.columns and len(t):
            t["repeat"] = t["repeat"].astype(int) + offset
            offset = int(t["repeat"].max()) + 1
        out.append(t)
    return pd.concat(out, ignore_index=True)


def _direct_medians(base, cols: Sequence[str], key: Sequence[str]) -> dict[tuple, dict[str, float]]:
    """point (`key` values, NaN as "-") -> median of each direct-baseline column over repeats."""
    if base is None or not len(base):
        return {}
    base = base[base["status"] == "ok"]
    key = [k for k in key if k in base.columns]
    kb = base[key].astype(object).where(base[key].notna(), "-")
    out: dict[tuple, dict[str, float]] = {}
    for k, g in base.groupby([kb[c] for c in key], dropna=False):
        k = k if isinstance(k, tuple) else (k,)
        out[tuple(zip(key, k))] = {
            c: float(np.median(g[c].dropna())) for c in cols if c in g.columns and g[c].notna().any()
        }
    return out


def compare_tables(
    a,
    b,
    metrics: dict[str, bool] | None = None,
    factor: float | None = None,
    alpha: float = 0.05,
    key: Sequence[str] = CELL_KEY,
    min_repeats: int = MIN_REPEATS,
    base_a=None,
    base_b=None,
):
    """Compare two `cells` tables. Returns (verdicts: list[MetricVerdict], per_cell: DataFrame).

    Cells are compared like with like -- same target, switches, shell and concurrency (or
    open-loop rate) -- never pooled across unlike cells. A cell is flagged only on its own
    evidence: both sides have >= `min_repeats` repeats, the medians' ratio is beyond the
    metric's factor (`FACTORS`, or `factor` for every metric), and the repeats differ
    (Mann-Whitney p < alpha, or -- since 3 v 3 repeats cannot reach p < 0.05 -- disjoint
    min..max ranges); the per-cell flags are reported in the per-cell table. A metric is
    flagged when (1) every repeat of every comparable cell, each taken relative to its cell's
    A median, differs between the sides (one Mann-Whitney test over the pooled repeats, p <
    alpha: a stratified test, so 3 cells x 3 repeats give 9 v 9 where one cell's 3 v 3 never
    reaches p < 0.05) AND (2) the geometric-mean factor over the cells is beyond the metric's
    threshold, which `FACTORS` derives from the A/A spread. With fewer repeats nothing can be
    flagged ("n/a: <k repeats"). docs/peers.md has the false-alarm and detection rates.

    With the two runs' direct baselines (`base_a`, `base_b`: their `baseline` tables), the
    metrics in `DIRECT` are also judged against the machine: a cell is flagged only when its
    ratio over the direct baseline's ratio at the same point (`norm_ratio`) is beyond the
    factor in the same direction too, and the metric only when the geometric mean of those
    normalised ratios is. A whole-machine swing between two sweeps moves the direct baseline
    with the gateway and is not called a change of the gateway; a slower gateway leaves the
    direct baseline where it was.
    """
    import pandas as pd

    metrics = metrics or METRICS
    a = a[a["status"] == "ok"]
    b = b[b["status"] == "ok"]
    key = [k for k in key if k in a.columns and k in b.columns]
    # NaN (e.g. `rate` in a closed-loop cell) never equals itself: compare keys on a filled copy
    ka = a[key].astype(object).where(a[key].notna(), "-")
    kb = b[key].astype(object).where(b[key].notna(), "-")
    rows, verdicts = [], []
    base_factor = factor
    cols = sorted(set(DIRECT.values()))
    point_key = [k for k in POINT_KEY if k in key]
    direct_a, direct_b = _direct_medians(base_a, cols, point_key), _direct_medians(base_b, cols, point_key)
    for metric, hib in metrics.items():
        if metric not in a.columns or metric not in b.columns:
            continue
        factor = base_factor if base_factor is not None else FACTORS.get(metric, DEFAULT_FACTOR)
        logs, nlogs, flags = [], [], []
        pooled_a: list[float] = []  # every repeat, relative to its cell's A median (log), all cells
        pooled_b: list[float] = []
        for k, ga in a.groupby([ka[c] for c in key], dropna=False):
            k = k if isinstance(k, tuple) else (k,)
            mask = np.ones(len(b), bool)
            for col, val in zip(key, k):
                mask &= (kb[col] == val).to_numpy()
            gb = b[mask]
            va = ga[metric].dropna().to_numpy(float)
            vb = gb[metric].dropna().to_numpy(float)
            if va.size == 0 or vb.size == 0:
                continue
            ma, mb = float(np.median(va)), float(np.median(vb))
            ratio = _ratio(ma, mb)
            if ratio is None:
                continue
            enough = va.size >= min_repeats and vb.size >= min_repeats
            p = mann_whitney(va, vb) if va.size >= 2 and vb.size >= 2 else math.nan
            beyond = ratio >= factor or ratio <= 1 / factor
            disjoint = va.size >= 2 and vb.size >= 2 and (va.max() < vb.min() or vb.max() < va.min())
            sig = ((not math.isnan(p)) and p < alpha) or disjoint
            worse = (ratio < 1) if hib else (ratio > 1)
            direct_ratio = norm = None
            if metric in DIRECT:
                kd = dict(zip(key, k))
                point = tuple((c, kd[c]) for c in point_key)
                da, db = direct_a.get(point, {}), direct_b.get(point, {})
                direct_ratio = _ratio(da.get(DIRECT[metric], math.nan), db.get(DIRECT[metric], math.nan))
                if direct_ratio is not None:
                    norm = ratio / direct_ratio
                    # the machine explains the move unless the normalised ratio is beyond the
                    # factor on the same side
                    beyond = beyond and ((norm < 1) == (ratio < 1)) and (norm >= factor or norm <= 1 / factor)
            flag = (
                (("worse" if worse else "better") if (sig and beyond) else "same")
                if enough
                else f"n/a: <{min_repeats} repeats"
            )
            if enough:
                floor = ma <= 0 or mb <= 0  # overheads near zero: the same floor as _ratio
                xa = np.maximum(va, 1.0) if floor else np.maximum(va, 1e-9)
                xb = np.maximum(vb, 1.0) if floor else np.maximum(vb, 1e-9)
                ref = float(np.median(xa))
                pooled_a.extend(np.log(xa / ref).tolist())
                pooled_b.extend(np.log(xb / ref).tolist())
                logs.append(math.log(ratio))
                if norm is not None:
                    nlogs.append(math.log(norm))
                flags.append(flag)
            rows.append(
                {
                    **dict(zip(key, k)),
                    "metric": metric,
                    "a_median": ma,
                    "b_median": mb,
                    "a_min": float(va.min()),
                    "a_max": float(va.max()),
                    "b_min": float(vb.min()),
                    "b_max": float(vb.max()),
                    "a_n": int(va.size),
                    "b_n": int(vb.size),
                    "ratio": ratio,
                    "direct_ratio": direct_ratio,
                    "norm_ratio": norm,
                    "p_value": p,
                    "flag": flag,
                }
            )
        if not logs:
            verdicts.append(
                MetricVerdict(metric, hib, math.nan, math.nan, math.nan, 0, False, False, "n/a", factor)
            )
            continue
        g = math.exp(float(np.mean(logs)))
        lo, hi = bootstrap_ci(logs)
        beyond = g >= factor or g <= 1 / factor
        if nlogs and len(nlogs) == len(
            logs
        ):  # every cell had its direct baseline: the machine is factored out
            gn = math.exp(float(np.mean(nlogs)))
            beyond = beyond and ((gn < 1) == (g < 1)) and (gn >= factor or gn <= 1 / factor)
        direction = ("worse" if g < 1 else "better") if hib else ("worse" if g > 1 else "better")
        n_dir = sum(f == direction for f in flags)
        # significance from every repeat of every comparable cell at once, each relative to its
        # cell's A median (a stratified rank test): 3 v 3 repeats in one cell can never reach
        # p < 0.05, three cells' 9 v 9 can, and a real change moves them all
        p_all = mann_whitney(pooled_a, pooled_b)
        sig = (not math.isnan(p_all)) and p_all < alpha
        verdict = direction if (sig and beyond) else "same"
        verdicts.append(
            MetricVerdict(
                metric, hib, g, math.exp(lo), math.exp(hi), len(logs), sig, beyond, verdict, factor, n_dir
            )
        )
    return verdicts, pd.DataFrame(rows)


def _ratio(a: float, b: float) -> float | None:
    """b / a for positive figures; overheads can be ~0 or negative, so shift tiny values."""
    if math.isnan(a) or math.isnan(b):
        return None
    if a == b:
        return 1.0
    if a <= 0 or b <= 0:
        # Overheads near zero: compare on a floor of 1 (us / MiB / rps) to keep ratios finite.
        a, b = max(a, 1.0), max(b, 1.0)
    return b / a


def sustainable_rates(cells, p99_cap_us: float = 50_000.0, max_error_share: float = 0.01):
    """The open-loop figure of docs/claims.md `open-loop-p95`, per target of a ladder: the highest rate whose median p99
    (over repeats) is at most `p99_cap_us` with a median error share under `max_error_share`.

    Returns a DataFrame: mode, sustainable_rate (NaN when not even the lowest rate held),
    first_failed_rate, p50/p95/p99 at the sustainable rate (`lat_p50_us`, `lat_p95_us`,
    `lat_p99_us`), rates_tried. Skipped rates (the ladder had stopped) count as not held.
    """
    import pandas as pd

    if cells is None or not len(cells) or "rate" not in cells.columns:
        return pd.DataFrame(columns=["mode", "sustainable_rate", "first_failed_rate", "rates_tried"])
    df = cells[cells["loop"] == "open"]
    out = []
    for mode, g in df.groupby("mode", sort=False):
        held, failed, at = math.nan, math.nan, {}
        tried = 0
        for rate, gr in sorted(g.groupby("rate"), key=lambda kv: kv[0]):
            ok = gr[gr["status"] == "ok"]
            if not len(ok):
                if (gr["status"] != "skipped").any():
                    tried += 1
                    failed = rate if math.isnan(failed) else failed
                break
            tried += 1
            p99 = float(np.median(ok["lat_p99_us"].dropna())) if ok["lat_p99_us"].notna().any() else math.inf
            err = float(np.median(ok["error_share"].fillna(0.0)))
            if p99 <= p99_cap_us and err < max_error_share and len(ok) == len(gr):
                held = rate
                at = {
                    c: float(np.median(ok[c].dropna()))
                    for c in ("lat_p50_us", "lat_p95_us", "lat_p99_us")
                    if ok[c].notna().any()
                }
            else:
                failed = rate
                break
        out.append(
            {
                "mode": mode,
                "sustainable_rate": held,
                "first_failed_rate": failed,
                "rates_tried": tried,
                **{f"{k}_at_sustainable": v for k, v in at.items()},
            }
        )
    return pd.DataFrame(out)
