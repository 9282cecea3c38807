"""Long-running and hostile-load checks of one rung (docs/reliability.md; the tool behind
`gatewaylab soak`). Five scenarios, each starting its own native mock and gateway:

  steady    open loop at a steady rate (default 70% of the capacity a short closed-loop probe
            finds) for `duration_s`; every second: RSS of the gateway's process tree, its CPU
            (cores), its open file descriptors, the per-second p99 from the load generator, and audit lag (requests
            answered but not yet in the ledger, from /health). Reports RSS growth after
            warm-up (median of the last tenth against the first tenth after warm-up), the
            same over the second half only (the last tenth against the tenth that starts
            halfway: a leak keeps growing there, a cache or allocator filling up does not) and p99
            drift (median p99 of the last third against the first third). Writes a run folder
            (tables, summary.json, soak.html, soak.png when a static renderer is available).
  overload  open loop at `factor` x capacity for `duration_s`: peak RSS, answers by status,
            then the recovery time: from the end of the overload until ten requests in a row
            answer 200 within 10x the quiet median latency, and the audit queue is empty.
            With `max_in_flight` (admission control) also: requests shed (503 `overloaded`,
            from /metrics), the p99 of the admitted (2xx) answers, and admitted answers
            missing from the ledger after a graceful stop (must be 0).
  chaos     the mock answers errors, drops connections and stalls past the gateway's upstream
            timeout; every answer must be 200/502/504 (a client timeout is a hang), and after a
            graceful stop the ledger verifies and holds exactly one record per answer.
  idle      `connections` sockets hold half-sent request heads open (slowloris) while good
            requests run; every good request must get 200.
  peak      is RSS growth a leak or the high-water mark of a connection peak? Phases of a few
            connections (open loop at `rate` on a pool of 8) and of many (closed loop, one
            connection per worker) alternate: few, few, many, few, many, many, few; the RSS
            of the gateway's tree and its open fds after each. A leak grows with the work
            done in every phase; a high-water mark grows at the first peak, stays when the
            connections close, and hardly moves at later peaks of the same size.

    from harness.infra.soak import run_steady, run_overload, run_chaos, run_idle, run_peak
    r = run_steady("py", duration_s=20)      # dict; r["rss_growth"], r["p99_drift"], r["run_dir"]
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable

from gateway.errors import ConfigError, GatewayLabError
from gateway.ladder import server_label

API_KEY = "sk-gatewaylab-soak"
BODY = {
    "model": "mock",
    "messages": [{"role": "user", "content": "soak: a steady ordinary prompt"}],
    "max_tokens": 8,
}
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


class SoakError(GatewayLabError, RuntimeError):
    """The scenario could not run (the gateway did not start, a bad option)."""


# --- plumbing --------------------------------------------------------------------------------
def _config(
    path: str, upstream: str, ledger: str, upstream_timeout_s: float = 30.0, max_in_flight: int | None = None
) -> None:
    import yaml

    from gateway.stages.auth import hash_key

    limits: dict = {"upstream_timeout_s": upstream_timeout_s}
    if max_in_flight is not None:
        limits["max_in_flight"] = max_in_flight
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "mock", "upstream": {"kind": "openai", "base_url": upstream}}],
                "passthrough": True,
                "keys": [{"id": "soak", "sha256": hash_key(API_KEY)}],
                "ledger": {"dir": ledger},
                "limits": limits,
            },
            f,
        )


class _Rig:
    """A mock and a gateway on a fresh ledger, stopped on exit; pinned as the hardware
    profile says (on two cores: the gateway on one, the mock and the load generator on the
    other), so the measuring tools never share the gateway's core."""

    def __init__(
        self,
        mode: str,
        server: str | None,
        mock_opts: dict,
        upstream_timeout_s: float = 30.0,
        max_in_flight: int | None = None,
        profile: str = "xeon-4c",
    ):
        from harness.infra.profiles import resolve

        self.mode, self.server, self.mock_opts, self.timeout = mode, server, mock_opts, upstream_timeout_s
        self.max_in_flight = max_in_flight
        self.profile = resolve(profile)
        self.load_cpus = self.profile.load_cpus

    def __enter__(self):
        from gateway.serving.launch import start_gateway
        from harness.infra.native_procs import start_mock

        self.tmp = tempfile.TemporaryDirectory(prefix="gatewaylab-soak-")
        self.ledger = os.path.join(self.tmp.name, "ledger")
        self.mock = start_mock(cpus=self.profile.mock_cpus, **self.mock_opts)
        cfg = os.path.join(self.tmp.name, "gateway.yaml")
        _config(cfg, self.mock.url, self.ledger, self.timeout, self.max_in_flight)
        try:
            self.gw = start_gateway(
                None,
                None,
                mode=self.mode,
                server=self.server,
                config=cfg,
                ledger_dir=self.ledger,
                cpus=self.profile.gateway_cpus,
            )
        except (RuntimeError, ConfigError) as e:  # the child failed, or its options did
            self.mock.stop()
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            raise SoakError(
                f"the gateway (mode {self.mode!r}, {server_label(self.mode, self.server)}) did not start: {lines[-1] if lines else e}"
            ) from None
        self.url = self.gw.url + "/v1/chat/completions"
        self.app_pid = self.gw.app_pid
        return self

    def health(self) -> dict:
        with urllib.request.urlopen(self.gw.url + "/health", timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> dict[str, float]:
        """The /metrics samples this module reads: the shed counter and the chat answers by
        status (the same names on every rung)."""
        with urllib.request.urlopen(self.gw.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("gateway_requests_shed_total "):
                out["shed"] = float(line.split()[1])
            elif line.startswith('gateway_requests_total{route="/v1/chat/completions"'):
                status = line.split('status="', 1)[1].split('"', 1)[0]
                out[f"chat_{status}"] = float(line.rsplit(" ", 1)[1])
        return out

    def __exit__(self, *exc):
        try:
            self.gw.stop()
        finally:
            self.mock.stop()
            self.tmp.cleanup()


def _tree(pid: int) -> list[int]:
    from harness.infra.probes import _children

    return [pid, *_children(pid)]


def _rss_mb(pid: int) -> float:
    from harness.infra.probes import _rss_bytes

    return sum(_rss_bytes(p) for p in _tree(pid)) / 2**20


def _fds(pid: int) -> int | None:
    """Open file descriptors of the gateway's process tree (None if /proc cannot say)."""
    total = 0
    for p in _tree(pid):
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            return None
    return total


def _cpu_ticks(pid: int) -> int:
    from harness.infra.probes import _read_stat

    total = 0
    for p in _tree(pid):
        s = _read_stat(p)
        if s is not None:
            total += s[0] + s[1]
    return total


def _in_thread(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["r"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised by the caller
            out["e"] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


def _joined(th: threading.Thread, out: dict, timeout: float) -> dict:
    th.join(timeout)
    if th.is_alive():
        raise SoakError(f"the load generator did not finish within {timeout:.0f}s")
    if "e" in out:
        raise out["e"]
    return out["r"]


def probe_capacity(url: str, seconds: float = 3.0, concurrency: int = 16, cpus=None) -> float:
    """Closed-loop requests/s at c=16: the rung's capacity on this machine, roughly."""
    from harness.infra.native_procs import run_load

    r = run_load(
        url, concurrency=concurrency, duration_s=seconds, warmup_s=0.5, headers=HEADERS, body=BODY, cpus=cpus
    )
    return float(r["rps"])


def _quiet_latency_ms(url: str, n: int = 20) -> float:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        _post(url, timeout=10)
        lat.append((time.perf_counter() - t0) * 1000)
    return statistics.median(lat)


def _post(url: str, timeout: float) -> int:
    req = urllib.request.Request(
        url,
        data=json.dumps(BODY).encode(),
        method="POST",
        headers={**HEADERS, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --- steady ----------------------------------------------------------------------------------
def run_steady(
    mode: str,
    duration_s: float,
    rate: float | None = None,
    *,
    server: str | None = None,
    warmup_s: float | None = None,
    fraction: float = 0.7,
    out_root: str | None = None,
    images: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    from harness.infra.native_procs import run_load
    from harness.results.runs import create_run

    say = log or (lambda s: None)
    if duration_s <= 0:
        raise SoakError(f"--duration must be > 0, got {duration_s}")
    warm = warmup_s if warmup_s is not None else min(max(5.0, 0.1 * duration_s), duration_s / 2)
    with _Rig(mode, server, {"latency_ms": 1.0, "seed": 1}) as rig:
        capacity = None
        if rate is None:
            capacity = probe_capacity(rig.url, cpus=rig.load_cpus)
            rate = max(1.0, round(fraction * capacity, 1))
            say(f"capacity ~{capacity:.0f} req/s at c=16; soaking at {rate:g} req/s ({fraction:.0%})")
        samples = []
        # the load generator caps a run at max_duration_s (600 s unless told): lift the cap to
        # the soak's length, and check below that the whole window was measured
        th, out = _in_thread(
            lambda: run_load(
                rig.url,
                rate=rate,
                duration_s=duration_s,
                headers=HEADERS,
                body=BODY,
                timeout_s=10.0,
                max_duration_s=duration_s,
                cpus=rig.load_cpus,
            )
        )
        t0 = time.monotonic()
        ticks0, tt0 = _cpu_ticks(rig.app_pid), t0
        while th.is_alive():
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tt0)))
            now = time.monotonic()
            ticks = _cpu_ticks(rig.app_pid)
            try:
                h = rig.health()
                lag = h["audit"]["spawned"] - h["audit"]["records"]
                depth = h["queue"]["depth"]
                records = h["audit"]["records"]
            except OSError:
                lag = depth = records = None
            samples.append(
                {
                    "t": round(now - t0, 3),
                    "rss_mb": _rss_mb(rig.app_pid),
                    "fds": _fds(rig.app_pid),
                    "cpu_cores": (ticks - ticks0) / os.sysconf("SC_CLK_TCK") / (now - tt0),
                    "audit_lag": lag,
                    "queue_depth": depth,
                    "records": records,
                }
            )
            ticks0, tt0 = ticks, now
        load = _joined(th, out, 60)
    measured = float(load["duration_s"])
    if measured < 0.99 * duration_s:
        raise SoakError(f"the load generator measured {measured:g} s of the {duration_s:g} s asked for")
    series = [
        {"t": s["t"], "rps": s["rps"], "p99_us": s["p99_us"], "ok": s["ok"], "errors": s["errors"]}
        for s in load["series"]
    ]
    after = [s for s in samples if s["t"] >= warm]
    tenth = max(3, len(after) // 10)
    rss_first, rss_last = (
        _median([s["rss_mb"] for s in after[:tenth]]),
        _median([s["rss_mb"] for s in after[-tenth:]]),
    )
    half = [s for s in after if s["t"] >= (warm + duration_s) / 2]
    rss_mid = _median([s["rss_mb"] for s in half[:tenth]])
    lat = [s for s in series if s["t"] >= warm and s["ok"]]
    third = max(1, len(lat) // 3)
    p99_first, p99_last = (
        _median([s["p99_us"] for s in lat[:third]]),
        _median([s["p99_us"] for s in lat[-third:]]),
    )
    summary = {
        "scenario": "steady",
        "mode": mode,
        "server": server_label(mode, server),
        "duration_s": duration_s,
        "measured_s": measured,
        "rate": rate,
        "loop": "open",
        "profile": rig.profile.line(),
        "capacity_rps": capacity,
        "warmup_s": warm,
        "requests": load["requests"],
        "ok": load["meta"]["ok"],
        "errors": load["errors"],
        "rps": load["rps"],
        "latency_us": load["latency_us"],
        "rss_mb_after_warmup": rss_first,
        "rss_mb_end": rss_last,
        "rss_growth": (rss_last / rss_first - 1) if rss_first and rss_last else None,
        "rss_mb_halfway": rss_mid,
        "rss_growth_second_half": (rss_last / rss_mid - 1) if rss_mid and rss_last else None,
        "rss_peak_mb": max((s["rss_mb"] for s in samples), default=None),
        "p99_us_first_third": p99_first,
        "p99_us_last_third": p99_last,
        "p99_drift": (p99_last / p99_first) if p99_first and p99_last else None,
        "cpu_cores_mean": _median([s["cpu_cores"] for s in after]),
        "fds_after_warmup": _median([s["fds"] for s in after[:tenth]]),
        "fds_end": _median([s["fds"] for s in after[-tenth:]]),
        "fds_max": max((s["fds"] for s in samples if s["fds"] is not None), default=None),
        "audit_lag_max": max((s["audit_lag"] for s in samples if s["audit_lag"] is not None), default=None),
        "audit_lag_end": samples[-1]["audit_lag"] if samples else None,
    }
    run = create_run(
        f"soak-{mode}",
        parameters={
            "duration_s": duration_s,
            "rate": rate,
            "server": server_label(mode, server),
            "warmup_s": warm,
        },
        root=out_root,
        hardware_profile=rig.profile.name,
        profile_satisfied=rig.profile.profile_satisfied,
    )
    run.write_table("samples", samples)
    run.write_table("load_series", series)
    run.write_json("summary.json", summary)
    summary["figures"] = _plot(run, samples, series, warm, summary, images)
    run.write_json("summary.json", summary)
    summary["run_dir"] = str(run.path)
    return summary


def _plot(run, samples, series, warm, summary, images: bool) -> list[str]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        subplot_titles=("RSS (MiB)", "CPU (cores)", "p99 per second (ms)", "audit lag (records)"),
    )
    fig.add_trace(go.Scatter(x=[s["t"] for s in samples], y=[s["rss_mb"] for s in samples], name="rss"), 1, 1)
    fig.add_trace(
        go.Scatter(x=[s["t"] for s in samples], y=[s["cpu_cores"] for s in samples], name="cpu"), 2, 1
    )
    fig.add_trace(
        go.Scatter(x=[s["t"] for s in series], y=[s["p99_us"] / 1000 for s in series], name="p99"), 3, 1
    )
    fig.add_trace(
        go.Scatter(x=[s["t"] for s in samples], y=[s["audit_lag"] for s in samples], name="lag"), 4, 1
    )
    for r in range(1, 5):
        fig.add_vline(x=warm, line_dash="dot", row=r, col=1)
    growth = summary["rss_growth"]
    drift = summary["p99_drift"]
    fig.update_layout(
        height=900,
        width=900,
        showlegend=False,
        title=f"soak {summary['mode']} at {summary['rate']:g} req/s for {summary['duration_s']:g}s: "
        f"RSS growth {growth:+.1%} after warm-up, p99 drift x{drift:.2f}"
        if growth is not None and drift is not None
        else f"soak {summary['mode']}",
    )
    html = run.artefact("soak.html")
    fig.write_html(str(html), include_plotlyjs="cdn")
    out = [str(html)]
    if images:
        png = run.artefact("soak.png")
        try:
            fig.write_image(str(png))
            out.append(str(png))
        except Exception as e:  # noqa: BLE001 - a static renderer (kaleido + Chromium) may be missing
            run.write_text("soak.png.missing.txt", f"no static image: {type(e).__name__}: {e}\n")
    return out


# --- overload --------------------------------------------------------------------------------
def run_overload(
    mode: str,
    duration_s: float = 30.0,
    factor: float = 2.0,
    *,
    server: str | None = None,
    capacity: float | None = None,
    recovery_limit_s: float = 60.0,
    max_in_flight: int | None = None,
    mock_latency_ms: float = 1.0,
    connections: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Open loop at `factor` x capacity. With `max_in_flight` the gateway sheds what is beyond
    it (503 `overloaded`, counted in /metrics `gateway_requests_shed_total`); the result then
    says how much was shed, the latency of what was admitted (2xx only), and whether the
    ledger, read after a graceful stop, holds exactly one record per admitted answer."""
    from gateway.audit.wal import scan
    from harness.infra.native_procs import run_load

    say = log or (lambda s: None)
    with _Rig(mode, server, {"latency_ms": mock_latency_ms, "seed": 2}, max_in_flight=max_in_flight) as rig:
        quiet_ms = _quiet_latency_ms(rig.url)
        # capacity: closed loop at the admission limit when there is one (what can be admitted)
        cap = capacity or probe_capacity(
            rig.url, concurrency=min(16, max_in_flight or 16), cpus=rig.load_cpus
        )
        rss_before = _rss_mb(rig.app_pid)
        rate = factor * cap
        say(
            f"capacity ~{cap:.0f} req/s; overload at {rate:.0f} req/s for {duration_s:g}s"
            + (f", max_in_flight {max_in_flight}" if max_in_flight else "")
        )
        before = rig.metrics()
        th, out = _in_thread(
            lambda: run_load(
                rig.url,
                rate=rate,
                duration_s=duration_s,
                headers=HEADERS,
                body=BODY,
                timeout_s=10.0,
                connections=connections,
                cpus=rig.load_cpus,
            )
        )
        peak = rss_before
        while th.is_alive():
            peak = max(peak, _rss_mb(rig.app_pid))
            time.sleep(0.2)
        load = _joined(th, out, 120)
        t_end = time.monotonic()
        during = rig.metrics()
        bound_ms = max(10 * quiet_ms, 50.0 + 2 * mock_latency_ms)
        streak, recovered_at = 0, None
        while time.monotonic() - t_end < recovery_limit_s:
            t0 = time.perf_counter()
            status = _post(rig.url, timeout=10)
            ms = (time.perf_counter() - t0) * 1000
            streak = streak + 1 if (status == 200 and ms <= bound_ms) else 0
            if streak >= 10:
                # the last answer's record may still be on its way (ack background: the Rust
                # ledger thread gathers a batch for up to 2 ms first), so give the queue a
                # moment to empty without new requests before calling the next one
                settle = time.monotonic() + 0.5
                while True:
                    h = rig.health()
                    if h["queue"]["depth"] == 0 and h["audit"]["spawned"] == h["audit"]["records"]:
                        recovered_at = time.monotonic()
                        break
                    if time.monotonic() > settle:
                        break
                    time.sleep(0.005)
                if recovered_at is not None:
                    break
        peak = max(peak, _rss_mb(rig.app_pid))
        final = rig.metrics()
        ledger_dir = rig.ledger
        rig.gw.stop()  # graceful: the audit queue drains
        with open(os.path.join(ledger_dir, "audit.wal"), "rb") as f:
            records = len(scan(f.read())[0])
    shed = int(during.get("shed", 0) - before.get("shed", 0))
    # every chat answer but a shed one is audited (the probes and recovery requests included)
    answered = sum(v for k, v in final.items() if k.startswith("chat_"))
    admitted = int(answered - final.get("shed", 0))
    ok_lat = load["meta"].get("latency_ok_us") or {}
    return {
        "scenario": "overload",
        "mode": mode,
        "server": server_label(mode, server),
        "capacity_rps": cap,
        "rate": rate,
        "duration_s": duration_s,
        "max_in_flight": max_in_flight,
        "mock_latency_ms": mock_latency_ms,
        "requests": load["requests"],
        "ok": load["meta"]["ok"],
        "errors": load["errors"],
        "rps": load["rps"],
        "latency_us": load["latency_us"],
        "admitted_latency_us": ok_lat,
        "shed": shed,
        "shed_rate": shed / load["requests"] if load["requests"] else 0.0,
        "admitted_total": admitted,
        "ledger_records": records,
        "admitted_lost": admitted - records,
        "quiet_median_ms": quiet_ms,
        "rss_mb_before": rss_before,
        "rss_peak_mb": peak,
        "recovery_s": (recovered_at - t_end) if recovered_at is not None else None,
    }


# --- chaos -------------------------------------------------------------------------------------
def run_chaos(
    mode: str,
    duration_s: float = 10.0,
    rate: float = 100.0,
    *,
    server: str | None = None,
    error_rate: float = 0.1,
    drop_rate: float = 0.05,
    stall_every: int = 150,
    stall_ms: float = 1500.0,
    upstream_timeout_s: float = 1.0,
) -> dict:
    """Answers must be 200/502/504; the ledger, verified after a graceful stop, holds one record
    per answer. The client timeout (15 s) is far above the gateway's upstream timeout, so a
    client timeout means the gateway hung."""
    from gateway.audit.mmr import MerkleMountainRange
    from gateway.audit.wal import scan
    from harness.infra.native_procs import run_load

    mock = {
        "latency_ms": 1.0,
        "seed": 3,
        "error_status": 500,
        "error_rate": error_rate,
        "drop_rate": drop_rate,
        "stall_every": stall_every,
        "stall_ms": stall_ms,
    }
    with _Rig(mode, server, mock, upstream_timeout_s=upstream_timeout_s) as rig:
        load = run_load(
            rig.url,
            rate=rate,
            duration_s=duration_s,
            headers=HEADERS,
            body=BODY,
            timeout_s=15.0,
            cpus=rig.load_cpus,
        )
        ledger_dir = rig.ledger
        rig.gw.stop()  # graceful: the audit queue drains
        with open(os.path.join(ledger_dir, "audit.wal"), "rb") as f:
            data = f.read()
        payloads, end = scan(data)
        records = [json.loads(p) for p in payloads]
        mmr = MerkleMountainRange()
        mmr.append_many(payloads)
    by_status: dict[int, int] = {}
    for r in records:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    errors = load["errors"]
    answered = load["meta"]["ok"] + errors.get("status_4xx", 0) + errors.get("status_5xx", 0)
    return {
        "scenario": "chaos",
        "mode": mode,
        "server": server_label(mode, server),
        "duration_s": duration_s,
        "rate": rate,
        "mock": mock,
        "upstream_timeout_s": upstream_timeout_s,
        "requests": load["requests"],
        "ok": load["meta"]["ok"],
        "errors": errors,
        "answered": answered,
        "transport_failures": {k: v for k, v in errors.items() if not k.startswith("status_")},
        "audited": len(records),
        "audited_by_status": by_status,
        "wal_torn_bytes": len(data) - end,
        "root": mmr.root(),
        "latency_us": load["latency_us"],
    }


# --- idle / slowloris ----------------------------------------------------------------------------
def run_idle(mode: str, connections: int = 1000, seconds: float = 5.0, *, server: str | None = None) -> dict:
    """Hold `connections` half-sent request heads open (one more header byte every second)
    while a closed loop of good requests runs; report their statuses."""
    from harness.infra.native_procs import run_load

    with _Rig(mode, server, {"latency_ms": 1.0, "seed": 4}) as rig:
        host, port = "127.0.0.1", int(rig.gw.url.rsplit(":", 1)[1])
        socks, refused = [], 0
        for i in range(connections):
            try:
                s = socket.create_connection((host, port), timeout=5)
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nX-Slow-%d: " % i)
                socks.append(s)
            except OSError:
                refused += 1
        stop = threading.Event()

        def trickle():
            while not stop.wait(1.0):
                for s in socks:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass

        tt = threading.Thread(target=trickle, daemon=True)
        tt.start()
        try:
            load = run_load(
                rig.url,
                concurrency=4,
                duration_s=seconds,
                headers=HEADERS,
                body=BODY,
                timeout_s=10.0,
                cpus=rig.load_cpus,
            )
            held = 0
            for s in socks:  # still open (a server that dropped them gave their slot back)
                try:
                    s.setblocking(False)
                    held += s.recv(1, socket.MSG_PEEK) != b""
                except BlockingIOError:
                    held += 1
                except OSError:
                    pass
        finally:
            stop.set()
            tt.join(5)
            for s in socks:
                s.close()
    return {
        "scenario": "idle",
        "mode": mode,
        "server": server_label(mode, server),
        "connections": connections,
        "refused": refused,
        "held_open_at_end": held,
        "good_requests": load["requests"],
        "good_ok": load["meta"]["ok"],
        "good_errors": load["errors"],
        "latency_us": load["latency_us"],
    }


# --- connection peaks ----------------------------------------------------------------------------
PEAK_PHASES = ("few", "few", "many", "few", "many", "many", "few")


def run_peak(
    mode: str, connections: int = 256, seconds: float = 5.0, rate: float = 300.0, *, server: str | None = None
) -> dict:
    """RSS and open fds after each phase of PEAK_PHASES (see the module docstring): `few` is
    open loop at `rate` on a pool of 8 connections, `many` a closed loop of `connections`
    workers, each for `seconds`. Reports the phases, what the first peak added
    (`first_peak_mb`), what the later peaks added on top (`later_peaks_mb`) and what the
    phases of few connections after a peak gave back (`returned_after_peaks_mb`, 0 when the
    allocator keeps it)."""
    from harness.infra.native_procs import run_load

    if connections < 9:
        raise SoakError(f"peak: --connections must be above the 8 of the quiet phases, got {connections}")
    if not (seconds > 0 and rate > 0):
        raise SoakError(f"peak: --duration and --rate must be positive, got {seconds:g} s and {rate:g} req/s")
    phases = []
    with _Rig(mode, server, {"latency_ms": 1.0, "seed": 6}) as rig:
        pid = rig.app_pid
        phases.append(
            {
                "phase": "start",
                "connections": 0,
                "requests": 0,
                "ok": 0,
                "rss_mb": round(_rss_mb(pid), 3),
                "fds": _fds(pid),
            }
        )
        for name in PEAK_PHASES:
            if name == "few":
                load = run_load(
                    rig.url,
                    rate=rate,
                    connections=8,
                    duration_s=seconds,
                    headers=HEADERS,
                    body=BODY,
                    timeout_s=10.0,
                    cpus=rig.load_cpus,
                )
            else:
                load = run_load(
                    rig.url,
                    concurrency=connections,
                    duration_s=seconds,
                    headers=HEADERS,
                    body=BODY,
                    timeout_s=10.0,
                    cpus=rig.load_cpus,
                )
            time.sleep(1.0)  # the connections close; the gateway frees what it frees
            phases.append(
                {
                    "phase": name,
                    "connections": 8 if name == "few" else connections,
                    "requests": load["requests"],
                    "ok": load["meta"]["ok"],
                    "rss_mb": round(_rss_mb(pid), 3),
                    "fds": _fds(pid),
                }
            )
    rss = [p["rss_mb"] for p in phases]
    first = PEAK_PHASES.index("many") + 1  # index in `phases` of the first peak
    returned = sum(
        max(0.0, rss[k - 1] - rss[k])
        for k in range(first + 1, len(rss))
        if phases[k]["phase"] == "few" and phases[k - 1]["phase"] == "many"
    )
    return {
        "scenario": "peak",
        "mode": mode,
        "server": server_label(mode, server),
        "connections": connections,
        "seconds": seconds,
        "rate": rate,
        "phases": phases,
        "first_peak_mb": round(rss[first] - rss[first - 1], 3),
        "later_peaks_mb": round(rss[-1] - rss[first], 3),
        "returned_after_peaks_mb": round(returned, 3),
        "requests": sum(p["requests"] for p in phases),
        "ok": sum(p["ok"] for p in phases),
    }
