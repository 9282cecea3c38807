"""The interpreter axis (harness.infra.interpreters, docs/interpreters.md): discovery, the build-flag
choice, the one-line refusals, the venv cache's keying, the `python` column and labels, the
`--pythons` flag of bench and sweep, and the "no GIL" views.

Nothing here can run a free-threaded interpreter: a *fake* interpreter stands in for one. It
is this venv's Python started with a `sitecustomize` that makes the probe see another version
and `Py_GIL_DISABLED=1`; it answers only the harness's probe and fails any other use (as an
interpreter that cannot build would), so maturin's refusal is real and fast. The one test that
builds a real venv (3.12, cached in the harness cache) is in test_interpreters_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from harness.infra import interpreters as I

ROOT = Path(__file__).resolve().parents[2]


def fake_python(
    d: Path,
    name: str,
    version: tuple[int, int, int] | None = (3, 14, 0),
    gil_disabled: bool = True,
    gil_on_now: bool | None = None,
    ensurepip: bool = True,
    only_probe: bool = True,
    path: Path | None = None,
) -> Path:
    """An executable that runs this Python with a sitecustomize faking the build it reports
    (`version` None: this Python's own version; `path`: put on sys.path as well)."""
    site = d / f"{name}-site"
    site.mkdir(parents=True, exist_ok=True)
    gil_now = (not gil_disabled) if gil_on_now is None else gil_on_now
    fake_version = f"sys.version_info = {tuple(version) + ('final', 0)!r}" if version else ""
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import sys, sysconfig
            {fake_version}
            _get = sysconfig.get_config_var
            sysconfig.get_config_var = lambda n: ({int(gil_disabled)} if n == "Py_GIL_DISABLED" else _get(n))
            sys._is_gil_enabled = lambda: {gil_now!r}
            if not {ensurepip!r}:
                sys.modules["ensurepip"] = None
            """
        )
    )
    exe = d / name
    probe_only = (
        'case "$2" in *_probe*) ;; *) echo "fake interpreter: answers the gatewaylab probe only" >&2; exit 1;; esac\n'
        if only_probe
        else ""
    )
    pp = f"{site}:{path}" if path else str(site)
    exe.write_text(f'#!/bin/sh\n{probe_only}PYTHONPATH="{pp}" exec "{sys.executable}" "$@"\n')
    exe.chmod(0o755)
    return exe


def interp(version="3.12.1", gil_disabled=False, path=None, source="pyenv", **kw) -> I.Interpreter:
    path = path or f"/opt/py{version}/bin/python3"
    return I.Interpreter(
        path=path,
        realpath=path,
        implementation=kw.pop("implementation", "CPython"),
        version=version,
        gil_disabled=gil_disabled,
        gil_enabled=not gil_disabled,
        jit_built=kw.pop("jit_built", False),
        jit_enabled=kw.pop("jit_enabled", False),
        debug=kw.pop("debug", False),
        soabi=kw.pop("soabi", "cpython-312-x86_64-linux-gnu"),
        source=source,
        **kw,
    )


# --- detection and labels --------------------------------------------------------------------


def test_the_running_interpreter_is_probed_and_labelled():
    me = I.running()
    v = sys.version_info
    assert me.version == f"{v.major}.{v.minor}.{v.micro}"
    assert me.implementation == "CPython"
    assert me.label == f"CPython {me.version} GIL" and me.tag == f"cp{v.major}{v.minor}"
    assert I.probe(sys.executable).identity() == me.identity()


def test_a_free_threaded_build_is_detected_from_py_gil_disabled(tmp_path):
    i = I.probe(fake_python(tmp_path, "python3.14t"))
    assert (i.version, i.gil_disabled, i.gil_enabled) == ("3.14.0", True, False)
    assert i.label == "CPython 3.14.0 free-threaded" and i.tag == "cp314t"
    assert I.unusable_reason(i) is None
    # the same build with the GIL turned back on at runtime is still a free-threaded build
    j = I.probe(fake_python(tmp_path, "python3.14t-gil", gil_on_now=True))
    assert j.gil_disabled and j.gil_enabled and j.label == i.label


def test_labels_carry_the_build_flags():
    assert interp("3.13.0", jit_built=True, jit_enabled=True).label == "CPython 3.13.0 GIL JIT"
    assert interp("3.13.0", jit_built=True).label == "CPython 3.13.0 GIL JIT off"
    assert interp("3.13.0", jit_built=True, jit_enabled=True).tag == "cp313_jit"
    assert interp("3.12.1", debug=True).tag == "cp312_d"
    assert interp("3.14.0", gil_disabled=True).slug == "cpython-3.14.0-free-threaded"


# --- the build-flag choice -------------------------------------------------------------------


def test_gil_builds_share_the_abi3_wheel_and_free_threaded_builds_get_their_own():
    for v in ("3.11.7", "3.12.1", "3.13.0"):
        assert I.build_flavor(interp(v)) is I.ABI3
    ft = I.build_flavor(interp("3.14.0", gil_disabled=True))
    assert ft.name == "cp314t"
    assert ft.cargo_args == ("--no-default-features", "--features", "extension-module")
    # the binding crate's abi3 is a default feature: leaving the defaults out is what drops it
    cargo = (ROOT / "native" / "py" / "Cargo.toml").read_text()
    assert 'default = ["extension-module", "abi3"]' in cargo
    assert 'abi3 = ["pyo3/abi3-py311"]' in cargo


def test_the_module_declares_it_runs_without_the_gil():
    lib = (ROOT / "native" / "py" / "src" / "lib.rs").read_text()
    assert "#[pymodule(gil_used = false)]" in lib


# --- refusals, each one line ----------------------------------------------------------------


def test_free_threaded_313_is_refused_before_anything_is_built(tmp_path):
    exe = fake_python(tmp_path, "python3.13t", version=(3, 13, 0))
    i = I.probe(exe)
    assert "PyO3 0.30 builds free-threaded extensions for 3.14t and newer" in I.unusable_reason(i)
    with pytest.raises(ConfigError) as e:
        I.resolve(str(exe))
    assert "\n" not in str(e.value) and "cannot be used" in str(e.value)
    with pytest.raises(I.BuildRefused) as e:
        I.prepare(i, cache=tmp_path / "cache", log=None)
    assert str(e.value).startswith("cannot build gateway._native for CPython 3.13.0 free-threaded")
    assert not (tmp_path / "cache").exists()  # refused before any wheel or venv


def test_an_interpreter_the_extension_cannot_be_built_for_is_refused_in_one_line(tmp_path):
    """maturin really runs, against an interpreter that fails anything but the probe."""
    i = I.probe(fake_python(tmp_path, "python3.14t"))
    with pytest.raises(I.BuildRefused) as e:
        I.build_wheel(i, "0" * 64, cache=tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(
        f"cannot build gateway._native for CPython 3.14.0 free-threaded ({i.path}): maturin: "
    )
    assert "python interpreter" in msg  # maturin's own reason, not a traceback
    assert not list((tmp_path / "cache" / "wheels").glob("*/*.whl"))


def test_the_cli_refuses_an_unusable_interpreter_in_one_line(tmp_path):
    exe = fake_python(tmp_path, "python3.13t", version=(3, 13, 0))
    for argv in (
        ["bench", "hash", "--quick", "--pythons", str(exe)],
        ["bench", "--pythons", str(exe), "hash", "--quick"],
        ["sweep", "--modes", "py", "--pythons", str(exe), "--ci", "--no-progress", "--raw"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "harness.cli", *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert r.returncode == 1, (argv, r.stdout, r.stderr)
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "CPython 3.13.0 free-threaded cannot be used" in err[0] and "3.14t" in err[0]


def test_unusable_versions_and_missing_ones_are_named():
    found = I.Discovery(
        usable=[interp("3.12.1"), interp("3.12.3", path="/usr/bin/python3.12", source="PATH")],
        unusable=[
            I.Unusable(
                "/p/3.10/bin/python3",
                "pyenv",
                "below the project's requires-python >=3.11",
                interp("3.10.13"),
            )
        ],
    )
    with pytest.raises(
        ConfigError, match=r"--pythons 3.10: CPython 3.10.13 \(/p/3.10/bin/python3\) cannot be used: below"
    ):
        I.resolve("3.10", found)
    with pytest.raises(
        ConfigError, match=r"--pythons 3.9: no such interpreter here \(usable: 3.12.1, 3.12.3;"
    ):
        I.resolve("3.9", found)
    with pytest.raises(ConfigError, match="expected a version"):
        I.resolve("three", found)
    with pytest.raises(ConfigError, match="no such file"):
        I.resolve("/nonexistent/python3", found)
    assert I.unusable_reason(interp("3.12.1", implementation="PyPy")).startswith("PyPy")


def test_a_version_picks_the_newest_patch_and_t_a_free_threaded_build():
    a, b = interp("3.12.1"), interp("3.12.3", path="/usr/bin/python3.12", source="PATH")
    ft = interp("3.14.0", gil_disabled=True, path="/opt/ft/bin/python3.14t")
    found = I.Discovery(usable=[a, b, ft])
    assert I.resolve("3.12", found) == [b]
    assert I.resolve("3.12.1", found) == [a]
    assert I.resolve("3.14t", found) == [ft]
    assert I.resolve("3.12,3.12.3", found) == [b]  # the same interpreter twice is one
    with pytest.raises(ConfigError):
        I.resolve("3.14", found)  # 3.14 means a GIL build; only 3.14t is here


# --- discovery -------------------------------------------------------------------------------


def test_discovery_reads_path_and_pyenv_and_says_why_in_one_line(tmp_path):
    """A PATH with a 3.12 and a Python without ensurepip; a pyenv root whose `pyenv versions`
    lists a 3.13, a 3.10 and a free-threaded 3.13t (all fakes answering the probe)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake_python(bindir, "python3.12", version=(3, 12, 9), gil_disabled=False)
    fake_python(bindir, "python3", version=(3, 12, 8), gil_disabled=False, ensurepip=False)
    (bindir / "python3.12-config").write_text("#!/bin/sh\n")  # not an interpreter's name
    root = tmp_path / "pyenv"
    for v, ft in (("3.13.2", False), ("3.10.13", False), ("3.13.0t", True)):
        vb = root / "versions" / v / "bin"
        vb.mkdir(parents=True)
        nums = tuple(int(x) for x in v.rstrip("t").split("."))
        fake_python(vb, "python3", version=nums, gil_disabled=ft)
    (root / "bin").mkdir()
    pyenv = root / "bin" / "pyenv"
    pyenv.write_text(
        '#!/bin/sh\ncase "$1" in root) echo "'
        + str(root)
        + '";; versions) printf "system\\n3.13.2\\n3.10.13\\n3.13.0t\\n";; esac\n'
    )
    pyenv.chmod(0o755)
    found = I.discover(path_env=str(bindir), pyenv_root=root)
    assert [(i.version, i.source) for i in found.usable] == [("3.12.9", "PATH"), ("3.13.2", "pyenv")]
    why = {u.what: u.reason for u in found.unusable}
    assert why["CPython 3.12.8"].startswith("has no venv/ensurepip")
    assert why["CPython 3.10.13"] == "below the project's requires-python >=3.11"
    assert "3.14t and newer" in why["CPython 3.13.0 free-threaded"]
    line = found.line()
    assert "\n" not in line
    assert line.startswith("interpreters: found CPython 3.12.9 GIL (")
    assert "CPython 3.13.2 GIL (pyenv)" in line and "cannot use" in line
    assert "CPython 3.10.13 (pyenv): below the project's requires-python >=3.11" in line


# --- the cache's keying ----------------------------------------------------------------------


def _want(**over):
    base = {
        "format": I.MANIFEST_FORMAT,
        "interpreter": interp().identity(),
        "dependencies": ["a", "b"],
        "flavor": "abi3",
        "project_version": "0.1.0",
        "source_hash": "s1",
    }
    return {**base, **over}


def test_plan_reuses_reinstalls_or_builds():
    m = _want()
    assert I.plan(None, _want()) == "build"
    assert I.plan(m, _want()) == "reuse"
    assert I.plan(m, _want(source_hash="s2")) == "reinstall"
    assert I.plan(m, _want(project_version="0.2.0")) == "reinstall"
    assert I.plan(m, _want(dependencies=["a", "b", "c"])) == "build"
    assert I.plan(m, _want(flavor="cp314t")) == "build"
    assert I.plan(m, _want(interpreter=interp("3.12.2").identity())) == "build"
    assert I.plan({**m, "format": "something else"}, _want()) == "build"


def test_the_venv_folder_is_keyed_by_interpreter_and_checkout(tmp_path):
    a = I.venv_dir(interp("3.12.1"), tmp_path)
    assert a == I.venv_dir(interp("3.12.1", source="PATH"), tmp_path)  # where it was found is not identity
    assert a != I.venv_dir(interp("3.12.2"), tmp_path)
    assert a != I.venv_dir(interp("3.12.1", debug=True), tmp_path)
    assert a != I.venv_dir(interp("3.12.1"), tmp_path, root=tmp_path)
    assert a.name.startswith("cpython-3.12.1-gil-")


def test_the_source_hash_follows_the_sources_not_the_build_products(tmp_path):
    for rel in ("gateway/a.py", "native/py/src/lib.rs", "harness/x.toml", "pyproject.toml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    h = I.source_hash(tmp_path)
    for junk in (
        "native/target/release/x",
        "gateway/__pycache__/a.pyc",
        "gateway/_native.abi3.so",
        "native/core/fuzz/c",
    ):
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / junk).write_text("build product")
    assert I.source_hash(tmp_path) == h
    (tmp_path / "native/py/src/lib.rs").write_text("changed")
    assert I.source_hash(tmp_path) != h
    assert len(I.source_hash()) == 64 and I.source_hash() == I.source_hash()


def test_a_venv_manifest_is_read_only_when_it_is_one(tmp_path):
    p = tmp_path / I.MANIFEST
    p.write_text(json.dumps({"format": "nope"}))
    with pytest.raises(ConfigError, match="not a gatewaylab interpreter-venv manifest"):
        I.read_venv_manifest(p)
    p.write_text(json.dumps(_want(git_sha="abc", git_dirty=False)))
    assert I.read_venv_manifest(p)["source_hash"] == "s1"


def test_provenance_names_the_venv(tmp_path, monkeypatch):
    from harness.infra.bundle import provenance

    p = tmp_path / I.MANIFEST
    p.write_text(json.dumps(_want(git_sha="abc123", git_dirty=True, wheel="w.whl")))
    monkeypatch.setenv(I.VENV_ENV, str(p))
    prov = provenance()
    assert prov["kind"] == "venv" and prov["git_sha"] == "abc123" and prov["source_hash"] == "s1"


# --- --pythons on the command line -----------------------------------------------------------


def test_the_pythons_flag_is_taken_out_of_a_benchmarks_own_options():
    from harness.bench._pythons import split_pythons_flag

    assert split_pythons_flag(["--quick", "--pythons", "3.11,3.12"]) == (["--quick"], "3.11,3.12")
    assert split_pythons_flag(["--pythons=3.13", "--n", "100"]) == (["--n", "100"], "3.13")
    assert split_pythons_flag(["--quick"]) == (["--quick"], None)
    from gateway.errors import GatewayLabError

    with pytest.raises(GatewayLabError, match="needs a value"):
        split_pythons_flag(["--pythons"])
    assert I.parse_spec("3.11, 3.12 3.13") == ["3.11", "3.12", "3.13"]
    assert I.parse_spec(["3.11,3.12", "/x/python"]) == ["3.11", "3.12", "/x/python"]


def test_the_sweep_command_passes_pythons_to_the_sweep():
    import argparse

    from harness.commands import sweep as cmd

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    kw = cmd.sweep_kwargs(p.parse_args(["--modes", "py,rs-server", "--pythons", "3.11,3.12", "3.13"]))
    assert kw["pythons"] == ["3.11", "3.12", "3.13"]
    assert cmd.sweep_kwargs(p.parse_args([]))["pythons"] is None


def test_bench_checks_its_own_options_before_building_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAYLAB_CACHE", str(tmp_path / "cache"))
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "bench", "hash", "--no-such-option", "--pythons", "3.12"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "GATEWAYLAB_CACHE": str(tmp_path / "cache")},
        timeout=120,
    )
    assert r.returncode == 2 and "unrecognized arguments: --no-such-option" in r.stderr
    assert not (tmp_path / "cache").exists()


