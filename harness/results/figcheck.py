"""The figure check: a plotly figure drawn by plotly.js in headless Chromium at the size it is
exported, then measured, as a reader would look at it.

    from harness.results.figcheck import check_figures
    findings = check_figures({"p95_vs_rate": fig}, width=1100, height=500)   # [] when sound
    print("\\n".join(map(str, findings)))

`lab_ext.export.BlogExport.write` runs it on every figure it exports (PNG, SVG and the
interactive HTML come from the same figure at the same size) and refuses to write a blog
folder with findings, so a notebook that exports a broken figure fails in `make test`.

Rules (one `Finding` per broken rule, naming the figure and the axis or text):
  range     every numeric axis has a finite range that holds what is drawn on it (markers,
            error bars, bars from their base, shapes) and spends at most half of its length on
            margins (SLACK): the data's span is at least 1/SLACK of the range's. Annotations do
            not count as data: a label placed at the wrong place must not stretch the axis.
            A range that starts at zero is compared with the data and zero.
  canvas    title, subtitle, legend, annotations, axis titles and tick labels lie inside the
            canvas; a legend that has to scroll is cut.
  overlap   title, subtitle, legend, annotations and axis titles do not overlap each other or
            any tick label, nor the tick labels of one axis each other.
  ticks     on a categorical-like axis (the independent axis of a trace with at most
            MAX_MEASURED distinct integer values: concurrency, worker counts, rates) the labelled
            ticks are exactly the measured values.
  units     every numeric axis with tick labels names its unit (UNIT): in its title, in the title
            of an axis it shares a column or row with, or in its subplot's title; or it has a
            percent / suffix tick format.
  measured  the figure's text says exact or sampled, the load (open or closed loop, or a
            benchmark without one), and the number of repeats.
  machine   the figure's text names the machine (its core count) and the build.

The measurements come from plotly.js itself (`_fullLayout` axes after autorange, the traces'
and shapes' `_extremes`, the tick values `_vals`) and from the drawn SVG (bounding boxes of the
text), so the check sees what kaleido's PNG shows. Those are plotly.js internals: a plotly
upgrade that renames them makes the check fail loudly (tests/notebooks/test_figure_check.py),
never pass silently.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SLACK = 2.0  # an axis may be at most twice as long as what is drawn on it
MAX_MEASURED = 12  # at most this many distinct integer x values: a categorical-like axis
TOLERANCE_PX = 1.0  # text may touch the canvas edge by this much (anti-aliasing)

# An axis title names its unit: a symbol, a rate, a count noun or a share.
UNIT = re.compile(
    r"(µs|\bus\b|\bns\b|\bms\b|\bs\b|seconds|/s\b|req/s|\bMiB\b|\bMB\b|\bKiB\b|\bGiB\b|\bkB\b|bytes|"
    r"\bB\b|cores?\b|%|\bshare\b|ratio|×|\bx\b|count|requests|workers?|\bc\b|leaves|calls|"
    r"instructions|tokens|samples|records|millibits|bits)",
    re.IGNORECASE,
)
EXACT = re.compile(r"\b(exact|sampled)\b", re.IGNORECASE)
LOAD = re.compile(r"\b(open|closed)[- ]loop\b|\bbenchmark\b", re.IGNORECASE)
REPEATS = re.compile(
    r"\b(\d+|one|two|three|four|five|six|seven|eight|nine|ten)\s+(repeats?|runs?|samples?)\b"
    r"|\brepeats?\s*[=:]\s*\d+|\bn\s*=\s*\d+|\bmedian of (\d+|one|two|three|five)\b",
    re.IGNORECASE,
)
MACHINE = re.compile(r"\b\d+(/\d+)?\s+cores?\b", re.IGNORECASE)
BUILD = re.compile(r"\b(release|debug|dev)\s+build\b", re.IGNORECASE)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class Finding:
    figure: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.figure}: [{self.rule}] {self.message}"


class FigureCheckError(AssertionError):
    """A figure failed the check; `findings` lists every broken rule."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        super().__init__(f"{len(findings)} figure finding(s):\n" + "\n".join(f"  {f}" for f in findings))


