"""The widgets without a browser: the live sweep panel fed like run_sweep feeds it, and the
switch panel driving the %gateway session."""

from __future__ import annotations

import math

import pytest

import lab_ext
from gateway.twins import COMPONENTS
from lab_ext.widgets import SweepPanel, SwitchPanel, cell_label


def test_cell_labels_follow_the_sweep_schema():
    assert cell_label({"mode": "py", "switches": "", "shell": "asgi"}) == "py"
    assert cell_label({"mode": "py", "switches": "mmr=rust", "shell": "asgi"}) == "py[mmr=rust]"
    assert cell_label({"mode": "py+rs", "switches": "", "shell": "fastapi"}) == "py+rs (fastapi)"


def test_sweep_panel_plots_each_cell_and_reports_failures():
    p = SweepPanel.for_sweep({"modes": ("py", "py+rs"), "concurrency": [1, 4], "repeat": 1})
    assert p.total == 4
    cells = [
        {
            "mode": "py",
            "switches": "",
            "concurrency": 4,
            "rps": 900.0,
            "gil_wait_p99_us": 50.0,
            "status": "ok",
        },
        {
            "mode": "py",
            "switches": "",
            "concurrency": 1,
            "rps": 300.0,
            "gil_wait_p99_us": 10.0,
            "status": "ok",
        },
        {
            "mode": "py+rs",
            "switches": "",
            "concurrency": 1,
            "rps": 400.0,
            "gil_wait_p99_us": 8.0,
            "status": "ok",
        },
        {
            "mode": "py+rs",
            "switches": "",
            "concurrency": 4,
            "rps": math.nan,
            "status": "failed",
            "error": "gateway did not start",
        },
    ]
    for c in cells:
        p.on_cell(c)
    assert p.progress.value == 4
    tput = {tr.name: (list(tr.x), list(tr.y)) for tr in p.throughput.data}
    assert tput == {
        "py": ([1.0, 4.0], [300.0, 900.0]),
        "py+rs": ([1.0], [400.0]),
    }  # sorted by c; failed cell not plotted
    assert "exact probe" in p.gil.layout.yaxis.title.text
    assert "failed" in p.status.value and "gateway did not start" in p.status.value


def test_switch_panel_builds_switches_per_component():
    seen = []
    sp = SwitchPanel(on_apply=lambda sw, shell: seen.append((sw, shell)))
    assert set(sp.components) == set(COMPONENTS)
    sp.mode.value = "py+rs"
    sp.components["mmr"].value = "python"
    sp.components["wal"].value = "python"
    sp.shell.value = "fastapi"
    assert (
        sp.switches.label() == "py+rs[mmr=python,wal=python]"
        and "py+rs[mmr=python,wal=python]" in sp.label.value
    )
    sp.apply.click()
    ((sw, shell),) = seen
    assert sw.impl("mmr") == "python" and sw.impl("waf") == "rust" and shell == "fastapi"


@pytest.mark.slow
def test_switch_panel_restarts_the_gateway_session():
    sp = SwitchPanel()
    sp.components["adapter"].value = "rust"
    try:
        sp.apply.click()
        st = lab_ext.session().status()
        assert st["state"] == "up" and st["switches"] == "py[adapter=rust]" and st["health"].startswith("200")
    finally:
        lab_ext.session().stop()
    assert lab_ext.session().status() == {"state": "down"}