# --- the python column, cell keys, labels ----------------------------------------------------


def test_sweep_configs_put_the_interpreter_rungs_on_the_axis_and_rs_server_once():
    from harness.infra.sweep import Config, _configs

    labels = ("CPython 3.11.7 GIL", "CPython 3.13.0 GIL")
    cfgs = _configs(("py", "py+rs", "rs-core", "rs-server"), None, ("asgi",), pythons=labels)
    by = {}
    for c in cfgs:
        by.setdefault(c.mode, []).append(c.python)
    assert by == {"py": list(labels), "py+rs": list(labels), "rs-core": list(labels), "rs-server": [""]}
    c = Config("py", (), "asgi", python=labels[1])
    assert c.key(4) == "py||asgi|py=CPython 3.13.0 GIL|c=4"
    assert c.stem == "py-none-asgi-cpython-3.13.0-gil"
    assert Config("py", (), "asgi").key(4) == "py||asgi|c=4"  # no axis: keys as before


def test_every_line_of_an_axis_run_names_its_interpreter():
    from harness.results.report import line_label
    from harness.results.schema import CELLS

    assert "python" in CELLS
    row = {
        "mode": "py+rs",
        "shell": "asgi",
        "python": "CPython 3.12.1 GIL",
        "cell": "py+rs||asgi|py=CPython 3.12.1 GIL|c=1",
    }
    assert line_label(row) == "py+rs asgi · CPython 3.12.1 GIL"
    assert line_label({**row, "cell": "py+rs||asgi|c=1"}) == "py+rs asgi"


