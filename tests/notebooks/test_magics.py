"""The lab extension in a real IPython shell: %gateway against the native mock, %bench,
%sweep with the CLI's options, %%profile."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

import lab_ext
from gateway.errors import ConfigError
from lab_ext.magics import MagicUsageError, sweep_kwargs, sweep_parser

pytestmark = pytest.mark.slow


@pytest.fixture
def ip():
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()
    shell.run_line_magic("load_ext", "lab_ext")
    try:
        yield shell
    finally:
        lab_ext.session().stop()  # never leave a gateway or mock behind, also on failure


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not alive
        return f.read().split(")")[-1].split()[0] != "Z"


def _chat(url: str, key: str) -> dict:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}).encode()
    req = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return json.loads(r.read())


def test_gateway_up_status_down(ip, capsys):
    ip.run_line_magic("gateway", "up --mode py")
    s = lab_ext.session()
    assert (
        s.up and s.gateway.url.startswith("http://127.0.0.1:") and s.mock.url.startswith("http://127.0.0.1:")
    )
    out = capsys.readouterr().out
    assert "gateway up at" in out and s.gateway.url in out

    reply = _chat(s.gateway.url, s.api_key)  # a real request: gateway -> native mock
    assert reply["choices"][0]["message"]["content"]

    ip.run_line_magic("gateway", "status")
    status = dict(line.split(None, 1) for line in capsys.readouterr().out.strip().splitlines())
    assert status["state"] == "up" and status["mode"] == "py" and status["url"] == s.gateway.url
    assert status["health"].startswith("200")

    pids = [s.gateway.pid, getattr(s.mock, "pid", None) or s.mock.proc.pid]
    ip.run_line_magic("gateway", "down")
    assert "gateway stopped" in capsys.readouterr().out
    assert not s.up
    assert not any(_alive(p) for p in pids)
    ip.run_line_magic("gateway", "status")
    assert capsys.readouterr().out.split() == ["state", "down"]


def test_gateway_switches_reach_the_gateway(ip, capsys):
    ip.run_line_magic("gateway", "up --mode py+rs --impl mmr=python --impl waf=python --quiet")
    st = lab_ext.session().status()
    assert st["mode"] == "py+rs" and st["switches"] == "py+rs[mmr=python,waf=python]"
    assert _chat(st["url"], st["api_key"])["choices"]


def test_gateway_tracing_sends_spans_to_the_sessions_receiver(ip):
    ip.run_line_magic("gateway", "up --mode rs-core --tracing on --quiet")
    s = lab_ext.session()
    _chat(s.gateway.url, s.api_key)
    spans = s.otlp.wait_for(lambda sp: any(x.name == "request" for x in sp))
    assert {"request", "forward", "attempt", "waf"} <= {x.name for x in spans}
    assert s.status()["tracing"].startswith("on (")
    with pytest.raises(ConfigError, match="tracing"):
        ip.run_line_magic("gateway", "up --tracing sometimes")


def test_gateway_bad_arguments_are_clear_and_start_nothing(ip):
    with pytest.raises(MagicUsageError, match="--mode"):
        ip.run_line_magic("gateway", "up --mode fast")
    with pytest.raises(ConfigError, match="bogus"):
        ip.run_line_magic("gateway", "up --impl bogus=rust")
    with pytest.raises(MagicUsageError, match="action"):
        ip.run_line_magic("gateway", "sideways")
    assert not lab_ext.session().up


def test_bench_mmr_quick_returns_a_table(ip, capsys):
    df = ip.run_line_magic("bench", "mmr --quick")
    assert {"impl", "api", "n", "leaves_per_s", "min", "max"} <= set(df.columns)
    assert set(df["impl"]) == {"python", "rust"} and set(df["api"]) == {"per_leaf", "batch"}
    assert (df["leaves_per_s"] > 0).all() and (df["min"] <= df["max"]).all()
    assert df.attrs["raw"]["sha256_bound_leaves_per_s"] > 0
    with pytest.raises(MagicUsageError, match="unknown benchmark"):
        ip.run_line_magic("bench", "nope")


def test_sweep_options_are_the_clis():
    a = sweep_parser().parse_args(
        [
            "--modes",
            "py,py+rs",
            "--concurrency",
            "1,4",
            "--duration",
            "2",
            "--repeat",
            "2",
            "--impl",
            "mmr=python",
            "--no-gil",
            "--profile",
            "ci-2c",
        ]
    )
    kw = sweep_kwargs(a)
    assert kw["modes"] == ("py", "py+rs") and kw["switches"] == ["mmr=python"]
    assert kw["duration_s"] == 2 and kw["repeat"] == 2 and kw["gil"] is False and kw["profile"] == "ci-2c"
    assert kw["tracing"] == ("off",)
    assert sweep_kwargs(sweep_parser().parse_args(["--tracing", "off,sampled:0.1"]))["tracing"] == (
        "off",
        "sampled:0.1",
    )
    with pytest.raises(MagicUsageError):
        sweep_parser().parse_args(["--repeat", "many"])


def test_sweep_magic_runs_a_tiny_sweep_with_the_live_panel(ip, tmp_path, monkeypatch):
    from lab_ext import widgets

    panels = []
    real = widgets.SweepPanel.for_sweep
    monkeypatch.setattr(
        widgets.SweepPanel, "for_sweep", classmethod(lambda cls, kw: panels.append(real(kw)) or panels[-1])
    )
    res = ip.run_line_magic(
        "sweep",
        f"--modes py --concurrency 1,2 --duration 0.5 --warmup 0.2 --repeat 1 --no-gil "
        f"--no-report --no-progress --profile ci-2c --out {tmp_path}",
    )
    assert res.dir.parent == tmp_path
    assert list(res.table["status"]) == ["ok", "ok"] and (res.table["rps"] > 0).all()
    (panel,) = panels
    assert panel.n == 2 and panel.progress.value == 2
    assert [tr.name for tr in panel.throughput.data] == ["py"] and list(panel.throughput.data[0].x) == [
        1.0,
        2.0,
    ]


def test_profile_cell_magic_with_py_spy(ip, tmp_path):
    ip.run_cell_magic(
        "profile",
        f"--out {tmp_path}",
        "import hashlib\nprofiled = 0\nfor i in range(200_000):\n    profiled += len(hashlib.sha256(b'x').digest())",
    )
    assert ip.user_ns["profiled"] == 200_000 * 32  # the cell ran in the kernel's namespace
    (svg,) = tmp_path.glob("profile-*.svg")
    assert b"<svg" in svg.read_bytes()[:2000]


def test_profile_cell_magic_with_scalene(ip, tmp_path):
    ip.run_cell_magic(
        "profile",
        f"--tool scalene --out {tmp_path}",
        "total = 0\nfor i in range(3_000_000):\n    total += i * i\n",
    )
    data = json.loads((tmp_path / "scalene-profile.json").read_text())
    assert data["files"], "scalene recorded no file"


def test_profile_cell_magic_with_perf_on_the_rs_server_gateway(ip, tmp_path, capsys):
    """%%profile --tool perf --target gateway: every thread of the session's rs-server while
    the cell drives it, drawn inline, with its label."""
    ip.run_line_magic("gateway", "up --mode rs-server --quiet")
    s = lab_ext.session()
    ip.user_ns["_url"], ip.user_ns["_key"] = s.gateway.url, s.api_key
    ip.run_cell_magic(
        "profile",
        f"--tool perf --target gateway --out {tmp_path}",
        "from harness.infra.native_procs import run_load\n"
        "r = run_load(_url + '/v1/chat/completions', concurrency=4, duration_s=1.5, "
        "body={'model': 'm', 'messages': [{'role': 'user', 'content': 'hi'}]}, "
        "headers={'authorization': 'Bearer ' + _key, 'content-type': 'application/json'})",
    )
    assert ip.user_ns["r"]["rps"] > 0  # the cell ran in the kernel's namespace
    (svg,) = tmp_path.glob("profile-*.perf.svg")
    text = svg.read_text()
    assert "<svg" in text[:2000] and "gatewaylab_" in text
    out = capsys.readouterr().out
    assert "sampled (perf cpu-clock, 99 Hz)" in out and f"pid {s.gateway.app_pid} (gatewaylab-serv)" in out


def test_profile_cell_magic_refuses_py_spy_without_an_interpreter(ip, tmp_path):
    ip.run_line_magic("gateway", "up --mode rs-server --quiet")
    with pytest.raises(MagicUsageError, match=r"not applicable \(no interpreter\); use --tool perf"):
        ip.run_cell_magic("profile", f"--target gateway --out {tmp_path}", "pass")
    with pytest.raises(MagicUsageError, match="expected kernel, gateway or a pid"):
        ip.run_cell_magic("profile", "--tool perf --target nowhere", "pass")
