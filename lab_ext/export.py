"""Blog export for notebooks: markdown tables with their spread, static images and
standalone HTML figures, written into a run folder.

    from lab_ext.export import BlogExport
    blog = BlogExport(run_dir, profile="ci")
    blog.table("mmr_speedup", df, caption="Rust/Python leaves/s, median [min, max] of 5 runs")
    blog.figure("mmr_throughput", fig)
    paths = blog.write()        # -> run_dir/blog/{*.md, *.png, *.svg, *.html, *.json, index.md}

Every table is written with a one-line description of the machine and profile under it,
so a table pasted into a post never travels without its context. Every figure gets the same
context as a footer (`figure_stamp`: CPU, cores, build, commit, profile) and is then checked
as a reader would see it (`lab_ext.figcheck`: finite ranges that fit the data, text inside
the canvas, ticks at the measured values, units, exact/sampled, load and repeats); a figure
with findings stops the export (FigureCheckError), so a notebook cannot publish it. The
static images, the interactive HTML and the check all use one size per figure (the figure's
own, else `image_width` x 500). Static images go through kaleido (>= 1), which drives the
system Chromium; all figures of one export share one browser session.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def machine_meta() -> dict[str, Any]:
    """Run metadata from `harness.results.meta.collect()` (the one source of truth)."""
    from harness.results import meta as hmeta

    return hmeta.collect()


def machine_line(meta: Mapping[str, Any] | None = None, profile: str | None = None, extra: str = "") -> str:
    """One line: CPU, cores, build, switches, Python, Rust, git sha, and the notebook profile.
    E.g. `Machine: Intel(R) Xeon(R) · 2/2 cores (of 2) · release build · ... ; notebook profile ci`."""
    from harness.results import meta as hmeta

    line = "Machine: " + hmeta.describe(meta if meta is not None else machine_meta())
    if profile:
        line += f"; notebook profile {profile}"
    return line + (f"; {extra}" if extra else "")


def figure_stamp(meta: Mapping[str, Any] | None = None, profile: str | None = None) -> str:
    """The footer every exported figure carries: CPU, cores, build, commit and profile, e.g.
    `Intel(R) Xeon(R) · 2/2 cores · release build · 1592fe7d1a · notebook profile ci`."""
    m = meta if meta is not None else machine_meta()
    parts = [
        m.get("cpu_model") or "unknown CPU",
        f"{m.get('cores_used')}/{m.get('cores_available')} cores",
    ]
    if m.get("hardware_profile"):
        sat = m.get("profile_satisfied")
        parts.append(f"hw profile {m['hardware_profile']}" + ("" if sat in (None, True) else " (clamped)"))
    parts.append(f"{m.get('build_profile') or 'no'} build")
    parts.append((m.get("git_sha") or "nogit")[:10] + ("+dirty" if m.get("git_dirty") else ""))
    if profile:
        parts.append(f"notebook profile {profile}")
    return " · ".join(str(p) for p in parts)


def stamped(fig, stamp: str, width: int, height: int):
    """A copy of `fig` at width x height with `stamp` as a small footer below the plot (the
    bottom margin grows by one line to hold it)."""
    import plotly.graph_objects as go

    out = go.Figure(fig)
    bottom = out.layout.margin.b if out.layout.margin.b is not None else 80  # plotly's default
    out.update_layout(width=width, height=height, margin_b=bottom + 22)
    out.add_annotation(
        text=stamp,
        xref="paper",
        yref="paper",
        x=0,
        y=0,
        xanchor="left",
        yanchor="top",
        yshift=-bottom,
        showarrow=False,
        align="left",
        font=dict(size=10, color="#666"),
    )
    return out


def fmt_spread(median: float, lo: float, hi: float, digits: int = 3) -> str:
    """`3.21 [2.98, 3.40]`: the median with its min/max, in a fixed number of significant digits."""
    return f"{median:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def spread_table(df, by: str | list[str], value: str, digits: int = 3):
    """Group `df` by `by` and give median [min, max] and n of `value`, one row per group."""
    import pandas as pd

    g = df.groupby(by, sort=False)[value]
    out = pd.DataFrame({"median": g.median(), "min": g.min(), "max": g.max(), "n": g.count()})
    out[f"{value} median [min, max]"] = [
        fmt_spread(r["median"], r["min"], r["max"], digits) for _, r in out.iterrows()
    ]
    return out.reset_index()


def to_markdown(df, caption: str = "", machine: str = "", floatfmt: str = ".4g") -> str:
    """A pandas table as markdown, caption above and the machine line below."""
    body = df.to_markdown(index=False, floatfmt=floatfmt)
    parts = []
    if caption:
        parts.append(f"**{caption}**\n")
    parts.append(body)
    if machine:
        parts.append(f"\n_{machine}_")
    return "\n".join(parts) + "\n"


@dataclass
class BlogExport:
    """Collects tables and figures from a notebook and writes them to `run_dir/blog/`."""

    run_dir: Path | str
    profile: str | None = None
    meta: Mapping[str, Any] | None = None
    image_formats: tuple[str, ...] = ("png", "svg")
    image_width: int = 1100
    tables: dict[str, tuple[Any, str]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def table(self, name: str, df, caption: str = "") -> None:
        self.tables[name] = (df, caption)

    def figure(self, name: str, fig) -> None:
        self.figures[name] = fig

    def write(self) -> dict[str, list[str]]:
        from harness.results.figcheck import FigureCheckError, check_figures

        out = Path(self.run_dir) / "blog"
        machine = machine_line(self.meta, self.profile)
        stamp = figure_stamp(self.meta, self.profile)
        ready = {
            name: stamped(fig, stamp, fig.layout.width or self.image_width, fig.layout.height or 500)
            for name, fig in self.figures.items()
        }
        findings = check_figures(ready) if ready else []
        if findings:  # nothing is written: a post must not pick up a broken figure
            raise FigureCheckError(findings)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, list[str]] = {"tables": [], "images": [], "html": [], "figures": []}
        index = [f"# Blog export\n\n_{machine}_\n"]
        for name, (df, caption) in self.tables.items():
            p = out / f"{name}.md"
            p.write_text(to_markdown(df, caption, machine))
            written["tables"].append(str(p))
            index.append(f"## {caption or name}\n\n{to_markdown(df, '', machine)}")
        figs, paths, widths, heights = [], [], [], []
        for name, fig in ready.items():
            h = out / f"{name}.html"
            fig.write_html(h, include_plotlyjs=True, full_html=True)  # standalone: plotly.js inlined
            written["html"].append(str(h))
            j = out / f"{name}.json"  # the figure itself, to check or restyle later
            j.write_text(fig.to_json())
            written["figures"].append(str(j))
            for ext in self.image_formats:
                figs.append(fig)
                paths.append(out / f"{name}.{ext}")
                widths.append(fig.layout.width)  # the size the check drew it at
                heights.append(fig.layout.height)
            index.append(f"![{name}]({name}.{self.image_formats[0]})\n\n[interactive]({name}.html)\n")
        if figs:
            import plotly.io as pio

            pio.write_images(figs, paths, width=widths, height=heights)  # one Chromium session for all images
            written["images"] += [str(p) for p in paths]
        (out / "index.md").write_text("\n".join(index))
        (out / "manifest.json").write_text(json.dumps(written, indent=2))
        return written


def export(
    run_dir: Path | str,
    tables: Mapping[str, Any] | Iterable = (),
    figures: Mapping[str, Any] | None = None,
    profile: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """One-call form: `tables` maps name -> DataFrame or (DataFrame, caption)."""
    blog = BlogExport(run_dir, profile=profile, meta=meta)
    for name, t in dict(tables).items():
        df, cap = t if isinstance(t, tuple) else (t, "")
        blog.table(name, df, cap)
    for name, fig in (figures or {}).items():
        blog.figure(name, fig)
    return blog.write()