def test_results_say_which_interpreter_wrote_them():
    from harness.results.meta import collect, describe

    m = collect()
    assert m["python"] == I.running_label()
    assert I.running_label() in describe(m)


# --- no GIL ----------------------------------------------------------------------------------


def test_without_a_gil_the_probes_say_no_gil(monkeypatch):
    import asyncio

    from gateway import probes

    monkeypatch.setattr(probes, "gil_enabled", lambda: False)

    async def go():
        h = probes.start()
        try:
            await asyncio.sleep(0.05)
            return h, probes.snapshot(reset=True)
        finally:
            h.stop()

    handle, snap = asyncio.run(go())
    assert handle.gil is None  # no probe thread: there is no GIL to wait for
    assert snap["gil_enabled"] is False
    for view in ("gil_wait", "native"):
        assert snap[view]["available"] is False and snap[view]["reason"] == probes.NO_GIL
    assert snap["loop_lag"]["available"] is True


def test_the_report_reads_no_gil_where_a_line_had_none(tmp_path):
    import pandas as pd

    from gateway.probes import NO_GIL
    from harness.results import report, schema

    base = {"status": "ok", "shell": "asgi", "duration_s": 1.0, "rps": 100.0, "loop_lag_p99_us": 50.0}
    rows = []
    for c in (1, 4):
        rows.append(
            {
                **base,
                "mode": "py",
                "concurrency": c,
                "python": "CPython 3.14.0 free-threaded",
                "cell": f"py||asgi|py=CPython 3.14.0 free-threaded|c={c}",
                "probes_missing": f"gil_wait: {NO_GIL}; native_gil: {NO_GIL}; gil_ownership: {NO_GIL}",
            }
        )
        rows.append(
            {
                **base,
                "mode": "py",
                "concurrency": c,
                "python": "CPython 3.12.1 GIL",
                "cell": f"py||asgi|py=CPython 3.12.1 GIL|c={c}",
                "gil_wait_p99_us": 80.0,
                "gil_wait_p50_us": 20.0,
                "gil_held_share": 0.5,
                "native_wait_s": 0.01,
                "probes_missing": "",
            }
        )
    cells = schema.frame("cells", rows)
    md = "\n".join(report._gil_views_md(cells))
    ft = md.split("### py asgi · CPython 3.14.0 free-threaded")[1].split("###")[0]
    gil = md.split("### py asgi · CPython 3.12.1 GIL")[1].split("###")[0]

    def table(block):
        lines = [ln.strip("| ").split(" | ") for ln in block.strip().splitlines() if ln.startswith("|")]
        return [dict(zip(lines[0], r)) for r in lines[2:]]

    gil_views = [h for _, h in report.GIL_VIEW_COLS[2:8]]  # views 1-3
    for r in table(ft):
        assert [r[h] for h in gil_views] == ["no GIL"] * len(gil_views), r
        assert r["4: p99 µs"] == "50.0"  # loop lag is measured without a GIL too
    for r in table(gil):
        assert "no GIL" not in r.values() and r["3: p99 µs"] == "80.0"
    assert report.no_gil_lines(report._ok(cells)) == ["py asgi · CPython 3.14.0 free-threaded"]
    figs = dict(report.figures(cells))

    def heading(fig):  # the no-GIL line is named in the title or its subtitle
        t = fig.layout.title
        return f"{t.text} {t.subtitle.text or ''}"

    assert "no GIL: py asgi · CPython 3.14.0 free-threaded" in heading(figs["gil_wait_p99_us"])
    assert "no GIL" not in heading(figs["rps"])
    assert isinstance(cells, pd.DataFrame)


