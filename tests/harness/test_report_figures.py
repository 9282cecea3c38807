"""The sweep report's figures (harness/results/report.py) pass the figure check (harness/results/figcheck.py)
that every notebook export passes: a closed-loop sweep over c and an open-loop ladder over
rates, drawn from synthetic cells in headless Chromium."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.results import report
from harness.results.figcheck import check_figures

pytestmark = pytest.mark.browser

META = {
    "cpu_model": "Test CPU",
    "cores_used": 2,
    "cores_available": 2,
    "build_profile": "release",
    "git_sha": "0123456789abcdef",
    "git_dirty": False,
}


def _cells(x: str, xs: list[int], loop: str) -> pd.DataFrame:
    rows = []
    for mode, k in (("py", 1.0), ("rs-core", 1.8)):
        for v in xs:
            for rep in range(2):
                rows.append(
                    {
                        "status": "ok",
                        "mode": mode,
                        "switches": "",
                        "shell": "asgi",
                        "loop": loop,
                        x: v,
                        "repeat": rep,
                        "rps": k * 300 * v**0.5 + rep,
                        "lat_p50_us": 900 / k + 10 * v + rep,
                        "lat_p99_us": 3000 / k + 40 * v + rep,
                        "cpu_cores": min(1.0, 0.2 * v**0.3),
                        "gil_held_share": 0.3 + 0.01 * v,
                        "rss_peak_mb": 40 + rep,
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "x, xs, loop", [("concurrency", [1, 4, 16], "closed"), ("rate", [250, 1000, 4000], "open")]
)
def test_report_figures_pass_the_check(x, xs, loop):
    cells = _cells(x, xs, loop)
    if x == "rate":
        cells["concurrency"] = 0
    figs = dict(report.figures(cells, meta=META))
    assert {"rps", "lat_p50_us", "gil_held_share", "rss_peak_mb"} <= set(figs)
    assert check_figures(figs) == []
