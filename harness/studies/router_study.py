"""Router experiments on a mock fleet (notebooks/10_router_and_tracing, docs/router.md).

    profile -> start a fleet (harness/infra/fleet.py) -> a gateway on it (any rung, either router
    twin) -> closed-loop load (the native load generator) -> req/s, p50/p99, gateway CPU per
    request, each deployment's load

Every gateway here runs with every stage and the ledger on, as the other studies do. Pinning:
with two or more cores the gateway gets core 0 and the mocks and the load generator share the
rest (on a bigger machine they spread); with one core nothing is pinned (and the result says
so through `pinned`).
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import psutil

from gateway.serving.launch import GatewayProcess, start_gateway
from harness.infra.fleet import Fleet, start_fleet
from harness.infra.native_procs import run_load, start_mock

API_KEY = "sk-gatewaylab-router-study"
BODY = {"model": "mock", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
HEADERS = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}


def cores() -> tuple[list[int] | None, str | None]:
    """(gateway cores, cores for the mocks and the load generator), or (None, None) on one core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return [cpus[0]], ",".join(map(str, cpus[1:]))


def fleet(options: Iterable[Mapping[str, Any]], seed: int = 0) -> Fleet:
    return start_fleet(options, seed=seed, cpus=cores()[1])


def gateway(
    fl: Fleet,
    rung: str,
    tmp: str,
    router: Mapping[str, Any] | None = None,
    group: bool = True,
    impl: str | None = None,
    **more: Any,
) -> GatewayProcess:
    """A gateway on `fl`: a group of every deployment (`group`) or only the first, with no
    router at all (router None and one deployment: today's one-upstream path)."""
    sub = tempfile.mkdtemp(dir=tmp)
    if group:
        path = fl.write_config(sub, API_KEY, router=router, **more)
    else:
        one = Fleet(fl.mocks[:1], fl.options[:1])
        path = one.write_config(sub, API_KEY, router=router, **more)
    return start_gateway(None, None, mode=rung, impl=impl, config=path, cpus=cores()[0])


def _tree_cpu(pid: int) -> float:
    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def drive(
    gw: GatewayProcess,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.2,
    body: Mapping[str, Any] = BODY,
    fl: Fleet | None = None,
) -> dict:
    """One closed-loop window after a warm-up: req/s (answered 200), latency, error share,
    gateway CPU µs/request; `fl`'s request counts are reset after the warm-up."""
    pid = gw.app_pid
    run_load(
        gw.url + "/v1/chat/completions",
        concurrency=concurrency,
        duration_s=warmup_s,
        method="POST",
        body=dict(body),
        headers=HEADERS,
        cpus=cores()[1],
    )
    if fl is not None:
        fl.reset()
    c0 = _tree_cpu(pid)
    r = run_load(
        gw.url + "/v1/chat/completions",
        concurrency=concurrency,
        duration_s=duration_s,
        method="POST",
        body=dict(body),
        headers=HEADERS,
        cpus=cores()[1],
    )
    cpu_s = _tree_cpu(pid) - c0
    n = max(int(r["requests"]), 1)
    errors = sum(r.get("errors", {}).values())
    return {
        "rps": float(r["rps"]),
        "p50_us": r["latency_us"]["p50"],
        "p99_us": r["latency_us"]["p99"],
        "requests": int(r["requests"]),
        "error_share": errors / n,
        "cpu_us_per_req": cpu_s * 1e6 / n,
        "pinned": cores()[0] is not None,
    }


