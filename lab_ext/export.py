"""Blog export for notebooks: markdown tables with their spread, static images and
standalone HTML figures, written into a run folder.

    from lab_ext.export import BlogExport
    blog = BlogExport(run_dir, profile="ci")
    blog.table("mmr_speedup", df, caption="Rust/Python leaves/s, median [min, max] of 5 runs")
    blog.figure("mmr_throughput", fig)
    paths = blog.write()        # -> run_dir/blog/{*.md, *.png, *.svg, *.html, index.md}

Every table is written with a one-line description of the machine and profile under it,
so a table pasted into a post never travels without its context. Static images go through
kaleido (>= 1), which drives the system Chromium; all figures of one export share one
browser session.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_sha(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "") if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_meta() -> dict[str, Any]:
    """Run metadata: `harness.meta` when it is there (the one source of truth), else the
    minimum a table caption needs."""
    try:
        from harness import meta as hmeta  # type: ignore[attr-defined]

        for name in ("collect", "collect_meta", "run_meta", "gather"):
            fn = getattr(hmeta, name, None)
            if callable(fn):
                try:
                    m = fn()
                except TypeError:
                    continue
                if isinstance(m, Mapping):
                    return dict(m)
                if hasattr(m, "__dict__"):
                    return dict(vars(m))
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[1]
    return {
        "cpu_model": _cpu_model(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "git_sha": _git_sha(root),
    }


def machine_line(meta: Mapping[str, Any] | None = None, profile: str | None = None, extra: str = "") -> str:
    """One line: CPU, cores, Python, git sha, profile. E.g.
    `Machine: AMD EPYC 7B13 (2 cores), Python 3.11.2, git 1a2b3c4; profile ci`."""
    m = dict(meta or machine_meta())

    def pick(*keys: str, default: Any = "?") -> Any:
        for k in keys:
            if m.get(k) not in (None, ""):
                return m[k]
        return default

    cpu = pick("cpu_model", "cpu")
    cores = pick("cores_available", "cores", "cpu_count")
    py = pick("python", "python_version")
    if isinstance(py, Mapping):
        py = py.get("version", "?")
    sha = pick("git_sha", "git", "sha")
    if isinstance(sha, Mapping):
        sha = (sha.get("sha", "?")[:10] + ("-dirty" if sha.get("dirty") else ""))
    elif m.get("dirty") and "dirty" not in str(sha):
        sha = f"{str(sha)[:10]}-dirty"
    prof = profile or pick("profile", "hardware_profile", default="?")
    line = f"Machine: {cpu} ({cores} cores), Python {py}, git {sha}; profile {prof}"
    if m.get("profile_satisfied") is False:
        line += " (profile clamped to this machine)"
    return line + (f"; {extra}" if extra else "")


def fmt_spread(median: float, lo: float, hi: float, digits: int = 3) -> str:
    """`3.21 [2.98, 3.40]`: the median with its min/max, in a fixed number of significant digits."""
    return f"{median:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def spread_table(df, by: str | list[str], value: str, digits: int = 3):
    """Group `df` by `by` and give median [min, max] and n of `value`, one row per group."""
    import pandas as pd

    g = df.groupby(by, sort=False)[value]
    out = pd.DataFrame({"median": g.median(), "min": g.min(), "max": g.max(), "n": g.count()})
    out[f"{value} median [min, max]"] = [fmt_spread(r["median"], r["min"], r["max"], digits) for _, r in out.iterrows()]
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
    tables: dict[str, tuple[Any, str]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def table(self, name: str, df, caption: str = "") -> None:
        self.tables[name] = (df, caption)

    def figure(self, name: str, fig) -> None:
        self.figures[name] = fig

    def write(self) -> dict[str, list[str]]:
        out = Path(self.run_dir) / "blog"
        out.mkdir(parents=True, exist_ok=True)
        machine = machine_line(self.meta, self.profile)
        written: dict[str, list[str]] = {"tables": [], "images": [], "html": []}
        index = [f"# Blog export\n\n_{machine}_\n"]
        for name, (df, caption) in self.tables.items():
            p = out / f"{name}.md"
            p.write_text(to_markdown(df, caption, machine))
            written["tables"].append(str(p))
            index.append(f"## {caption or name}\n\n{to_markdown(df, '', machine)}")
        figs, paths = [], []
        for name, fig in self.figures.items():
            h = out / f"{name}.html"
            fig.write_html(h, include_plotlyjs=True, full_html=True)  # standalone: plotly.js inlined
            written["html"].append(str(h))
            for ext in self.image_formats:
                figs.append(fig)
                paths.append(out / f"{name}.{ext}")
            index.append(f"![{name}]({name}.{self.image_formats[0]})\n\n[interactive]({name}.html)\n")
        if figs:
            import plotly.io as pio

            pio.write_images(figs, paths)  # one Chromium session for all images
            written["images"] += [str(p) for p in paths]
        (out / "index.md").write_text("\n".join(index))
        (out / "manifest.json").write_text(json.dumps(written, indent=2))
        return written


def export(run_dir: Path | str, tables: Mapping[str, Any] | Iterable = (), figures: Mapping[str, Any] | None = None,
           profile: str | None = None, meta: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """One-call form: `tables` maps name -> DataFrame or (DataFrame, caption)."""
    blog = BlogExport(run_dir, profile=profile, meta=meta)
    for name, t in dict(tables).items():
        df, cap = t if isinstance(t, tuple) else (t, "")
        blog.table(name, df, cap)
    for name, fig in (figures or {}).items():
        blog.figure(name, fig)
    return blog.write()