@pytest.mark.slow
def test_a_sweep_cell_on_a_gateway_without_a_gil_says_no_gil(tmp_path):
    """A real sweep cell whose gateway runs on an interpreter reporting the GIL off (this
    Python, `sys._is_gil_enabled` patched by a sitecustomize, the checkout on its path): the
    cell carries the interpreter's label, py-spy is not run, and every GIL view says why."""
    from harness.infra.sweep import Config, Sweep

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake_python(venv / "bin", "python", version=None, gil_disabled=True, only_probe=False, path=ROOT)
    i = I.probe(venv / "bin" / "python")
    assert i.gil_disabled and not i.gil_enabled
    (venv / I.MANIFEST).write_text(json.dumps(_want(git_sha=None, git_dirty=None)))
    env = I.InterpreterEnv(i, venv, {}, "reused", 0.0)
    s = Sweep(
        modes=("py",),
        switches=None,
        shells=("asgi",),
        concurrency=[1],
        profile="ci-2c",
        duration_s=0.6,
        warmup_s=0.2,
        repeat=1,
        gil=True,
        flamegraph=False,
        scalene=False,
        upstream={"latency_ms": 0},
        out=tmp_path / "runs",
        progress=False,
        on_cell=None,
        name="nogil",
        server="uvicorn",
        env=None,
        pyspy_rate=100,
        capacity=False,
        load_opts=None,
        report=False,
        results="raw",
    )
    s.python_envs = {i.label: env}
    s.configs = [Config("py", (), "asgi", probes="on", python=i.label)]  # a GIL/loop view cell
    (row,) = s.execute().table
    assert row["status"] == "ok", row["error"]
    assert (
        row["python"] == i.label == "CPython " + ".".join(map(str, sys.version_info[:3])) + " free-threaded"
    )
    assert row["cell"] == f"py||asgi|probes=on|py={i.label}|c=1"
    from gateway.probes import NO_GIL

    for view in ("gil_ownership", "gil_wait", "native_gil"):
        assert f"{view}: {NO_GIL}" in row["probes_missing"], row["probes_missing"]
    assert row.get("gil_wait_p99_us") is None and row.get("gil_held_share") is None
    assert row.get("loop_lag_p99_us") is not None  # view 4 still measured


@pytest.mark.parametrize("extra", [{"scalene": True}, {"tracing": ("on",)}])
def test_the_axis_refuses_what_its_venvs_cannot_run_before_building_them(tmp_path, monkeypatch, extra):
    from harness.infra.sweep import run_sweep

    monkeypatch.setenv("GATEWAYLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="--pythons with --scalene or --tracing") as e:
        run_sweep(modes=("py",), pythons="3.12", concurrency=[1], out=tmp_path, progress=False, **extra)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob("*-sweep"))