def router_cost(
    rungs: Iterable[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    repeat: int,
    twin_variants: Mapping[str, Iterable[str]] = {"py": ["router=rust"], "py+rs": ["router=python"]},
    tmp: str | None = None,
) -> list[dict]:
    """Per rung (and per router twin where it can be switched): no router and one deployment
    against a group of four deployments, alternated inside each repeat. The four are the same
    mock (four entries with its URL), so the upstream work is the same and the difference is
    the router's."""
    tmp = tmp or tempfile.mkdtemp(prefix="gatewaylab-router-")
    rows = []
    with fleet([{}]) as one:
        four = Fleet(one.mocks * 4, one.options * 4)  # for its config only: one process, four entries
        cases = []
        for rung in rungs:
            cases.append((rung, None, False))
            cases.append((rung, None, True))
            for v in twin_variants.get(rung, ()):
                cases.append((rung, v, True))
        for rep in range(repeat):
            for rung, impl, group in cases:
                gw = gateway(four if group else one, rung, tmp, group=group, impl=impl)
                try:
                    m = drive(gw, concurrency, duration_s, warmup_s)
                finally:
                    gw.stop()
                twin = (impl or "").split("=")[-1] or ("python" if rung == "py" else "rust")
                rows.append(
                    {
                        "rung": rung,
                        "router": ("group of 4, " + twin + " twin") if group else "off (1 upstream)",
                        "twin": twin if group else "-",
                        "group": group,
                        "repeat": rep,
                        "concurrency": concurrency,
                        **m,
                    }
                )
    return rows


def slow_deployment(
    rung: str,
    strategies: Iterable[str],
    slow_ms: float,
    fast_ms: float,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    repeat: int,
    tmp: str | None = None,
) -> list[dict]:
    """Four deployments, the last one slow: what each strategy sends it and what clients see."""
    tmp = tmp or tempfile.mkdtemp(prefix="gatewaylab-router-")
    rows = []
    with fleet([{"latency_ms": fast_ms}] * 3 + [{"latency_ms": slow_ms}]) as fl:
        for rep in range(repeat):
            for strategy in strategies:
                gw = gateway(fl, rung, tmp, router={"strategy": strategy, "latency_window": 20})
                try:
                    m = drive(gw, concurrency, duration_s, warmup_s, fl=fl)
                    loads = fl.requests()
                finally:
                    gw.stop()
                rows.append(
                    {
                        "rung": rung,
                        "strategy": strategy,
                        "repeat": rep,
                        "slow_share": loads[3] / max(sum(loads), 1),
                        "deployment_loads": loads,
                        **m,
                    }
                )
    return rows


def failing_deployment(
    rung: str,
    rates: Iterable[float],
    retries: Iterable[int],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    repeat: int,
    tmp: str | None = None,
) -> list[dict]:
    """Four deployments, the first answering 500 at `rate`; no cooldown (allowed_fails huge)
    so that what is measured is retries alone: client error share, p99, and the upstream
    load (upstream requests per client request)."""
    tmp = tmp or tempfile.mkdtemp(prefix="gatewaylab-router-")
    rows = []
    for rate in rates:
        with fleet([{"error_status": 500, "error_rate": rate}] + [{}] * 3, seed=int(rate * 1000)) as fl:
            for rep in range(repeat):
                for n in retries:
                    router = {
                        "num_retries": n,
                        "allowed_fails": 1_000_000,
                        "backoff_base_ms": 1,
                        "backoff_max_ms": 8,
                    }
                    gw = gateway(fl, rung, tmp, router=router)
                    try:
                        m = drive(gw, concurrency, duration_s, warmup_s, fl=fl)
                        loads = fl.requests()
                    finally:
                        gw.stop()
                    rows.append(
                        {
                            "rung": rung,
                            "fail_rate": rate,
                            "num_retries": n,
                            "repeat": rep,
                            "upstream_per_request": sum(loads) / max(m["requests"], 1),
                            "deployment_loads": loads,
                            **m,
                        }
                    )
    return rows


def bookkeeping_ns(
    impl: str, strategy: str = "simple-shuffle", deployments: int = 4, n: int = 20000, repeat: int = 5
) -> list[float]:
    """The router twin alone: ns per request for begin + next + report("ok") on a group of
    `deployments`, `n` requests a repeat (the Rust twin through the binding, so this bounds
    what rs-core and rs-server pay natively from above)."""
    from gateway import twins
    from gateway.router import router_config

    cls = twins.load("router", impl)
    out = []
    for _ in range(repeat):
        r = cls(router_config({"strategy": strategy}, {"mock": [{"weight": 1}] * deployments}))
        now = 1
        t = time.perf_counter_ns()
        for _ in range(n):
            att = r.begin("mock", 8, now)
            r.next(att, now)
            r.report(att, "ok", 100, now)
            now += 1000
        out.append((time.perf_counter_ns() - t) / n)
    return out


def _post(url: str, timeout: float = 10.0) -> tuple[int, float]:
    req = urllib.request.Request(url, data=orjson.dumps(BODY), headers=HEADERS, method="POST")
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return status, time.perf_counter() - t


def cooldown_reaction(
    rung: str,
    allowed_fails: int,
    cooldown_ms: int,
    dead_s: float,
    after_s: float,
    pace_s: float = 0.005,
    tmp: str | None = None,
) -> dict:
    """Two deployments under a paced sequential client; deployment 0 is killed (connections
    refused), then started again on its port. Returns when its last attempt failed (it was out:
    cooled down) and when the restarted one served its first request (back: half-open probe
    passed), each in seconds after the kill / the restart, with the client's timeline."""
    tmp = tmp or tempfile.mkdtemp(prefix="gatewaylab-router-")
    # a retry waits 25-50 ms: far above this client's usual latency, so retried requests stand out
    router = {
        "strategy": "simple-shuffle",
        "allowed_fails": allowed_fails,
        "cooldown_ms": cooldown_ms,
        "num_retries": 2,
        "backoff_base_ms": 50,
        "backoff_max_ms": 50,
        "fail_window_ms": 60_000,
    }
    fl = fleet([{}, {}])
    timeline: list[tuple[float, int, float, str]] = []  # (t since kill, status, latency s, phase)
    try:
        gw = gateway(fl, rung, tmp, router=router)
        url = gw.url + "/v1/chat/completions"
        try:
            for _ in range(20):  # warm both deployments
                _post(url)
            port = int(fl.mocks[0].url.rsplit(":", 1)[1])
            fl.mocks[0].stop()
            t_kill = time.perf_counter()
            while time.perf_counter() - t_kill < dead_s:
                status, lat = _post(url)
                timeline.append((time.perf_counter() - t_kill, status, lat, "dead"))
                time.sleep(pace_s)
            back = start_mock(port=port, cpus=cores()[1], seed=99)
            fl.mocks[0] = back
            t_restart = time.perf_counter() - t_kill
            first_back = None
            while time.perf_counter() - t_kill < t_restart + after_s:
                status, lat = _post(url)
                now = time.perf_counter() - t_kill
                timeline.append((now, status, lat, "restarted"))
                if first_back is None and fl.requests()[0] > 0:
                    first_back = now
                time.sleep(pace_s)
        finally:
            gw.stop()
    finally:
        fl.stop()
    # a request that met the dead deployment was retried: it waited out a backoff (>= 25 ms);
    # the allowed_fails-th of them cooled the deployment down (later ones: failed half-open
    # probes, or a request slow for another reason on a loaded machine)
    retried = [t for t, s, lat, ph in timeline if ph == "dead" and lat >= 0.025]
    return {
        "rung": rung,
        "allowed_fails": allowed_fails,
        "cooldown_ms": cooldown_ms,
        "out_after_s": retried[allowed_fails - 1] if len(retried) >= allowed_fails else None,
        "retried_requests": len(retried),
        "failed_probes": max(len(retried) - allowed_fails, 0),
        "client_errors": sum(1 for _, s, _, _ in timeline if s != 200),
        "restart_at_s": t_restart,
        "back_after_restart_s": None if first_back is None else first_back - t_restart,
        "timeline": timeline,
    }
