"""How the CPUs idle is recorded with every run, and `--cpu-latency-us` really holds a PM QoS
CPU latency request for a sweep and lets it go (harness.infra.cpuidle; docs/architecture.md
"Measurements")."""

from __future__ import annotations

import json
import os
import struct

import pytest

from gateway.errors import ConfigError
from harness.cli import main as cli_main
from harness.infra import cpuidle
from harness.results import meta


def test_every_run_records_how_the_cpus_idle():
    m = meta.collect()
    info = m["cpu_idle"]
    assert set(info) == {
        "driver",
        "governor",
        "states",
        "haltpoll_poll_ns",
        "cpufreq_governor",
        "qos_limit_us",
    }
    assert json.loads(json.dumps(info)) == info
    for state in info["states"]:
        assert set(state) == {"name", "exit_latency_us", "disabled"}
    line = meta.describe(m)
    assert "\n" not in line and cpuidle.line(info) in line


def test_the_line_says_driver_poll_window_and_qos():
    info = {"driver": "haltpoll", "governor": "haltpoll", "haltpoll_poll_ns": 0, "qos_limit_us": None}
    assert cpuidle.line(info) == "idle haltpoll/haltpoll (poll 0 ns), QoS none"
    info = {"driver": "intel_idle", "governor": "menu", "haltpoll_poll_ns": None, "qos_limit_us": 0}
    assert cpuidle.line(info) == "idle intel_idle/menu, QoS 0 µs"
    assert cpuidle.line({"driver": None}) == "idle states unknown"


def test_the_request_is_written_as_the_kernel_reads_it_and_released(tmp_path, monkeypatch):
    dev = tmp_path / "cpu_dma_latency"
    dev.write_bytes(b"")
    monkeypatch.setattr(cpuidle, "QOS_DEVICE", dev)
    with cpuidle.hold_latency(25) as held:
        assert held == 25
        assert struct.unpack("<i", dev.read_bytes()) == (25,)
    with pytest.raises(ConfigError, match="0 or more"):
        with cpuidle.hold_latency(-1):
            pass


def test_a_missing_device_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cpuidle, "QOS_DEVICE", tmp_path / "no-such-device")
    with pytest.raises(ConfigError) as e:
        with cpuidle.hold_latency(0):
            pass
    assert "no-such-device" in str(e.value) and "\n" not in str(e.value)


def test_the_kernel_honours_the_request_while_held():
    """On this machine's kernel: the effective limit is 0 while held and back after. Without
    permission to write the device (not root), the error path is what a user gets."""
    if not os.access(cpuidle.QOS_DEVICE, os.W_OK):
        with pytest.raises(ConfigError, match="cpu_dma_latency"):
            with cpuidle.hold_latency(0):
                pass
        return
    before = cpuidle.qos_limit_us()
    with cpuidle.hold_latency(0):
        assert cpuidle.qos_limit_us() == 0
    assert cpuidle.qos_limit_us() == before


def test_a_bad_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["sweep", "--modes", "rs-server", "--cpu-latency-us", "-5"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0 or more" in err[0]


@pytest.mark.slow
def test_a_sweep_holds_the_request_for_the_run_and_records_it(tmp_path):
    from harness.infra.sweep import run_sweep

    if not os.access(cpuidle.QOS_DEVICE, os.W_OK):
        with pytest.raises(ConfigError):
            run_sweep(modes=("rs-server",), concurrency=(1,), cpu_latency_us=0, out=tmp_path, progress=False)
        return
    before = cpuidle.qos_limit_us()
    r = run_sweep(
        modes=("rs-server",),
        governance=("off",),
        concurrency=(1,),
        duration_s=0.5,
        warmup_s=0.2,
        repeat=1,
        gil=False,
        capacity=False,
        report=False,
        progress=False,
        out=tmp_path,
        cpu_latency_us=0,
    )
    m = json.loads((r.dir / "meta.json").read_text())
    assert m["parameters"]["cpu_latency_us"] == 0
    assert m["cpu_idle"]["qos_limit_us"] == 0  # read from the kernel while the run held it
    assert (r.table["status"] == "ok").all()
    assert cpuidle.qos_limit_us() == before  # released with the run