# Run in the page once per figure: draw it at the export size, read what plotly.js decided
# (axes, ticks, extremes) and where the text landed.
_MEASURE = r"""
async ({data, layout, width, height}) => {
  const gd = document.getElementById('g');
  Plotly.purge(gd);
  await Plotly.newPlot(gd, data, Object.assign({}, layout, {width, height, autosize: false}),
                       {staticPlot: true});
  const fl = gd._fullLayout;
  const root = gd.querySelector('.main-svg').getBoundingClientRect();
  const box = (el) => {
    const r = el.getBoundingClientRect();
    return [r.left - root.left, r.top - root.top, r.right - root.left, r.bottom - root.top];
  };
  const texts = [];
  const add = (kind, el, label) => {
    if (!el) return;
    const b = box(el);
    if (b[2] - b[0] <= 0 || b[3] - b[1] <= 0) return;  // empty text draws nothing
    texts.push({kind, label: (label ?? el.textContent ?? '').trim(), box: b});
  };
  gd.querySelectorAll('.g-gtitle .gtitle').forEach((e) => add('title', e));
  gd.querySelectorAll('.g-gtitle .gtitle-subtitle').forEach((e) => add('subtitle', e));
  gd.querySelectorAll('.legend .bg').forEach((e) => add('legend', e, 'legend'));
  gd.querySelectorAll('.infolayer .annotation .annotation-text-g').forEach((e) => add('annotation', e));
  gd.querySelectorAll('.infolayer [class^="g-"][class$="title"]').forEach((e) => {
    const c = e.getAttribute('class');
    if (/^g-[xy]\d*title$/.test(c)) add('axis title', e);
  });
  const axes = [];
  for (const key of Object.keys(fl)) {
    if (!/^[xy]axis\d*$/.test(key)) continue;
    const ax = fl[key];
    const ext = (objs) => {
      let lo = Infinity, hi = -Infinity, n = 0;
      for (const o of objs) {
        const e = o && o._extremes && o._extremes[ax._id];
        if (!e) continue;
        for (const m of e.min) { lo = Math.min(lo, m.val); n++; }
        for (const m of e.max) { hi = Math.max(hi, m.val); n++; }
      }
      return n ? [lo, hi] : null;
    };
    const labels = [];
    gd.querySelectorAll(`.${ax._id}tick text`).forEach((e) => {
      const b = box(e);
      const rotated = /rotate\((?!0[,)])/.test(e.getAttribute('transform') || '');
      if (b[2] - b[0] > 0 && e.textContent.trim()) labels.push({label: e.textContent.trim(), box: b, rotated});
    });
    axes.push({
      name: key, id: ax._id, type: ax.type, visible: ax.visible !== false,
      showticklabels: ax.showticklabels !== false, rangemode: ax.rangemode,
      title: (ax.title && ax.title.text) || '', tickformat: ax.tickformat || '',
      domain: ax.domain || [0, 1], anchor: ax.anchor || '', matches: ax.matches || '',
      ticksuffix: ax.ticksuffix || '', range: (ax.range || []).map((r) => ax.r2l(r)),
      data: ext(gd._fullData.filter((t) => t.visible === true)),
      shapes: ext(fl.shapes || []),
      ticks: (ax._vals || []).filter((v) => (v.text || '').trim() !== '').map((v) => v.x),
      labels,
    });
  }
  const lg = fl.legend || {};
  const legendCut = fl.showlegend !== false && lg._height > 0 && lg._effHeight + 0.5 < lg._height;
  return {texts, axes, legendCut};
}
"""


def _page_html() -> str:
    from plotly.offline import get_plotlyjs

    return (
        "<!doctype html><html><head><meta charset='utf-8'><script>"
        + get_plotlyjs()
        + "</script></head><body style='margin:0'><div id='g'></div></body></html>"
    )


