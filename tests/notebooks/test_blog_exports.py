"""Every notebook's blog export as a reader would open it: `blog/index.md` rendered with its
tables and PNG figures, and each interactive HTML figure, in headless Chromium
(lab_ext/blog_view.py); the screenshots land in the run folder (`<notebook>/screenshots/`).

The exports come from the newest `data/runs/*-notebooks-ci/` run (`make test-notebooks`
writes one, and runs this file again right after it); without one, a small export is made
here from a synthetic sweep through the same `BlogExport`. Notebook 07's export, when the run
has it, is checked for its tables and its figure; notebook 07 in JupyterLab (test_browser.py)
checks the export its own run wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lab_ext.blog_view import view_blog

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "data" / "runs"
ARTIFACTS = ROOT / "test-artifacts"


def newest_ci_run() -> Path | None:
    """The newest notebooks ci run folder that holds at least one blog export."""
    runs = sorted(p for p in RUNS.glob("*-notebooks-ci") if any(p.glob("*/blog/index.md")))
    return runs[-1] if runs else None


def check_export(blog: Path) -> dict:
    """Render one export and assert what a reader needs: every table of the manifest on the
    page with rows, every PNG figure loaded, every interactive figure drawn."""
    manifest = json.loads((blog / "manifest.json").read_text())
    v = view_blog(blog)
    assert not v.broken, f"{blog}: did not load or draw: {v.broken}"
    assert len(v.tables) == len(manifest["tables"]), (blog, v.tables, manifest["tables"])
    assert all(rows > 0 for rows in v.tables), f"{blog}: an empty table: {v.tables}"
    pngs = [Path(p).name for p in manifest["images"] if p.endswith(".png")]
    assert sorted(v.images) == sorted(pngs), (v.images, pngs)
    assert set(v.figures) == {Path(h).name for h in manifest["html"]}
    assert all(p.exists() and p.stat().st_size > 5_000 for p in v.screenshots)
    return {"tables": v.tables, "images": v.images, "screenshots": [str(p) for p in v.screenshots]}


def _small_export(run: Path) -> Path:
    """A one-table, one-figure export made from a synthetic closed-loop sweep, as a notebook
    makes one (what this test renders on a fresh clone before any ci run exists)."""
    import pandas as pd
    import plotly.graph_objects as go

    from lab_ext.export import BlogExport

    cs = [1, 4, 16]
    rows = [
        {"mode": m, "c": c, "req/s": k * 400 * c**0.5} for m, k in (("py", 1.0), ("rs-core", 1.7)) for c in cs
    ]
    fig = go.Figure()
    for m, d in pd.DataFrame(rows).groupby("mode"):
        fig.add_scatter(x=d["c"], y=d["req/s"], name=m, mode="lines+markers")
    fig.update_xaxes(title_text="concurrency c", type="log", tickvals=cs)
    fig.update_yaxes(title_text="req/s")
    fig.update_layout(
        title=dict(
            text="Synthetic sweep (no gateway ran)",
            subtitle=dict(text="closed loop; exact counts; 1 repeat"),
        ),
        height=420,
    )
    blog = BlogExport(run, profile="ci")
    blog.table("sweep", pd.DataFrame(rows), caption="Synthetic sweep: req/s per mode and c")
    blog.figure("sweep", fig)
    blog.write()
    return run / "blog"


def test_each_notebook_export_renders(tmp_path):
    run = newest_ci_run()
    ARTIFACTS.mkdir(exist_ok=True)
    if run is None:
        blog = _small_export(tmp_path / "small")
        seen = {"small": check_export(blog)}
        shutil.copy(blog.parent / "screenshots" / "blog.png", ARTIFACTS / "blog-small.png")
    else:
        seen = {
            b.parent.name: check_export(b) for b in sorted(run.glob("*/blog")) if (b / "index.md").exists()
        }
        if (run / "07_rust_ladder" / "blog").exists():
            s = seen["07_rust_ladder"]
            assert len(s["tables"]) >= 4 and "ladder.png" in s["images"], s
        (run / "blog-screenshots.json").write_text(json.dumps(seen, indent=2))
    assert seen
