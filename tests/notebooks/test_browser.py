"""A real browser: JupyterLab on loopback with a token, a small notebook opened in headless
Debian Chromium (driven by playwright, no browser download), all cells run, a plotly
figure must render in the page. The screenshot lands in test-artifacts/."""
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
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# browser check\nA plotly figure from a pandas table, and the lab extension loaded."),
        nbformat.v4.new_code_cell("%load_ext lab_ext\n%gateway status"),
        nbformat.v4.new_code_cell(
            "import pandas as pd, plotly.express as px\n"
            "df = pd.DataFrame({'concurrency': [1, 2, 4, 8, 16], 'throughput': [900, 1700, 3000, 3300, 3350]})\n"
            "px.line(df, x='concurrency', y='throughput', markers=True, title='browser check')"),
        nbformat.v4.new_code_cell(
            "from lab_ext.widgets import SweepPanel\n"
            "panel = SweepPanel(total=4, title='widget check')\n"
            "panel"),
        nbformat.v4.new_code_cell(  # fed like a real sweep: cells finish seconds apart
            "import time\n"
            "for c in (1, 4):\n"
            "    for mode, k in (('py', 1.0), ('py+rs', 1.4)):\n"
            "        time.sleep(1.0)\n"
            "        panel.on_cell({'mode': mode, 'concurrency': c, 'throughput_rps': 800 * c * k, 'gil_wait_p99_us': 20.0 * c})"),
    ]
    nbformat.write(nb, path)


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab from .venv on 127.0.0.1:<free port> with a random token; always stopped."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run `make dev` (installs Debian's chromium)")
    work = tmp_path / "lab"
    work.mkdir()
    _small_notebook(work / "check.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
               PYTHONPATH=str(ROOT))
    # only the notebook's own kernel, so Lab never stops to ask which one to start
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"KernelSpecManager": {"allowed_kernelspecs": ["python3"]}}))
    jupyter = Path(sys.executable).parent / "jupyter"
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--ip", "127.0.0.1", f"--port={port}", "--port-retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited ({proc.returncode}): {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
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


def test_lab_renders_a_plotly_figure(jupyterlab):
    from playwright.sync_api import sync_playwright

    base, token, tmp = jupyterlab
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "jupyterlab-plotly.png"
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900})
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        try:
            page.goto(f"{base}/lab/tree/check.ipynb?token={token}", timeout=90_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
            _run_all_cells(page)
            fig = page.wait_for_selector(".jp-OutputArea .js-plotly-plot .main-svg", timeout=120_000)
            assert fig.is_visible()
            # the figure has drawn its data, not just an empty frame
            page.wait_for_selector(".js-plotly-plot .scatterlayer .trace", timeout=30_000)
            # the live sweep panel (ipywidgets + plotly FigureWidget) rendered too
            page.wait_for_selector(".jp-OutputArea .widget-hprogress, .jp-OutputArea .widget-progress", timeout=60_000)
            page.wait_for_function("document.querySelectorAll('.jp-OutputArea .js-plotly-plot').length >= 3",
                                   timeout=60_000)
            page.wait_for_selector(".jp-OutputArea :text('cell 4/4')", timeout=30_000)
            # ... and drew the points it was fed: two lines (py, py+rs) in each of its two charts
            page.wait_for_function(
                "document.querySelectorAll('.jp-OutputArea .widget-vbox .js-plotly-plot .scatterlayer .trace').length >= 4",
                timeout=30_000)
            no_news = page.get_by_role("button", name="No", exact=True)
            if no_news.count():
                no_news.first.click()  # the news prompt would cover part of the screenshot
            out_text = page.inner_text(".jp-NotebookPanel .jp-Notebook")
            assert "state" in out_text and "down" in out_text  # %gateway status ran in the kernel
            fig.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
            page.locator(".jp-OutputArea .widget-vbox").last.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-sweep-panel.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-FAILED.png"))  # what the page showed
            raise
        finally:
            ctx.close()
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, tmp / shot.name)