def measure(figs: Mapping[str, Any], width: int, height: int) -> dict[str, dict]:
    """Draw each figure at width x height in one headless Chromium session and return what
    `_MEASURE` read (texts with their boxes, axes with ranges, extremes and ticks). Runs in a
    thread of its own: playwright's sync API refuses a thread with a running event loop, which
    is where a notebook's code runs."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="figcheck") as pool:
        return pool.submit(_measure, figs, width, height).result()


def _measure(figs: Mapping[str, Any], width: int, height: int) -> dict[str, dict]:
    from playwright.sync_api import sync_playwright

    out: dict[str, dict] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width + 50, "height": height + 50})
            page.set_content(_page_html())
            for name, fig in figs.items():
                spec = json.loads(fig.to_json())
                out[name] = page.evaluate(
                    _MEASURE,
                    {
                        "data": spec.get("data", []),
                        "layout": spec.get("layout", {}),
                        "width": width,
                        "height": height,
                    },
                )
        finally:
            browser.close()
    return out


def _measured_values(fig) -> dict[str, list[float]]:
    """Axis id ('x', 'x2', 'y', ...) -> the distinct values a trace was measured at, for the
    traces whose independent axis it is (x, or y for horizontal bars)."""
    import numpy as np

    vals: dict[str, set[float]] = {}
    for tr in fig.data:
        if tr.type not in ("scatter", "scattergl", "bar") or tr.visible is False:
            continue
        horizontal = tr.type == "bar" and tr.orientation == "h"
        letter = "y" if horizontal else "x"
        raw = tr.y if horizontal else tr.x
        if raw is None:
            continue
        try:
            arr = np.asarray(raw, dtype=float)
        except (TypeError, ValueError):
            continue  # strings: a category axis
        axis = getattr(tr, f"{letter}axis") or letter
        vals.setdefault(axis, set()).update(float(v) for v in arr[np.isfinite(arr)])
    return {k: sorted(v) for k, v in vals.items()}


def _text_of(fig) -> str:
    lay = fig.layout
    parts = [lay.title.text or "", (lay.title.subtitle.text if lay.title.subtitle else None) or ""]
    parts += [a.text or "" for a in lay.annotations]
    for key in lay:
        if re.fullmatch(r"[xy]axis\d*", key) and lay[key].title.text:
            parts.append(lay[key].title.text)
    parts += [tr.name or "" for tr in fig.data]
    return re.sub(r"<[^>]+>", " ", " ".join(parts))


def _subplot_titles(fig, ax: dict, axes: list[dict]) -> list[str]:
    """The titles make_subplots puts above the subplot of `ax` (paper-anchored annotations
    centred over its columns, at the top of its rows)."""
    other = next((o for o in axes if o["id"] == ax["anchor"]), None)
    if other is None:
        return []
    xdom, ydom = (ax["domain"], other["domain"]) if ax["id"][0] == "x" else (other["domain"], ax["domain"])
    out = []
    for a in fig.layout.annotations:
        if a.xref != "paper" or a.yref != "paper" or a.x is None or a.y is None:
            continue
        if xdom[0] <= a.x <= xdom[1] and ydom[1] - 0.01 <= a.y <= ydom[1] + 0.1:
            out.append(a.text or "")
    return out


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def findings_for(name: str, fig, m: dict, width: int, height: int) -> list[Finding]:
    """The rules above, from one figure and its measurement."""
    out: list[Finding] = []

    def bad(rule: str, msg: str) -> None:
        out.append(Finding(name, rule, msg))

    # range: finite, holding what is drawn, not mostly margin
    for ax in m["axes"]:
        if not ax["visible"]:
            continue
        lo_hi = ax["range"]
        if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in lo_hi):
            bad("range", f"{ax['name']}: range {lo_hi} is not finite")
            continue
        if ax["type"] not in ("linear", "log"):
            continue
        group = [o for o in m["axes"] if (o["matches"] or o["id"]) == (ax["matches"] or ax["id"])]
        spans = [e for o in group for e in (o["data"], o["shapes"]) if e]  # shared axes share a range
        if not spans:
            continue
        dlo, dhi = min(e[0] for e in spans), max(e[1] for e in spans)
        rlo, rhi = min(lo_hi), max(lo_hi)
        unit = "10^" if ax["type"] == "log" else ""
        eps = 1e-9 * max(1.0, abs(dlo), abs(dhi))
        if dlo < rlo - eps or dhi > rhi + eps:
            bad(
                "range",
                f"{ax['name']}: range [{unit}{rlo:.4g}, {unit}{rhi:.4g}] cuts the data "
                f"[{unit}{dlo:.4g}, {unit}{dhi:.4g}]",
            )
            continue
        if ax["type"] == "linear" and (rlo == 0 or ax["rangemode"] in ("tozero", "nonnegative")):
            dlo, dhi = min(dlo, 0.0), max(dhi, 0.0)
        if dhi > dlo and (rhi - rlo) > SLACK * (dhi - dlo):
            bad(
                "range",
                f"{ax['name']}: range [{unit}{rlo:.4g}, {unit}{rhi:.4g}] is {(rhi - rlo) / (dhi - dlo):.3g}x "
                f"what is drawn on it [{unit}{dlo:.4g}, {unit}{dhi:.4g}] (at most {SLACK:g}x)",
            )

    # canvas and overlap: text inside the canvas, the big pieces apart
    ticklabels = [
        {"kind": "tick label", "label": lab["label"], "box": lab["box"]}
        for ax in m["axes"]
        for lab in ax["labels"]
    ]
    for t in m["texts"] + ticklabels:
        x0, y0, x1, y1 = t["box"]
        if (
            x0 < -TOLERANCE_PX
            or y0 < -TOLERANCE_PX
            or x1 > width + TOLERANCE_PX
            or y1 > height + TOLERANCE_PX
        ):
            bad(
                "canvas",
                f"{t['kind']} {t['label'][:60]!r} runs outside the {width}x{height} canvas "
                f"(box {x0:.0f},{y0:.0f} to {x1:.0f},{y1:.0f})",
            )
    if m.get("legendCut"):
        bad("canvas", "the legend does not fit and scrolls: a static image loses its last entries")
    big = m["texts"]
    for i, a in enumerate(big):
        for b in big[i + 1 :]:
            if a["kind"] == b["kind"] == "annotation" and a["label"] == b["label"]:
                continue
            area = _overlap(a["box"], b["box"])
            if area > 4.0:
                bad("overlap", f"{a['kind']} {a['label'][:40]!r} overlaps {b['kind']} {b['label'][:40]!r}")
    for lab in ticklabels:
        for t in big:
            if _overlap(lab["box"], t["box"]) > 4.0:
                bad("overlap", f"tick label {lab['label'][:40]!r} overlaps {t['kind']} {t['label'][:40]!r}")
    for ax in m["axes"]:
        labs = [lab for lab in ax["labels"] if not lab["rotated"]]  # a rotated label's box is not its ink
        for i, a in enumerate(labs):
            for b in labs[i + 1 :]:
                if _overlap(a["box"], b["box"]) > 1.0:
                    bad("overlap", f"{ax['name']}: tick labels {a['label']!r} and {b['label']!r} overlap")

    # ticks at the measured values on categorical-like axes
    measured = _measured_values(fig)
    for ax in m["axes"]:
        vals = measured.get(ax["id"])
        if (
            not ax["visible"]
            or not ax["showticklabels"]
            or ax["type"] not in ("linear", "log")
            or not vals
            or len(vals) > MAX_MEASURED
            or any(v != round(v) for v in vals)
        ):
            continue
        ticks = [10**t if ax["type"] == "log" else t for t in ax["ticks"]]
        off = [t for t in ticks if not any(math.isclose(t, v, rel_tol=1e-6, abs_tol=1e-9) for v in vals)]
        missing = [v for v in vals if not any(math.isclose(t, v, rel_tol=1e-6, abs_tol=1e-9) for t in ticks)]
        if off or missing:
            bad(
                "ticks",
                f"{ax['name']}: measured at {[_num(v) for v in vals]}, labelled ticks at "
                f"{[_num(t) for t in ticks]}"
                + (f" ({len(off)} not measured)" if off else "")
                + (f" (missing {[_num(v) for v in missing]})" if missing else ""),
            )

    # units on every numeric axis that shows tick labels
    for ax in m["axes"]:
        if not ax["visible"] or not ax["showticklabels"] or ax["type"] not in ("linear", "log"):
            continue
        if not ax["labels"] or "%" in ax["tickformat"] or ax["ticksuffix"].strip():
            continue
        titles = [ax["title"]] + [
            o["title"] for o in m["axes"] if o["id"][0] == ax["id"][0] and o["domain"] == ax["domain"]
        ]
        titles += _subplot_titles(fig, ax, m["axes"])
        if not any(UNIT.search(re.sub(r"<[^>]+>", " ", t)) for t in titles):
            title = re.sub(r"<[^>]+>", " ", ax["title"]).strip()
            bad(
                "units",
                f"{ax['name']}: title {title!r} names no unit"
                if title
                else f"{ax['name']}: no axis title naming its unit (nor a shared axis's or its subplot's)",
            )

    # what was measured, and on what
    text = _text_of(fig)
    if not EXACT.search(text):
        bad("measured", "does not say whether it is exact or sampled")
    if not LOAD.search(text):
        bad("measured", "does not say the load: open or closed loop (or a benchmark)")
    if not REPEATS.search(text):
        bad("measured", "does not say how many repeats it summarises")
    if not MACHINE.search(text):
        bad("machine", "does not name the machine (its cores)")
    if not BUILD.search(text):
        bad("machine", "does not name the build")
    return out


def _num(v: float) -> str:
    return f"{v:g}"


def check_figures(figs: Mapping[str, Any], width: int = 1100, height: int = 500) -> list[Finding]:
    """Every finding for every figure, drawn at width x height (the export's size); a figure
    with its own `layout.width` / `layout.height` is drawn at those."""
    by_size: dict[tuple[int, int], dict[str, Any]] = {}
    for name, fig in figs.items():
        by_size.setdefault((fig.layout.width or width, fig.layout.height or height), {})[name] = fig
    out: list[Finding] = []
    for (w, h), group in by_size.items():
        ms = measure(group, w, h)
        for name, fig in group.items():
            out += findings_for(name, fig, ms[name], w, h)
    return out


def check_figure(fig, name: str = "figure", width: int = 1100, height: int = 500) -> list[Finding]:
    """`check_figures` for one figure."""
    return check_figures({name: fig}, width, height)


def assert_figures(figs: Mapping[str, Any], width: int = 1100, height: int = 500) -> None:
    """Raise FigureCheckError listing every finding, if there is one."""
    found = check_figures(figs, width, height)
    if found:
        raise FigureCheckError(found)
