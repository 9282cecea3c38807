"""A real browser: JupyterLab on loopback with a token, a study notebook (07, the Rust
ladder, with the ci parameters injected as papermill does) opened in headless Debian Chromium
(driven by playwright, no browser download), Run All Cells: the live sweep panel is visible
while the four rungs run and ends counting every cell, the notebook runs to its end (its
metrics.json appears), a plotly figure renders in the page, and the blog export the run wrote
is opened (lab_ext/blog_view.py) and holds its tables and its figure. The screenshots land in
the run folder and in test-artifacts/."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STUDY = "07_rust_ladder"  # a study notebook with plotly figures, the live sweep panel and a blog export
# its ci size: 4 rungs x 3 concurrencies x 1 repeat in the panel's sweep
PANEL_CELLS = 12


def _study_notebook(path: Path, run_dir: Path) -> None:
    """The study notebook as a user opens it, with the ci parameters injected the way
    papermill injects them (a cell after the `parameters` cell)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(ROOT / "notebooks" / f"{STUDY}.ipynb"))  # with papermill's metadata
    nb = parameterize_notebook(nb, {"profile": "ci", "run_dir": str(run_dir), "live_panel": True})
    nbformat.write(nb, path)


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab from .venv on 127.0.0.1:<free port> with a random token; always stopped."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run `make dev` (installs Debian's chromium)")
    work = tmp_path / "lab"
    work.mkdir()
    _study_notebook(work / f"{STUDY}.ipynb", tmp_path / "run")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
        PYTHONPATH=str(ROOT),
    )
    # only the notebook's own kernel, so Lab never stops to ask which one to start
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"KernelSpecManager": {"allowed_kernelspecs": ["python3"]}})
    )
    jupyter = Path(sys.executable).parent / "jupyter"
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [
            str(jupyter),
            "lab",
            "--no-browser",
            "--ip",
            "127.0.0.1",
            f"--port={port}",
            "--port-retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=None",
        ]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"jupyter lab exited ({proc.returncode}): {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("jupyter lab did not answer within 90 s")
            time.sleep(0.5)
        yield base, token, tmp_path
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its kernels (own session)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def _accept_kernel_dialog(page) -> None:
    """Lab may ask which kernel to start (when several are installed): take the notebook's own."""
    dialog = page.locator(".jp-Dialog:has-text('Select Kernel')")
    if dialog.count() and dialog.first.is_visible():
        dialog.locator("button.jp-mod-accept").click()


def _run_all_cells(page, attempts: int = 3) -> None:
    """Run > Run All Cells, retried (rarely) until a code cell has started executing: the
    status bar can say idle before the kernel session is really connected."""
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    for _ in range(attempts):
        _accept_kernel_dialog(page)
        page.click(".jp-NotebookPanel .jp-Notebook")
        page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
        page.click("li.lm-Menu-item:has-text('Run All Cells')")
        for _ in range(90):  # up to ~45 s (a loaded machine) for any prompt to leave [ ]
            _accept_kernel_dialog(page)
            if any(t.strip() not in ("[ ]:", "") for t in prompts.all_inner_texts()):
                return
            page.wait_for_timeout(500)
    raise AssertionError("Run All Cells never started a cell")


def test_lab_runs_the_rust_ladder_on_the_ci_profile_and_its_export_reads_well(jupyterlab):
    from playwright.sync_api import sync_playwright

    from lab_ext.blog_view import view_blog

    base, token, tmp = jupyterlab
    run = tmp / "run"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "jupyterlab-plotly.png"
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        try:
            page.goto(f"{base}/lab/tree/{STUDY}.ipynb?token={token}", timeout=90_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
            _run_all_cells(page)
            # the live sweep panel (ipywidgets + plotly FigureWidget) renders while the sweep runs
            panel = page.wait_for_selector(
                ".jp-OutputArea .widget-hprogress, .jp-OutputArea .widget-progress", timeout=120_000
            )
            panel.scroll_into_view_if_needed()
            assert panel.is_visible()
            page.wait_for_function(
                "document.querySelector('.jp-NotebookPanel .jp-Notebook').innerText.includes("
                f"'done, {PANEL_CELLS} cells')",
                timeout=900_000,
            )
            page.locator(".jp-OutputArea .widget-vbox").first.scroll_into_view_if_needed()
            # ... and its throughput chart drew a line per rung (the FigureWidget synced its data)
            page.wait_for_function(
                "(document.querySelector('.jp-OutputArea .widget-vbox .js-plotly-plot') || {querySelectorAll: () => []})"
                ".querySelectorAll('.cartesianlayer .trace').length >= 4",
                timeout=60_000,
            )
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-sweep-panel.png"))
            # the notebook ran to its end: the metrics the CI gate reads were written by the kernel
            for _ in range(900):
                if (run / "metrics.json").exists():
                    break
                page.wait_for_timeout(1000)
            assert (run / "metrics.json").exists(), "the notebook did not run to its end"
            metrics = json.loads((run / "metrics.json").read_text())["metrics"]
            assert "rss_py_over_rsserver" in metrics
            # ... and its ladder figure drew data in the page, not just an empty frame
            fig = page.wait_for_selector(".jp-OutputArea .js-plotly-plot .main-svg", timeout=60_000)
            assert fig.is_visible()
            page.wait_for_selector(".js-plotly-plot .scatterlayer .trace", timeout=60_000)
            no_news = page.get_by_role("button", name="No", exact=True)
            if no_news.count():
                no_news.first.click()  # the news prompt would cover part of the screenshot
            # the kernel ran the study on the injected parameters (Lab renders only the cells in
            # view, so this is read from the run folder, not the page)
            meta = json.loads((run / "meta.json").read_text())
            assert meta["parameters"]["profile"] == "ci" and meta["parameters"]["notebook"] == STUDY
            fig.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-FAILED.png"))  # what the page showed
            raise
        finally:
            ctx.close()
    # the blog export this run wrote, as a reader opens it: its tables and its figures (the
    # ladder in req/s, and in instructions per request with the governance tax per rung)
    manifest = json.loads((run / "blog" / "manifest.json").read_text())
    view = view_blog(run / "blog")
    assert not view.broken, view.broken
    assert len(view.tables) == len(manifest["tables"]) >= 4 and all(view.tables), view.tables
    assert sorted(view.images) == sorted(Path(p).name for p in manifest["images"] if p.endswith(".png")), view
    assert "ladder.png" in view.images and view.figures.get("ladder.html", 0) > 0, view
    assert all(n > 0 for n in view.figures.values()), view
    for p in view.screenshots:
        shutil.copy(p, ARTIFACTS / f"07-export-{p.name}")
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, tmp / shot.name)
