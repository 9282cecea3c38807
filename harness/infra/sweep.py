"""Concurrency sweeps: profile -> start processes -> drive load -> probe -> store -> report.

    from harness.infra.sweep import run_sweep
    res = run_sweep(modes=("py", "py+rs"), concurrency=range(1, 17), profile="xeon-4c")
    res.dir, res.table            # run folder, cells table (pandas; schema: harness.results.schema.CELLS)

Steps (docs/architecture.md "Hardware profiles", "Measurements"; docs/formats.md "Run folders"):
1. resolve the hardware profile (clamped to this machine, recorded in meta.json);
2. start the native mock, pinned to the mock cores; measure the load generator's capacity
   against it and the direct baseline (load -> mock) at every concurrency;
3. for every repeat, for every (mode x switches x shell): start the gateway pinned to the
   gateway cores (with in-process probes on), warm it up, and for every concurrency measure
   a closed-loop window while the outside probes run (CPU, RSS, py-spy GIL ownership);
4. write tidy Parquet tables after every cell (so an interrupted run is consistent and
   marked `partial: true` in meta.json), raw per-cell JSON artefacts, and the report.

Repeats are the outer loop and configurations alternate inside it, so slow drift of the
machine spreads over every mode instead of biasing one (`upstreams={"fast": {...}, "slow":
{...}}` adds an axis of mock upstreams, one mock each, alternating the same way).
`order="alternate"` also reverses the configurations in every other repeat (A B C, C B A,
A B C, ...), so that no configuration is always measured first or last in its round
(`round_order`; the runner's confirmation of a tripped timing gate uses it,
harness/notebooks.py). A failed cell is recorded with its error (status "failed") and the
sweep goes on; a dead gateway is restarted for the next cell. Every child process is stopped
in `finally`, at exit, and on SIGTERM.

Labels that tell the truth (docs/architecture.md "Measurements"):
- our rungs run `harness.infra.targets.bench_config`: the key has rpm/tpm limits no run reaches, so
  the rate limiter does its work on every request;
- after each cell of a rung the gateway's `gateway_stage_runs_total{stage}` counters (read from
  /metrics before and after the window) must show every stage the cell's label claims
  (`claimed_stages`) ran once per request: at least once per successful answer, at most once
  per request sent; a claimed stage that did not run fails the cell (`stage_check`);
- a cell is ok only if it has successful answers and no error it did not set out to cause
  (`expected_errors`: injected upstream errors, an open-loop ladder's overload); any other
  error fails it, so no gate reads it;
- CPU per request is over successful answers only;
- throughput cells run no probe inside the gateway; with `gil=True` every interpreter rung
  gets view cells of its own (`probes="on"`: the GIL probe thread, the loop ticker, the
  extension's counters and py-spy), labelled `probes=on`; `probes_ran` says what ran.

`out` is the folder under which the timestamped run folder is created (default data/runs
or $GATEWAYLAB_RUNS_DIR).

`results="raw"` (`gatewaylab sweep --raw`) writes the tables as JSON rows instead of Parquet
(harness.results.raw_results) and no report: the lean install on the target hardware has no pandas
(docs/bundle.md); `gatewaylab import RUN_DIR` makes the Parquet tables and the report later.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import math
import os
import signal
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.ladder import RUNGS
from gateway.twins import NO_INTERPRETER_MODES, NOT_APPLICABLE
from harness.infra import probes as outside
from harness.infra.profiles import ResolvedProfile, place_workers, resolve
from harness.results import schema

CI_CONCURRENCY = (1, 2, 4, 8, 16)
CI_DURATION_S = 1.5
CI_WARMUP_S = 0.5
CI_REPEAT = 1
API_KEY = "sk-gatewaylab-sweep"
CHAT_PATH = "/v1/chat/completions"
CHAT_BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Summarise the GIL in one line."}],
}
_PCTS = ("p50", "p90", "p95", "p99", "p999", "max")
# what every cell runs, on every target: nothing inside the target's process
PROBES_OUTSIDE = "cpu and rss of the process tree (/proc, from outside)"


@dataclass
class RunResult:
    dir: Path
    table: Any  # cells DataFrame
    baseline: Any = None
    capacity: Any = None
    partial: bool = False
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.dir / "meta.json").read_text())

    def _repr_markdown_(self) -> str:
        md = self.dir / "report.md"
        return md.read_text() if md.exists() else f"run {self.dir}"


# governance axis: what the gateway does besides forwarding (gateway --stages / --audit)
GOVERNANCE = {
    "on": ("all", "on"),
    "off": ("none", "off"),
    "stages-only": ("all", "off"),
    "audit-only": ("none", "on"),
    "on-unlimited": ("all", "on"),
}

# Every setting's key carries rpm/tpm limits no run reaches (the limiter runs on every request),
# except "on-unlimited": everything on with a key that has no limits, so the limiter looks the
# key up and returns at once. That is how "on" ran before the limiter was made to run; it is a
# setting of its own so that the two can be compared in one interleaved run (and it is labelled
# as not rate limiting).
UNLIMITED_KEY = frozenset({"on-unlimited"})


def key_limits(governance: str) -> dict[str, int]:
    """The rpm/tpm of the benchmark key under a governance setting ({}: none)."""
    from harness.infra.targets import unreachable_limits

    return {} if governance in UNLIMITED_KEY else unreachable_limits()


# peers run as shipped: what that includes is their governance matrix (harness.peers._base.Governance)
PEER_GOVERNANCE = "shipped"


@dataclass(frozen=True)
class Config:
    mode: str  # a rung's mode, or a peer target's name (harness.infra.targets)
    overrides: tuple[tuple[str, str], ...]
    shell: str
    kind: str = "rung"  # "rung" (our gateway) or "peer"
    governance: str = "on"  # rungs: GOVERNANCE; peers: PEER_GOVERNANCE (their matrix says what that is)
    workers: int = 1  # rungs: gateway processes (--workers; 1 = one plain process)
    tracing: str = "off"  # rungs: off | on | sampled:R (gateway --tracing); peers: "off"
    probes: str = "off"  # "on": a GIL/loop view cell (in-gateway probes, py-spy); "off": throughput
    upstream: str = ""  # the mock upstream's name (`upstreams`); "" = the sweep's one upstream
    python: str = ""  # the interpreter axis (--pythons): its label; "" = the harness's own interpreter

    @property
    def switches_label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.overrides)

    @property
    def interpreter(self) -> bool:
        """Our gateway with a Python interpreter to probe (not a peer, not rs-server)."""
        return self.kind == "rung" and self.mode not in NO_INTERPRETER_MODES

    def key(self, c: float, loop: str = "closed") -> str:
        gov = "" if self.governance in ("on", PEER_GOVERNANCE) else f"|gov={self.governance}"
        gov += "" if self.tracing == "off" else f"|trace={self.tracing}"
        w = "" if self.workers == 1 else f"|w={self.workers}"
        w += "" if self.probes == "off" else f"|probes={self.probes}"
        w += f"|up={self.upstream}" if self.upstream else ""
        w += f"|py={self.python}" if self.python else ""
        return f"{self.mode}|{self.switches_label}|{self.shell}{gov}{w}|" + (
            f"rate={c:g}" if loop == "open" else f"c={c}"
        )

    @property
    def stem(self) -> str:
        """File-name form of the configuration (artefacts, ledgers)."""
        gov = "" if self.governance in ("on", PEER_GOVERNANCE) else f"-gov{self.governance}"
        gov += "" if self.tracing == "off" else f"-trace{self.tracing.replace(':', '')}"
        w = "" if self.workers == 1 else f"-w{self.workers}"
        w += "" if self.probes == "off" else f"-probes{self.probes}"
        w += f"-up{self.upstream}" if self.upstream else ""
        if self.python:
            from harness.infra.interpreters import slug

            w += f"-{slug(self.python)}"
        return f"{self.mode}-{self.switches_label or 'none'}-{self.shell}{gov}{w}".replace("+", "p")

    @property
    def stages(self) -> str:
        """The rung's --stages (GOVERNANCE)."""
        return GOVERNANCE[self.governance][0]

    @property
    def audit(self) -> bool:
        return GOVERNANCE[self.governance][1] == "on"

    @property
    def limited(self) -> bool:
        """Whether the benchmark key carries rpm/tpm limits (`key_limits`)."""
        return bool(key_limits(self.governance))


def parse_concurrency(spec: str | int | Iterable[int]) -> list[int]:
    """`"1..16"`, `"1,2,4,8,16"`, `"1..4,8,16"`, an int or an iterable -> sorted unique ints."""
    from gateway.errors import ConfigError

    if isinstance(spec, int):
        vals = [spec]
    elif isinstance(spec, str):
        vals = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if ".." in part:
                    a, b = part.split("..", 1)
                    lo, hi = int(a), int(b)
                    if hi < lo:
                        raise ValueError
                    vals += range(lo, hi + 1)
                else:
                    vals.append(int(part))
            except ValueError:
                raise ConfigError(f"bad concurrency {spec!r}: expected e.g. 1..16 or 1,2,4,8,16") from None
    else:
        vals = [int(v) for v in spec]
    if not vals or min(vals) < 1:
        raise ConfigError(f"concurrency {spec!r}: need integers >= 1")
    return sorted(set(vals))


def parse_rates(spec: str | float | Iterable[float]) -> list[float]:
    """`"250,500,1000"`, a number or an iterable -> sorted unique positive rates (req/s)."""
    from gateway.errors import ConfigError

    items = (
        spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, (int, float)) else list(spec)
    )
    try:
        vals = [float(str(v).strip()) for v in items if str(v).strip()]
    except ValueError:
        raise ConfigError(f"bad rates {spec!r}: expected e.g. 250,500,1000") from None
    if not vals or min(vals) <= 0 or any(math.isinf(v) or math.isnan(v) for v in vals):
        raise ConfigError(f"rates {spec!r}: need finite numbers > 0")
    return sorted(set(vals))


def parse_workers(spec: str | int | Iterable[int]) -> list[int]:
    """`"1,2,4"`, an int or an iterable -> sorted unique worker counts (>= 1)."""
    from gateway.errors import ConfigError

    try:
        vals = parse_concurrency(spec)
    except ConfigError:
        raise ConfigError(f"workers {spec!r}: need integers >= 1, e.g. 1,2,4") from None
    return vals


def _configs(
    modes,
    switches,
    shells,
    targets=None,
    governance=("on",),
    workers=(1,),
    tracing=("off",),
    gil=False,
    upstreams=("",),
    pythons=("",),
) -> list[Config]:
    """Configs for the rungs (mode x switches x shell x governance x workers x tracing, and x
    pythons for the rungs with an interpreter) and the peers, in target order, each once per
    upstream (adjacent, so they alternate); a switch set that gives a mode the same twins as an
    earlier one is left out; with `gil`, every interpreter rung's throughput config is followed
    by its view config (probes on). Tracing labels are normalised (`sampled:.10` -> `sampled:0.1`)."""
    from gateway.errors import ConfigError
    from gateway.twins import PER_COMPONENT_MODES, Switches, parse_impl
    from harness.infra.targets import kind, target

    shells = list(shells)
    for g in governance:
        if g not in GOVERNANCE:
            raise ConfigError(f"governance {g!r}: expected one of {', '.join(GOVERNANCE)}")
    from gateway.tracing import parse_mode

    tracing = [parse_mode(t).label() for t in tracing]
    sw_list = [None] if not switches else list(switches)
    out = []
    for mode in targets or modes:
        if targets and kind(target(mode)) == "peer":
            out += [Config(mode, (), "-", "peer", PEER_GOVERNANCE, upstream=u) for u in upstreams]
            continue
        resolved: set[frozenset] = set()
        for sw in sw_list:
            if sw and mode not in PER_COMPONENT_MODES:
                continue  # per-component switches apply to py and py+rs only (rs-core/rs-server: all Rust)
            ov = parse_impl(sw) if sw else {}
            same = frozenset(Switches(mode, ov).as_dict().items())  # validates
            if same in resolved:
                continue  # the same twins as a set before it on this mode (py+rs with waf=rust is py+rs)
            resolved.add(same)
            # rs-server is its own server: no ASGI shell applies (one config, labelled "-" like a peer's)
            for shell in shells if RUNGS[mode].shells else ("-",):
                for g in governance:
                    for w in workers:
                        for t in tracing:
                            for py in ("",) if mode in NO_INTERPRETER_MODES else pythons:
                                for u in upstreams:
                                    probes = (
                                        ("off", "on")
                                        if gil and mode not in NO_INTERPRETER_MODES
                                        else ("off",)
                                    )
                                    for pr in probes:
                                        out.append(
                                            Config(
                                                mode,
                                                tuple(sorted(ov.items())),
                                                shell,
                                                governance=g,
                                                workers=w,
                                                tracing=t,
                                                probes=pr,
                                                upstream=u,
                                                python=py,
                                            )
                                        )
    return out


# the order of the configurations inside each repeat (see the module docstring)
ORDERS = ("fixed", "alternate")


def round_order(configs: Sequence[Config], rep: int, order: str = "fixed") -> list[Config]:
    """The configurations in the order repeat `rep` measures them."""
    if order not in ORDERS:
        from gateway.errors import ConfigError

        raise ConfigError(f"order {order!r}: expected one of {', '.join(ORDERS)}")
    return list(configs)[::-1] if order == "alternate" and rep % 2 == 1 else list(configs)


def _pct(lat: Mapping[str, Any] | None, p: str) -> float | None:
    if not lat:
        return None
    v = lat.get(p)
    return None if v is None else float(v)


def _get_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (127.0.0.1 only)
        return json.loads(r.read())


# --- what a cell set out to cause, and what its label claims ran ----------------------------

# the load generator's error kinds an overloaded target produces (an open-loop ladder's subject)
OVERLOAD_KINDS = frozenset(("timeout", "connect", "reset", "status_5xx"))


@dataclass(frozen=True)
class ExpectedErrors:
    """The errors a cell set out to cause: their kinds (the load generator's: status_4xx,
    status_5xx, status_other, timeout, connect, reset, protocol, io) and the largest share of
    finished requests they are expected to take (`share` None: no bound here, e.g. an open-loop
    ladder, whose overload errors its `sustained` verdict judges)."""

    kinds: frozenset[str] = frozenset()
    share: float | None = 0.0
    why: str = "none"


def expected_errors(upstream: Mapping[str, Any], loop: str) -> ExpectedErrors:
    """What a cell with this mock upstream (`start_mock` options) and loop sets out to cause:
    nothing, unless the mock injects errors (error_status/error_rate: that status, a 5xx
    becoming the gateway's 502; drop_rate: 502s; stalls: 504s and timeouts) or the loop is open."""
    kinds: set[str] = set()
    share: float | None = 0.0
    why = []
    status, rate = upstream.get("error_status"), upstream.get("error_rate")
    if status is not None and rate is None:
        rate = 1.0  # the mock's rule: a status alone answers every request with it
    if rate:
        status = int(status or 500)
        kinds.add("status_4xx" if 400 <= status < 500 else "status_5xx")
        share += float(rate)
        why.append(f"the mock answers {status} to {float(rate):.0%} of requests")
    if upstream.get("drop_rate"):
        kinds.add("status_5xx")
        share += float(upstream["drop_rate"])
        why.append(f"the mock drops {float(upstream['drop_rate']):.0%} of connections (502)")
    if upstream.get("stall_every") and upstream.get("stall_ms"):
        kinds |= {"status_5xx", "timeout"}
        share = None
        why.append(f"the mock stalls every {upstream['stall_every']}th request for {upstream['stall_ms']} ms")
    if loop == "open":
        kinds |= OVERLOAD_KINDS
        share = None
        why.append("an open-loop ladder looks for overload (judged by `sustained`)")
    return ExpectedErrors(frozenset(kinds), share, "; ".join(why) or "none")


def cell_verdict(
    ok_n: int,
    finished: int,
    errors_by_kind: Mapping[str, int],
    expected: ExpectedErrors,
    statuses: Mapping[str, int] | None = None,
) -> tuple[str, str]:
    """(status, error) of a measured cell: "ok" only with successful answers and no error it did
    not set out to cause (other kinds, or more than the expected share allows by chance);
    `statuses`: the gateway's own answers by status in the window, named in the reason."""
    errs = {k: int(n) for k, n in errors_by_kind.items() if n}
    total = sum(errs.values())
    seen = ""
    if statuses:
        bad = {k: n for k, n in sorted(statuses.items()) if n and not k.startswith("2")}
        seen = f"; the gateway answered {', '.join(f'{k} x{n}' for k, n in bad.items())}" if bad else ""
    if ok_n <= 0:
        return "failed", f"no successful requests ({total} errors: {errs}{seen})"
    unexpected = {k: n for k, n in errs.items() if k not in expected.kinds}
    if unexpected:
        return "failed", (
            f"unexpected errors: {sum(unexpected.values())} of {finished} requests "
            f"({', '.join(f'{k}: {n}' for k, n in unexpected.items())}{seen}); "
            f"the cell set out to cause: {expected.why}"
        )
    if expected.share is not None and finished and total:
        p = expected.share
        bound = p + 5 * math.sqrt(max(p * (1 - p), 0.0) / finished) + 2 / finished
        if total / finished > bound:
            return "failed", (
                f"errors on {total / finished:.2%} of {finished} requests, more than the "
                f"{p:.1%} the cell set out to cause ({expected.why}{seen})"
            )
    return "ok", ""


def claimed_stages(cfg: Config, stream: bool) -> tuple[str, ...]:
    """The stages a rung cell's label claims ran for every request (gateway_stage_runs_total
    names): the guard, the --stages that are on (parse and route whenever a stage needs the
    parsed body), forward, respond (whole answers; a stream is relayed), audit (--audit on);
    ratelimit only when the key has limits (a key without them gives it no bucket to consult)."""
    if cfg.kind == "peer":
        return ()
    from gateway.pipeline import parse_stages

    on = parse_stages(cfg.stages)
    parse = bool(on & {"parse", "waf", "ratelimit", "adapter"})
    out = ["guard"]
    out += ["auth"] if "auth" in on else []
    out += ["parse"] if parse else []
    out += ["waf"] if "waf" in on else []
    out += ["route"] if parse else []
    # a key without limits (`on-unlimited`) gives the limiter no bucket to consult: not claimed
    out += ["ratelimit"] if "ratelimit" in on and cfg.limited else []
    out += ["adapter"] if "adapter" in on else []
    out += ["forward"] + ([] if stream else ["respond"]) + (["audit"] if cfg.audit else [])
    return tuple(out)


def check_stages(claimed: Sequence[str], runs: Mapping[str, int], ok_n: int, sent: int) -> tuple[bool, str]:
    """Whether every claimed stage ran once per request in the window: at least once per
    successful answer and at most once per request sent. (ok, "stage=n, ..." or the reasons)."""
    bad = []
    for st in claimed:
        n = runs.get(st)
        if n is None:
            bad.append(f"{st}: no gateway_stage_runs_total{{stage={st!r}}} on /metrics")
        elif n < ok_n:
            bad.append(f"{st} ran {n} times for {ok_n} successful answers")
        elif n > sent:
            bad.append(f"{st} ran {n} times for {sent} requests sent")
    if bad:
        return False, "claimed stages that did not run once per request: " + "; ".join(bad)
    return True, ", ".join(f"{st}={runs[st]}" for st in claimed)


def read_counters(url: str) -> dict[str, Any]:
    """The gateway's counters the cell checks, from /metrics: {"stage_runs": {stage: n},
    "statuses": {status: n} (chat answers), "queue_depth": background audit queue}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:  # noqa: S310 (127.0.0.1 only)
        text = r.read().decode()
    runs: dict[str, int] = {}
    statuses: dict[str, int] = {}
    depth = None
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == "gateway_stage_runs_total":
                runs[smp.labels["stage"]] = int(smp.value)
            elif smp.name == "gateway_requests_total" and smp.labels.get("route") == CHAT_PATH:
                statuses[smp.labels["status"]] = int(smp.value)
            elif smp.name == "gateway_background_queue_depth":
                depth = smp.value
    return {"stage_runs": runs, "statuses": statuses, "queue_depth": depth}


def _diff(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: int(v) - int(before.get(k, 0)) for k, v in after.items()}


class _Interrupted(Exception):
    pass


def _utc() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Sweep:
    """One sweep; `run_sweep` is the convenience wrapper. Holds the live processes."""

    def __init__(
        self,
        *,
        modes,
        switches,
        shells,
        concurrency,
        profile,
        duration_s,
        warmup_s,
        repeat,
        gil,
        flamegraph,
        scalene,
        upstream,
        out,
        progress,
        on_cell,
        name,
        server,
        env,
        pyspy_rate,
        capacity,
        load_opts,
        report,
        report_images=True,
        targets=None,
        rates=None,
        p99_cap_ms=50.0,
        max_error_share=0.01,
        stream=False,
        governance=("on",),
        results="parquet",
        workers=(1,),
        tracing=("off",),
        order="fixed",
        upstreams=None,
        pythons=None,
        cpu_latency_us=None,
    ):
        from harness.infra.targets import RUNGS, parse_targets, target
        from harness.results.raw_results import RESULTS

        if results not in RESULTS:
            from gateway.errors import ConfigError

            raise ConfigError(f"results {results!r}: expected one of {', '.join(RESULTS)}")
        self.results = results

        self.targets = parse_targets(targets) if targets else None
        self.modes = tuple(t for t in self.targets if t in RUNGS) if self.targets else tuple(modes)
        self.workers = parse_workers(workers)
        if upstreams is not None and upstream is not None:
            from gateway.errors import ConfigError

            raise ConfigError("give either upstream (one mock) or upstreams (named mocks), not both")
        # name -> the mock's options; "" is the one upstream of a sweep without `upstreams`
        self.upstreams: dict[str, dict[str, Any]] = (
            {str(k): dict(v) for k, v in upstreams.items()} if upstreams else {"": dict(upstream or {})}
        )
        from harness.infra import interpreters

        # the interpreter axis: resolved here (quick), its venvs built once the configs are valid
        self.home_python = interpreters.running_label()
        self.python_found, self.python_interps = interpreters.resolve_spec(pythons) if pythons else (None, [])
        if self.python_interps and (scalene or any(t != "off" for t in tracing)):
            from gateway.errors import ConfigError

            raise ConfigError(
                "--pythons with --scalene or --tracing: the venvs hold the runtime dependencies only "
                "(scalene and OpenTelemetry are the analysis extra's, in the harness's own venv)"
            )
        self.configs = _configs(
            self.modes,
            switches,
            shells,
            self.targets,
            governance,
            self.workers,
            tracing,
            gil,
            tuple(self.upstreams),
            tuple(i.label for i in self.python_interps) or ("",),
        )
        once = sorted({c.mode for c in self.configs if not c.interpreter})
        if self.python_interps and once:
            print(f"--pythons: {', '.join(once)}: {interpreters.NOT_ON_AXIS}")
        self.python_envs = {e.label: e for e in interpreters.prepare_all(self.python_interps)}
        self._held = contextlib.ExitStack()  # shared locks: no reinstall under a running gateway
        for e in self.python_envs.values():
            self._held.enter_context(e.hold())
        self.otlp = None  # harness.infra.otlp.OtlpReceiver, started for the first traced config
        self.concurrency = parse_concurrency(concurrency)
        self.rates = parse_rates(rates) if rates is not None else None
        self.loop = "open" if self.rates else "closed"
        self.points: list[float] = list(self.rates) if self.rates else list(self.concurrency)
        self.p99_cap_us, self.max_error_share = float(p99_cap_ms) * 1000.0, float(max_error_share)
        self.stream = bool(stream)
        self.routes = sorted({target(c.mode).route if c.kind == "peer" else "chat" for c in self.configs})
        self.profile: ResolvedProfile = resolve(profile)
        self.placements = {w: place_workers(self.profile, w) for w in self.workers}
        self.duration_s, self.warmup_s, self.repeat = float(duration_s), float(warmup_s), int(repeat)
        self.order = order
        self.cpu_latency_us = cpu_latency_us
        round_order(self.configs, 0, order)  # validates
        self.gil, self.flamegraph, self.scalene = gil, flamegraph, scalene
        if flamegraph:  # said once here; each cell's probes_missing says it again
            from harness.infra.targets import PERF, flamegraph_tools
            from harness.profilers.perf import missing_tools

            why = missing_tools() if any(PERF in flamegraph_tools(c.mode) for c in self.configs) else None
            if why:
                print(f"--flamegraph: {why}; the perf flamegraphs will be missing")
        self.upstream = self.upstreams[next(iter(self.upstreams))]  # the first (the only one, usually)
        self.out, self.progress, self.on_cell, self.name = out, progress, on_cell, name
        self.server, self.env = server, dict(env or {})
        self.pyspy_rate, self.do_capacity = pyspy_rate, capacity
        self.load_opts = dict(load_opts or {})
        self.do_report = report
        self.report_images = report_images
        self.rows: list[dict] = []
        self.peer_checks: dict[str, dict[str, Any]] = {}
        self.base_rows: list[dict] = []
        self.cap_rows: list[dict] = []
        self.thread_rows: list[dict] = []
        self.entry_rows: list[dict] = []
        self.worker_rows: list[dict] = []
        self.mock = None  # the first upstream's mock (capacity, meta); every one: self.mocks
        self.mocks: dict[str, Any] = {}
        self.gateway = None
        self.run = None
        self.bar = None

    # ------------------------------------------------------------------ params / run folder
    def parameters(self) -> dict[str, Any]:
        return {
            "modes": list(self.modes),
            "configs": [
                {
                    "mode": c.mode,
                    "switches": c.switches_label,
                    "shell": c.shell,
                    "governance": c.governance,
                    "workers": c.workers,
                    "tracing": c.tracing,
                    "probes": c.probes,
                    "upstream": c.upstream,
                    "python": c.python,
                }
                for c in self.configs
            ],
            "pythons": list(self.python_envs),
            "workers": self.workers,
            "worker_placement": {
                str(w): {"cpus": p.cpus, "satisfied": p.satisfied, "notes": p.notes}
                for w, p in self.placements.items()
            },
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "targets": self.targets,
            "rates": self.rates,
            "p99_cap_ms": self.p99_cap_us / 1000.0,
            "max_error_share": self.max_error_share,
            "stream": self.stream,
            "repeat": self.repeat,
            "order": self.order,
            "cpu_latency_us": self.cpu_latency_us,
            "gil": self.gil,
            "flamegraph": self.flamegraph,
            "scalene": self.scalene,
            "upstream": self.upstream,
            "upstreams": self.upstreams if len(self.upstreams) > 1 or "" not in self.upstreams else None,
            "key_limits": {g: key_limits(g) for g in dict.fromkeys(c.governance for c in self.configs)},
            "probes": self.probes_description(),
            "server": self.server,
            "pyspy_rate": self.pyspy_rate,
            "loop": self.loop,
            "env": {k: v for k, v in self.env.items()},
            "load_opts": self.load_opts,
        }

    def probes_description(self) -> dict[str, str]:
        """Which probes run in which cells (meta.json `parameters.probes`; per cell: `probes_ran`)."""
        return {
            "throughput cells (probes=off), every target": PROBES_OUTSIDE,
            "view cells (probes=on), interpreter rungs only, with gil=True": self._probes_inside(),
        }

    def _probes_inside(self) -> str:
        env = {**os.environ, **self.env}
        gil_ms = env.get("GATEWAYLAB_PROBE_INTERVAL_MS") or "2"
        lag_ms = env.get("GATEWAYLAB_LAG_INTERVAL_MS") or "10"
        return (
            f"{PROBES_OUTSIDE}; in the gateway: GIL probe thread every {gil_ms} ms, event-loop ticker "
            f"every {lag_ms} ms, the extension's GIL counters; py-spy --gil at {self.pyspy_rate} Hz"
        )

    def _open_run(self):
        from harness.results.runs import create_run

        p = self.profile
        self.run = create_run(
            self.name,
            parameters=self.parameters(),
            root=self.out,
            shell=",".join(sorted({c.shell for c in self.configs})),
            hardware_profile=p.name,
            profile_satisfied=p.profile_satisfied,
            cores_used=len(set(p.gateway_cpus) | set(p.mock_cpus) | set(p.load_cpus)),
            extra={
                "kind": "sweep",
                "partial": True,
                "profile": p.to_dict(),
                "schema_version": schema.SCHEMA_VERSION,
                "measurement_labels": schema.LABELS,
                "loop": self.loop,
                "peers": self._peer_versions(),
                "results": self.results,
                "interpreters": self._python_axis(),
            },
        )
        return self.run

    def _python_axis(self) -> dict[str, Any]:
        """meta.json: the interpreter the harness runs gateways with, and the axis (--pythons):
        each venv, what discovery found, and the targets measured once (no interpreter)."""
        from harness.infra.interpreters import NOT_ON_AXIS

        once = sorted({c.mode for c in self.configs if not c.interpreter})
        return {
            "home": self.home_python,
            "axis": {label: e.to_dict() for label, e in self.python_envs.items()},
            "discovery": self.python_found.to_dict() if self.python_found is not None else None,
            "not_on_axis": {m: NOT_ON_AXIS for m in once} if self.python_envs else {},
        }

    def _peer_versions(self) -> dict[str, Any]:
        """{peer: version} from the install manifest, for the peers this sweep measures."""
        from harness.infra.targets import target
        from harness.peers import installed_version

        peers = sorted({target(c.mode).peer for c in self.configs if c.kind == "peer"})
        return {p: installed_version(p) for p in peers}

    def _flush(self) -> None:
        run_id = self.run.name
        for rows in (
            self.rows,
            self.base_rows,
            self.cap_rows,
            self.thread_rows,
            self.entry_rows,
            self.worker_rows,
        ):
            for r in rows:
                r["run_id"] = run_id
        if self.results == "raw":
            from harness.results.raw_results import write_raw_tables

            write_raw_tables(
                self.run,
                {
                    "cells": self.rows,
                    "baseline": self.base_rows,
                    "capacity": self.cap_rows,
                    "gil_threads": self.thread_rows,
                    "gil_entries": self.entry_rows,
                    "workers": self.worker_rows,
                },
            )
            return
        self.run.write_table("cells", schema.frame("cells", self.rows))
        self.run.write_table("baseline", schema.frame("baseline", self.base_rows))
        self.run.write_table("capacity", schema.frame("capacity", self.cap_rows))
        self.run.write_table("gil_threads", schema.frame("gil_threads", self.thread_rows))
        self.run.write_table("gil_entries", schema.frame("gil_entries", self.entry_rows))
        self.run.write_table("workers", schema.frame("workers", self.worker_rows))

    # ------------------------------------------------------------------ processes
    def _shape(self, cfg: Config | None, route: str = "chat"):
        """The request a target gets (a peer's own shape; ours: chat completions with our key)."""
        from harness.infra.targets import target
        from harness.peers._base import MESSAGES_BODY, ROUTE_PATHS, RequestShape

        if cfg is not None and cfg.kind == "peer":
            shape = target(cfg.mode).request(API_KEY, self.mocks[cfg.upstream].url)
        else:
            body = CHAT_BODY if route == "chat" else MESSAGES_BODY
            shape = RequestShape(
                ROUTE_PATHS[route],
                {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
                body,
                route,
            )
        return shape.with_stream() if self.stream else shape

    def _load(
        self, base_url: str, point: float, duration_s: float, shape=None, loop: str | None = None, **extra
    ) -> dict[str, Any]:
        """Load against base_url + the shape's path: closed loop at concurrency `point`, or open
        loop at `point` req/s when the sweep has rates."""
        from harness.infra.native_procs import run_load

        shape = shape or self._shape(None)
        opts = {"body": dict(shape.body), "headers": dict(shape.headers), **self.load_opts, **extra}
        if self.stream:
            opts["stream"] = True
        how = {"rate": float(point)} if (loop or self.loop) == "open" else {"concurrency": int(point)}
        r = run_load(base_url + shape.path, duration_s=duration_s, cpus=self.profile.load_cpus, **how, **opts)
        errs = r.get("errors")
        if isinstance(errs, Mapping):
            r["errors_by_kind"] = dict(errs)
            r["errors"] = int(sum(errs.values()))
        return r

    def _start_mock(self):
        """One mock per upstream, all on the mock cores (only the one a cell uses is busy)."""
        from harness.infra.native_procs import start_mock

        for name, opts in self.upstreams.items():
            self.mocks[name] = start_mock(port=0, cpus=self.profile.mock_cpus, **opts)
        self.mock = self.mocks[next(iter(self.upstreams))]
        return self.mock

    def _start_gateway(self, cfg: Config, wrapper: list[str] | None = None):
        from gateway.serving.launch import start_gateway
        from harness.infra.targets import write_bench_config

        if cfg.kind == "peer":
            return self._start_peer(cfg)
        # in-gateway probes only in a view cell: throughput cells carry none (like rs-server, peers)
        env = {**self.env, "GATEWAYLAB_PROBES": "1" if cfg.probes == "on" else "0"}
        kw: dict[str, Any] = {}
        if wrapper:
            kw["wrapper"] = wrapper
        ledger = self.run.artefact(f"ledgers/{cfg.stem}")
        ledger.mkdir(parents=True, exist_ok=True)
        # the benchmark config: the key's limits far above the load, so the rate limiter runs
        # (none under "on-unlimited": `key_limits`)
        config = write_bench_config(
            self.run.artefact(f"configs/{cfg.stem}.yaml"),
            self.mocks[cfg.upstream].url,
            API_KEY,
            ledger,
            limits=key_limits(cfg.governance),
        )
        stages, audit = GOVERNANCE[cfg.governance]
        if cfg.workers > 1:  # a unit of workers, one per placed core (docs/workers.md)
            kw.update(workers=cfg.workers, worker_cpus=self.placements[cfg.workers].cpus)
            if cfg.mode in NO_INTERPRETER_MODES:
                kw["threads"] = 1  # N single-threaded processes (rs-server --threads N is one process)
        else:
            kw["cpus"] = self.profile.gateway_cpus
        if cfg.python:  # the interpreter axis: that venv's interpreter and install
            venv = self.python_envs[cfg.python]
            kw["python"] = str(venv.python)
            env = {**env, **{k: v for k, v in venv.env().items() if k.startswith("GATEWAYLAB_")}}
        if cfg.tracing != "off":  # spans need a receiver: the harness's own (counts, keeps nothing)
            if self.otlp is None:
                from harness.infra.otlp import OtlpReceiver

                self.otlp = OtlpReceiver(keep=False)
            kw.update(tracing=cfg.tracing, tracing_endpoint=self.otlp.endpoint)
        self.gateway = start_gateway(
            None,
            None,
            config=config,
            mode=cfg.mode,
            impl=dict(cfg.overrides) or None,
            # the ASGI shell and server are the Python rungs' (rs-server serves itself)
            **({"shell": cfg.shell, "server": self.server} if RUNGS[cfg.mode].shells else {}),
            ledger_dir=str(ledger),
            env=env,
            stages=stages,
            audit=audit,
            **kw,
        )
        return self.gateway

    def _start_peer(self, cfg: Config):
        """Start a peer target pinned to the gateway cores and check one real answer (a peer
        that answers wrongly, e.g. LiteLLM's Rust bridge not serving, fails to start)."""
        from harness.infra.targets import target
        from harness.peers.installer import PeerError

        t = target(cfg.mode)
        self.gateway = t.start(
            self.mocks[cfg.upstream].url,
            self.profile.gateway_cpus,
            workdir=self.run.artefact(f"peers/{cfg.stem}"),
            profiling=self.flamegraph,  # a JIT peer writes the map perf names its code by
        )
        check = t.probe(self.gateway, API_KEY, stream=self.stream)
        self.peer_checks[cfg.mode] = check["seen"]
        if check["problem"]:
            self._stop_gateway()
            raise PeerError(f"{cfg.mode}: {check['problem']}")
        return self.gateway

    def _stop_gateway(self) -> None:
        g, self.gateway = self.gateway, None
        if g is not None:
            with contextlib.suppress(Exception):
                g.stop()

    def cleanup(self) -> None:
        self._stop_gateway()
        rx, self.otlp = self.otlp, None
        if rx is not None:
            rx.close()
        mocks, self.mocks, self.mock = list(self.mocks.values()), {}, None
        for m in mocks:
            with contextlib.suppress(Exception):
                m.stop()
        outside.cleanup_all()
        self._held.close()

    def _gateway_alive(self) -> bool:
        g = self.gateway
        if g is None:
            return False
        proc = getattr(g, "proc", None) or getattr(g, "process", None)
        if proc is not None and hasattr(proc, "poll"):
            return proc.poll() is None
        try:
            os.kill(g.pid, 0)
            return True
        except OSError:
            return False

    def _settled_counters(
        self, url: str, claimed: Sequence[str], since: Mapping[str, Any], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """`read_counters` once the background audit has caught up with the requests since
        `since` (every request past the guard has its record; the audit is written after the
        answer), or after `timeout_s`: the window's counts are then what they are."""
        cur = read_counters(url)
        if "audit" not in claimed:
            return cur
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            d = _diff(cur["stage_runs"], since["stage_runs"])
            if d.get("audit", 0) >= d.get("guard", 0):
                break
            time.sleep(0.05)
            cur = read_counters(url)
        return cur

    def _probes(self, reset: bool, every_worker: bool = False) -> dict[str, Any]:
        q = "&".join(x for x, on in (("reset=1", reset), ("workers=all", every_worker)) if on)
        return _get_json(f"{self.gateway.url}/debug/probes" + (f"?{q}" if q else ""))

    def _app_pid(self) -> int:
        """The process running the app (granian runs it in a worker child of `gateway.pid`)."""
        g = self.gateway
        try:
            return int(g.app_pid)
        except Exception:  # noqa: BLE001 - older launchers: the server process is the app
            return int(g.pid)

    # ------------------------------------------------------------------ steps
    def _step(self, desc: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(desc, refresh=False)

    def _advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def measure_capacity(self) -> None:
        c = max(64, 4 * max(self.concurrency))
        row: dict[str, Any] = {"concurrency": c}
        try:
            r = self._load(self.mock.url, c, min(max(self.duration_s, 1.0), 3.0), loop="closed")
            self.run.write_json("raw/capacity.json", r)
            row.update(
                status="ok",
                error="",
                rps=r.get("rps"),
                lat_p50_us=_pct(r.get("latency_us"), "p50"),
                lat_p99_us=_pct(r.get("latency_us"), "p99"),
            )
        except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
            row.update(status="failed", error=f"{type(e).__name__}: {e}")
        self.cap_rows.append(row)

    def _point_fields(self, point: float) -> dict[str, Any]:
        if self.loop == "open":
            return {"concurrency": 0, "rate": float(point)}
        return {"concurrency": int(point), "rate": None}

    def measure_baseline(self, rep: int, c: float, route: str = "chat", upstream: str = "") -> None:
        up = f" up={upstream}" if upstream else ""
        self._step(f"direct {route}{up} {'rate' if self.loop == 'open' else 'c'}={c:g} r={rep}")
        row: dict[str, Any] = {
            **self._point_fields(c),
            "repeat": rep,
            "route": route,
            "upstream": upstream,
            "loop": self.loop,
        }
        shape = self._shape(None, route)
        url = self.mocks[upstream].url
        try:
            if self.warmup_s > 0:
                self._load(url, c, self.warmup_s, shape)
            r = self._load(url, c, self.duration_s, shape)
            tag = f"-up{upstream}" if upstream else ""
            self.run.write_json(f"raw/baseline/{route}{tag}-{self.loop}{c:g}-r{rep}.json", r)
            row.update(
                status="ok",
                error="",
                duration_s=r.get("duration_s"),
                requests=r.get("requests"),
                errors=r.get("errors"),
                rps=r.get("rps"),
                **{f"lat_{p}_us": _pct(r.get("latency_us"), p) for p in _PCTS},
                **{f"ttfb_{p}_us": _pct(r.get("ttfb_us"), p) for p in ("p50", "p99")},
            )
        except Exception as e:  # noqa: BLE001
            row.update(status="failed", error=f"{type(e).__name__}: {e}")
        self.base_rows.append(row)
        self._advance()

    def _baseline_for(self, c: float, route: str = "chat", upstream: str = "") -> dict[str, float | None]:
        import statistics

        key = "rate" if self.loop == "open" else "concurrency"
        ok = [
            r
            for r in self.base_rows
            if r[key] == c
            and r.get("route", "chat") == route
            and r.get("upstream", "") == upstream
            and r.get("status") == "ok"
        ]
        out: dict[str, float | None] = {}
        for p in _PCTS:
            vals = [r[f"lat_{p}_us"] for r in ok if r.get(f"lat_{p}_us") is not None]
            out[p] = statistics.median(vals) if vals else None
        for p in ("p50", "p99"):
            vals = [r[f"ttfb_{p}_us"] for r in ok if r.get(f"ttfb_{p}_us") is not None]
            out[f"ttfb_{p}"] = statistics.median(vals) if vals else None
        rps = [r["rps"] for r in ok if r.get("rps") is not None]
        out["rps"] = statistics.median(rps) if rps else None
        return out

    def _row_head(self, cfg: Config, rep: int, c: float) -> dict[str, Any]:
        from gateway.twins import Switches
        from harness.infra.targets import target
        from harness.peers import installed_version

        peer = cfg.kind == "peer"
        impl = (
            ""
            if peer
            else ",".join(f"{k}={v}" for k, v in Switches(cfg.mode, dict(cfg.overrides)).as_dict().items())
        )
        t = target(cfg.mode) if peer else None
        placement = self.placements.get(cfg.workers) if not peer else None
        clamp = (
            []
            if self.profile.profile_satisfied
            else [f"profile {self.profile.name}: " + "; ".join(self.profile.notes)]
        )
        if placement is not None and cfg.workers > 1:
            clamp += [n for n in placement.notes if not n.startswith("profile: ")]
        return {
            "cell": cfg.key(c, self.loop),
            "mode": cfg.mode,
            "switches": cfg.switches_label,
            "governance": cfg.governance,
            "tracing": cfg.tracing,
            "python": cfg.python or (self.home_python if cfg.interpreter else ""),
            "impl": impl,
            "workers": cfg.workers,
            "worker_cpus": (
                " ".join(f"w{k}:{','.join(map(str, cs))}" for k, cs in enumerate(placement.cpus))
                if placement is not None and cfg.workers > 1
                else ",".join(map(str, self.profile.gateway_cpus))
            ),
            "clamped": bool(clamp),
            "clamp_notes": "; ".join(clamp),
            "shell": cfg.shell,
            "server": "" if peer else self.server,
            **self._point_fields(c),
            "repeat": rep,
            "loop": self.loop,
            "target_kind": cfg.kind,
            "route": t.route if peer else "chat",
            "peer_version": installed_version(t.peer) if peer else None,
            "stream": self.stream,
            "upstream": cfg.upstream,
            "probes": cfg.probes,
            "probes_ran": self._probes_inside() if cfg.probes == "on" else PROBES_OUTSIDE,
            **self._governance(cfg).columns(),
            "claimed_stages": ",".join(claimed_stages(cfg, self.stream)),
            "expected_errors": expected_errors(self.upstreams[cfg.upstream], self.loop).why,
            "started_at": _utc(),
        }

    def _governance(self, cfg: Config):
        """What the target ran besides forwarding (harness.peers._base.Governance)."""
        from harness.infra.targets import rung_governance, target

        if cfg.kind == "peer":
            return target(cfg.mode).governance
        return rung_governance(cfg.stages, cfg.audit, cfg.tracing, limited=cfg.limited)

    def measure_cell(self, cfg: Config, rep: int, c: float) -> dict[str, Any]:
        key = cfg.key(c, self.loop)
        self._step(f"{key} r={rep}")
        peer = cfg.kind == "peer"
        interp = cfg.interpreter
        views = interp and cfg.probes == "on"  # a view cell: in-gateway probes and py-spy
        row = self._row_head(cfg, rep, c)
        missing: list[str] = []
        raw: dict[str, Any] = {"cell": key, "repeat": rep}
        point = f"rate{c:g}" if self.loop == "open" else f"c{int(c):03d}"
        stem = f"{cfg.stem}-{point}-r{rep}".replace("=", "-").replace(",", "_")
        try:
            if not self._gateway_alive():
                raise RuntimeError("gateway is not running")
            row["gateway_pid"] = self.gateway.pid
            url = self.gateway.url
            shape = self._shape(cfg, row["route"])
            if peer:
                row["path_check"] = ",".join(
                    f"{k}={v}" for k, v in self.peer_checks.get(cfg.mode, {}).items()
                )
            unit = cfg.workers > 1 and not peer
            claimed = claimed_stages(cfg, self.stream)
            # the stage counters of one process: a unit of workers answers /metrics from one of them
            counted = bool(claimed) and not unit
            start = read_counters(url) if counted else None
            if self.warmup_s > 0:
                self._load(url, c, self.warmup_s, shape)
            before = self._settled_counters(url, claimed, start) if counted else None
            pid = self._app_pid()
            wpids = self.gateway.worker_pids() if unit else []  # every worker, measured one by one
            if unit and len(wpids) != cfg.workers:
                raise RuntimeError(f"{cfg.workers - len(wpids)} of {cfg.workers} workers are not running")
            no_gil = False
            if views:
                pre = self._probes(reset=True, every_worker=unit)
                no_gil = pre.get("gil_enabled") is False  # a free-threaded build with the GIL off
            sampler = outside.TreeSampler(self.gateway.pid).start()
            wsamplers = [outside.TreeSampler(p).start() for p in wpids]
            spies: list = []
            if views and not no_gil:
                spies = [
                    outside.PySpyGil(
                        p,
                        max(1, int(self.duration_s - 0.3)),
                        self.run.artefact(f"raw/pyspy/{stem}{f'-w{k}' if unit else ''}.txt"),
                        rate=self.pyspy_rate,
                        cpus=self.profile.harness_cpus,
                        main_tid=p,
                    ).start()
                    for k, p in enumerate(wpids or [pid])
                ]
            wsnaps: list[dict] = []
            try:
                r = self._load(url, c, self.duration_s, shape)
            finally:
                cpu = sampler.stop()
                wcpu = [w.stop() for w in wsamplers]
                if peer:
                    snap = {"error": f"not available: {cfg.mode} is a peer, not our gateway"}
                elif not interp:
                    snap = {"error": NOT_APPLICABLE}
                elif not views:
                    snap = {"error": "off in a throughput cell (probes=off; views run in cells of their own)"}
                else:
                    try:
                        snap = self._probes(reset=True, every_worker=unit)
                        if unit:  # cells carry worker 0's in-gateway views; the workers table has each
                            wsnaps = snap["workers"]
                            snap = dict(wsnaps[0])
                    except Exception as e:  # noqa: BLE001
                        snap = {"error": f"{type(e).__name__}: {e}"}
                spy_all = [sp.stop() for sp in spies]
                spy_res = spy_all[0] if spy_all else None
            raw.update(
                load=r,
                cpu=cpu,
                probes=snap,
                pyspy=spy_res,
                worker_cpu=wcpu,
                worker_probes=wsnaps,
                worker_pyspy=spy_all[1:],
            )
            after = self._settled_counters(url, claimed, before) if counted else None
            lat = r.get("latency_us") or {}
            base = self._baseline_for(c, row["route"], cfg.upstream)
            ok_n = int((r.get("meta") or {}).get("ok") or 0)
            done_n = int(r.get("requests") or 0)
            sent = int((r.get("meta") or {}).get("sent") or done_n)
            row["errors_by_kind"] = json.dumps(r.get("errors_by_kind") or {}, sort_keys=True)
            row.update(
                duration_s=r.get("duration_s"),
                requests=ok_n,
                errors=r.get("errors"),
                error_share=((done_n - ok_n) / done_n) if done_n else None,
                rps=r.get("rps"),
                base_rps=base.get("rps"),
            )
            tt = r.get("ttfb_us") or {}
            for p in ("p50", "p99"):
                v, b = _pct(tt, p), base.get(f"ttfb_{p}")
                row[f"ttfb_{p}_us"] = v
                row[f"base_ttfb_{p}_us"] = b
                row[f"ovh_ttfb_{p}_us"] = (v - b) if (v is not None and b is not None) else None
            for p in _PCTS:
                v, b = _pct(lat, p), base.get(p)
                row[f"lat_{p}_us"] = v
                row[f"base_{p}_us"] = b
                if p != "max":
                    row[f"ovh_{p}_us"] = (v - b) if (v is not None and b is not None) else None
            row.update(
                cpu_user_s=cpu["cpu_user_s"],
                cpu_sys_s=cpu["cpu_sys_s"],
                cpu_cores=cpu["cpu_cores"],
                rss_peak_mb=cpu["rss_peak_mb"],
                rss_hwm_mb=cpu["rss_hwm_mb"],
            )
            if ok_n and cpu.get("cpu_user_s") is not None:  # over successful answers only
                row["cpu_us_per_req"] = (cpu["cpu_user_s"] + cpu["cpu_sys_s"]) / ok_n * 1e6
            missing += [f"cpu: {m}" for m in cpu.get("missing", [])]
            self._fill_inside(row, snap, missing, key, cfg, c, rep)
            if unit:
                missing.append(
                    f"gil views: cells hold worker 0's of {cfg.workers} (every worker: workers table)"
                )
            if not peer:
                self._worker_rows(
                    row,
                    cfg,
                    rep,
                    c,
                    wpids or [pid],
                    wcpu or [cpu],
                    wsnaps or [snap],
                    spy_all or [None] * max(1, len(wpids)),
                )
            if peer:
                missing.append("gil_ownership: not sampled (a peer, not our gateway)")
            elif self.gil and not interp:
                missing.append(f"gil_ownership: {NOT_APPLICABLE}")
            elif not views:
                missing.append("gil_ownership: not sampled in a throughput cell (probes=off)")
            elif no_gil:
                from gateway.probes import NO_GIL

                missing.append(f"gil_ownership: {NO_GIL}")
            else:
                self._fill_pyspy(row, spy_res, missing, key, cfg, c, rep)
            if self.flamegraph:
                drive = lambda: self._load(url, c, max(1.5, self.duration_s + 0.5), shape)  # noqa: E731
                self._flamegraphs(cfg, pid, stem, drive, row, raw, missing)
            statuses = None
            if counted:
                runs = _diff(after["stage_runs"], before["stage_runs"])
                statuses = _diff(after["statuses"], before["statuses"])
                row["stage_runs"] = json.dumps(runs, sort_keys=True)
                raw["stage_runs"] = {"before": before, "after": after, "sent": sent, "ok": ok_n}
                stages_ok, row["stage_check"] = check_stages(claimed, runs, ok_n, sent)
            elif peer:
                stages_ok, row["stage_check"] = True, "n/a: a peer has no stage counters (see gov_* columns)"
            else:
                stages_ok = True
                row["stage_check"] = f"not verified: /metrics answers for one of {cfg.workers} workers"
                missing.append(f"stage counters: {row['stage_check']}")
            row["status"], row["error"] = cell_verdict(
                ok_n,
                done_n,
                r.get("errors_by_kind") or {},
                expected_errors(self.upstreams[cfg.upstream], self.loop),
                statuses,
            )
            if row["status"] == "ok" and not stages_ok:
                row["status"], row["error"] = "failed", f"stage check: {row['stage_check']}"
            p99 = row.get("lat_p99_us")
            row["sustained"] = bool(
                row["status"] == "ok"
                and p99 is not None
                and p99 <= self.p99_cap_us
                and (row["error_share"] or 0.0) < self.max_error_share
            )
        except KeyboardInterrupt:
            row.update(status="interrupted", error="interrupted by the user")
            raise
        except Exception as e:  # noqa: BLE001 - a failed cell is recorded and the sweep goes on
            row.update(status="failed", error=f"{type(e).__name__}: {e}")
            raw["traceback"] = traceback.format_exc()
        finally:
            if row.get("status") != "ok" and not missing:
                missing.append("all probes: the cell did not complete (see error)")
            row["probes_missing"] = "; ".join(missing)
            self.rows.append(row)
            with contextlib.suppress(Exception):
                self.run.write_json(f"raw/cells/{stem}.json", raw)
            self._flush()
            self._advance()
            if self.on_cell is not None:
                with contextlib.suppress(Exception):
                    self.on_cell(dict(row))
        return row

    def _flamegraphs(self, cfg: Config, pid: int, stem: str, load, row, raw, missing) -> None:
        """The cell's flamegraphs, each over a window of its own after the measured one (a
        profiler never runs during the measured window): py-spy on the Python threads, perf
        on every thread (`harness.infra.targets.flamegraph_tools`), each with its label."""
        from harness.infra.targets import PERF, PYSPY, flamegraph_tools, native_threads
        from harness.profilers import perf

        tools = flamegraph_tools(cfg.mode)
        fg_s = max(1.0, self.duration_s)
        at = f"{row['rate']:g} req/s" if self.loop == "open" else f"c={row['concurrency']}"
        where = self.run.path / "flamegraphs"
        rel = lambda p: os.path.relpath(p, self.run.path)  # noqa: E731
        if PYSPY in tools:
            fg = outside.record_flamegraph(
                pid, fg_s, where, stem, rate=self.pyspy_rate, cpus=self.profile.harness_cpus, load=load
            )
            raw["flamegraph"] = fg
            row["flamegraph_label"] = (
                f"sampled (py-spy --native, {self.pyspy_rate} Hz); pid {pid}; the Python threads"
            )
            if fg["svg"]:
                row["flamegraph_svg"] = rel(fg["svg"])
            if fg["speedscope"]:
                row["speedscope_json"] = rel(fg["speedscope"])
            if fg["missing"]:
                missing.append(f"flamegraph: {fg['missing']}")
        elif cfg.kind == "rung":
            missing.append(f"flamegraph (py-spy): {NOT_APPLICABLE}: see the perf flamegraph")
        if PERF in tools:
            pf = perf.record(
                pid,
                fg_s,
                where,
                stem,
                rate=self.pyspy_rate,
                cpus=self.profile.harness_cpus,
                load=load,
                title=f"{cfg.mode} at {at}: {native_threads(cfg.mode)}",
            )
            raw["perf_flamegraph"] = pf
            threads = ", ".join(f"{n} ({k} samples)" for n, k in pf["threads"].items())
            whole = f", {pf['unwound_share']:.0%} unwound whole" if pf["unwound_share"] is not None else ""
            row["perf_flamegraph_label"] = (
                f"{pf['label']}; {pf['samples']} samples{whole}; {pf['process']}; {native_threads(cfg.mode)}"
                + (f"; threads: {threads}" if threads else "")
            )
            if pf["svg"]:
                row["perf_flamegraph_svg"] = rel(pf["svg"])
            if pf["speedscope"]:
                row["perf_speedscope_json"] = rel(pf["speedscope"])
            if pf["missing"]:
                missing.append(f"perf flamegraph: {pf['missing']}")

    def _fill_inside(self, row, snap, missing, key, cfg, c, rep) -> None:
        if "error" in snap:
            missing.append(f"in-gateway probes: {snap['error']}")
            return
        g = snap.get("gil_wait") or {}
        if g.get("available"):
            row.update(
                gil_wait_count=g.get("count"),
                gil_wait_p50_us=g.get("p50_us"),
                gil_wait_p99_us=g.get("p99_us"),
                gil_wait_max_us=g.get("max_us"),
                gil_wait_cal_p50_us=(g.get("calibration") or {}).get("p50_us"),
            )
        else:
            missing.append(f"gil_wait: {g.get('reason') or 'not reported by the gateway'}")
        lag = snap.get("loop_lag") or {}
        if lag.get("available"):
            row.update(
                loop_lag_p50_us=lag.get("p50_us"),
                loop_lag_p99_us=lag.get("p99_us"),
                loop_lag_max_us=lag.get("max_us"),
            )
        else:
            missing.append(f"loop_lag: {lag.get('reason') or 'not reported by the gateway'}")
        nat = snap.get("native") or {}
        if nat.get("available"):
            t = nat.get("totals") or {}
            row.update(
                native_calls=t.get("calls"),
                native_hold_s=t.get("hold_ns", 0) / 1e9,
                native_detached_s=t.get("detached_ns", 0) / 1e9,
                native_wait_s=t.get("reacquire_wait_ns", 0) / 1e9,
                native_max_wait_us=t.get("max_reacquire_wait_ns", 0) / 1e3,
            )
            for name, e in (nat.get("entries") or {}).items():
                if not e.get("calls"):
                    continue
                self.entry_rows.append(
                    {
                        "cell": key,
                        "mode": cfg.mode,
                        "switches": cfg.switches_label,
                        "shell": cfg.shell,
                        "concurrency": c,
                        "repeat": rep,
                        "entry": name,
                        "calls": e.get("calls"),
                        "hold_us": e.get("hold_ns", 0) / 1e3,
                        "detached_us": e.get("detached_ns", 0) / 1e3,
                        "reacquire_wait_us": e.get("reacquire_wait_ns", 0) / 1e3,
                        "max_reacquire_wait_us": e.get("max_reacquire_wait_ns", 0) / 1e3,
                    }
                )
        else:
            missing.append(f"native_gil: {nat.get('reason') or 'not reported by the gateway'}")

    def _worker_rows(self, row, cfg: Config, rep: int, c: float, pids, cpus, snaps, spies) -> None:
        """One row per worker of the cell: its CPU and, where it has an interpreter, its GIL views."""
        placement = self.placements[cfg.workers]
        for k, pid in enumerate(pids):
            cpu, snap = cpus[k], snaps[k] if k < len(snaps) else {}
            spy = spies[k] if k < len(spies) else None
            lag, gw, nat = (
                (snap.get("loop_lag") or {}),
                (snap.get("gil_wait") or {}),
                (snap.get("native") or {}),
            )
            tot = nat.get("totals") or {}
            self.worker_rows.append(
                {
                    "cell": row["cell"],
                    "mode": cfg.mode,
                    "switches": cfg.switches_label,
                    "shell": cfg.shell,
                    "governance": cfg.governance,
                    "workers": cfg.workers,
                    "concurrency": row["concurrency"],
                    "rate": row["rate"],
                    "repeat": rep,
                    "worker": k,
                    "pid": pid,
                    "cpus": ",".join(
                        map(str, placement.cpus[k] if cfg.workers > 1 else self.profile.gateway_cpus)
                    ),
                    "clamped": row["clamped"],
                    "cpu_user_s": cpu.get("cpu_user_s"),
                    "cpu_sys_s": cpu.get("cpu_sys_s"),
                    "cpu_cores": cpu.get("cpu_cores"),
                    "rss_peak_mb": cpu.get("rss_peak_mb"),
                    "gil_wait_p99_us": gw.get("p99_us") if gw.get("available") else None,
                    "loop_lag_p99_us": lag.get("p99_us") if lag.get("available") else None,
                    "native_hold_s": tot.get("hold_ns", 0) / 1e9 if nat.get("available") else None,
                    "native_wait_s": tot.get("reacquire_wait_ns", 0) / 1e9 if nat.get("available") else None,
                    "gil_held_share": spy.get("held_share") if spy and spy.get("available") else None,
                    "gil_main_share": spy.get("main_share") if spy and spy.get("available") else None,
                }
            )

    def _fill_pyspy(self, row, res, missing, key, cfg, c, rep) -> None:
        if res is None:
            missing.append("gil_ownership: not requested (gil=False)")
            return
        if not res.get("available"):
            missing.append(f"gil_ownership: {res.get('reason') or 'py-spy produced nothing'}")
            return
        row.update(
            pyspy_samples=res["samples"],
            gil_held_share=res["held_share"],
            gil_main_share=res["main_share"],
            gil_other_share=res["other_share"],
        )
        main = set(res.get("main_threads") or [])
        for thread, n in res["threads"].items():
            self.thread_rows.append(
                {
                    "cell": key,
                    "mode": cfg.mode,
                    "switches": cfg.switches_label,
                    "shell": cfg.shell,
                    "concurrency": c,
                    "repeat": rep,
                    "thread": thread,
                    "is_main": thread in main,
                    "samples": n,
                    "share": n / res["samples"],
                }
            )

    def _scalene_profiles(self) -> None:
        """One extra gateway per configuration under scalene, driven at the top concurrency."""
        c = max(self.concurrency)
        # one profile per configuration: not again for its view cells or per upstream
        for cfg in (
            c_
            for c_ in self.configs
            if c_.kind == "rung" and c_.probes == "off" and c_.upstream in ("", next(iter(self.upstreams)))
        ):
            stem = cfg.stem
            out_json = self.run.artefact(f"scalene/{stem}.json")
            wrapper, why = outside.scalene_command(out_json)
            if not cfg.interpreter:
                wrapper, why = None, NOT_APPLICABLE
            rel = None
            err = why
            if wrapper is not None:
                tail = ""
                try:
                    self._start_gateway(cfg, wrapper=wrapper)
                    self._load(self.gateway.url, c, max(2.0, self.duration_s))
                    time.sleep(1.5)  # one more periodic profile write after the load window
                    proc = getattr(self.gateway, "proc", None)
                    if proc is not None:
                        proc.send_signal(signal.SIGINT)
                        with contextlib.suppress(Exception):
                            proc.wait(60)
                    with contextlib.suppress(Exception):
                        tail = " ".join(self.gateway.output().strip().splitlines()[-3:])
                except Exception as e:  # noqa: BLE001
                    err = f"{type(e).__name__}: {e}"
                finally:
                    self._stop_gateway()
                if out_json.exists() and out_json.stat().st_size > 0:
                    rel, err = os.path.relpath(out_json, self.run.path), None
                elif err is None:
                    err = f"scalene wrote no profile for the gateway under uvicorn/uvloop (output: {tail[-300:]!r})"
            for row in self.rows:
                if (
                    row["mode"] == cfg.mode
                    and row["switches"] == cfg.switches_label
                    and row["shell"] == cfg.shell
                    and row.get("governance", "on") == cfg.governance
                    and row.get("tracing", "off") == cfg.tracing
                    and row["concurrency"] == c
                ):
                    if rel:
                        row["scalene_json"] = rel
                    else:
                        row["probes_missing"] = "; ".join(
                            filter(None, [row.get("probes_missing"), f"scalene: {err}"])
                        )
            self._flush()

    # ------------------------------------------------------------------ the sweep
    def total_steps(self) -> int:
        return self.repeat * len(self.points) * (len(self.routes) * len(self.upstreams) + len(self.configs))

    def _failed_rows(self, cfg: Config, rep: int, points, status: str, error: str, probes: str) -> None:
        for c in points:
            self.rows.append(
                {**self._row_head(cfg, rep, c), "status": status, "error": error, "probes_missing": probes}
            )
            self._advance()
        self._flush()

    def _run_config(self, cfg: Config, rep: int) -> None:
        """Every point of one config: start it, measure each point, stop it. An open-loop
        ladder stops at its first clear failure (p99 over the cap or errors >= the limit), so
        a slow target does not eat the run; the rates above are recorded as skipped."""
        try:
            self._start_gateway(cfg)
        except Exception as e:  # noqa: BLE001 - every cell of this config fails, recorded
            what = "peer" if cfg.kind == "peer" else "gateway"
            self._failed_rows(
                cfg,
                rep,
                self.points,
                "failed",
                f"{what} did not start: {type(e).__name__}: {e}",
                f"all probes: the {what} did not start",
            )
            return
        try:
            for i, c in enumerate(self.points):
                if not self._gateway_alive():
                    self._stop_gateway()
                    with contextlib.suppress(Exception):
                        self._start_gateway(cfg)
                row = self.measure_cell(cfg, rep, c)
                if self.loop == "open" and not row.get("sustained"):
                    why = (
                        row.get("error")
                        or f"p99 {row.get('lat_p99_us') or float('nan'):.0f} us vs cap {self.p99_cap_us:.0f} us, "
                        f"errors {100 * (row.get('error_share') or 0):.1f}%"
                    )
                    self._failed_rows(
                        cfg,
                        rep,
                        self.points[i + 1 :],
                        "skipped",
                        f"ladder stopped at {c:g}/s ({why})",
                        "all probes: not run (ladder stopped)",
                    )
                    break
        finally:
            self._stop_gateway()

    def execute(self) -> RunResult:
        """Hold the CPU latency request (if asked) for the whole run, then run it."""
        if self.cpu_latency_us is None:
            return self._execute()
        from harness.infra import cpuidle

        with cpuidle.hold_latency(self.cpu_latency_us):
            return self._execute()

    def _execute(self) -> RunResult:
        self._open_run()
        partial, interrupted, error = True, False, None
        old_aff = os.sched_getaffinity(0)
        old_term = None
        if threading.current_thread() is threading.main_thread():

            def _term(signum, frame):
                raise KeyboardInterrupt

            old_term = signal.signal(signal.SIGTERM, _term)
        atexit.register(self.cleanup)
        try:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self.profile.harness_cpus)  # keep the harness off the gateway's cores
            if self.progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=self.total_steps(), desc=f"sweep {self.run.name}", unit="cell")
            self._start_mock()
            self.run.update_meta(mock_url=self.mock.url)
            if self.do_capacity:
                self._step("load generator capacity")
                self.measure_capacity()
            for rep in range(self.repeat):
                for upstream in self.upstreams:
                    for route in self.routes:
                        for c in self.points:
                            self.measure_baseline(rep, c, route, upstream)
                self._flush()
                for cfg in round_order(self.configs, rep, self.order):
                    self._run_config(cfg, rep)
            if self.scalene:
                self._step("scalene")
                self._scalene_profiles()
            partial = False
        except KeyboardInterrupt:
            interrupted = True
        except Exception as e:  # noqa: BLE001 - keep a consistent partial run, then re-raise
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            self.cleanup()
            with contextlib.suppress(Exception):
                atexit.unregister(self.cleanup)
            if self.bar is not None:
                self.bar.close()
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, old_aff)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            self._finish_capacity()
            self._flush()
            self.run.update_meta(
                partial=partial,
                interrupted=interrupted,
                error=error,
                end_time=_utc(),
                peer_checks=self.peer_checks,
                cells_ok=sum(r.get("status") == "ok" for r in self.rows),
                cells_failed=sum(r.get("status") == "failed" for r in self.rows),
            )
        rep_info: dict[str, Any] = {}
        if self.results == "raw":  # no pandas here: `gatewaylab import` makes tables and report
            return RunResult(
                self.run.path, list(self.rows), list(self.base_rows), list(self.cap_rows), partial
            )
        if self.do_report:
            try:
                from harness.results.report import write_report

                rep_info = write_report(self.run.path, images=self.report_images)
            except Exception as e:  # noqa: BLE001
                rep_info = {"error": f"{type(e).__name__}: {e}"}
                self.run.update_meta(report_error=rep_info["error"])
        import pandas as pd  # noqa: F401

        return RunResult(
            self.run.path,
            self.run.read_table("cells"),
            self.run.read_table("baseline"),
            self.run.read_table("capacity"),
            partial,
            rep_info,
        )

    def _finish_capacity(self) -> None:
        ok = [r["rps"] for r in self.rows if r.get("status") == "ok" and r.get("rps")]
        top = max(ok) if ok else None
        for row in self.cap_rows:
            row["max_gateway_rps"] = top
            if top and row.get("rps"):
                row["headroom"] = row["rps"] / top


def run_sweep(
    modes: Sequence[str] = ("py", "py+rs"),
    switches: Sequence[str | Mapping[str, str]] | None = None,
    shells: Sequence[str] = ("asgi",),
    concurrency: str | int | Iterable[int] = range(1, 17),
    profile: str | Mapping[str, Any] = "xeon-4c",
    duration_s: float | None = None,
    warmup_s: float | None = None,
    repeat: int | None = None,
    gil: bool = True,
    flamegraph: bool = False,
    scalene: bool = False,
    upstream: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    on_cell: Callable[[dict], None] | None = None,
    ci: bool = False,
    name: str = "sweep",
    server: str = "uvicorn",
    env: Mapping[str, str] | None = None,
    pyspy_rate: int = 100,
    capacity: bool = True,
    load_opts: Mapping[str, Any] | None = None,
    report: bool = True,
    report_images: bool = True,
    targets: str | Sequence[str] | None = None,
    rates: str | Iterable[float] | None = None,
    p99_cap_ms: float = 50.0,
    max_error_share: float = 0.01,
    stream: bool = False,
    governance: Sequence[str] = ("on",),
    results: str = "parquet",
    workers: str | int | Iterable[int] = (1,),
    tracing: Sequence[str] = ("off",),
    order: str = "fixed",
    upstreams: Mapping[str, Mapping[str, Any]] | None = None,
    pythons: str | Sequence[str] | None = None,
    cpu_latency_us: int | None = None,
) -> RunResult:
    """Run a concurrency sweep and return its run folder and cells table (see module docstring).

    `ci=True` is the CI size: c in {1, 2, 4, 8, 16} (unless `concurrency` is given
    explicitly as something other than the default), 1.5 s cells, 0.5 s warm-up, 1 repeat.
    Defaults otherwise: 5 s cells, 1 s warm-up, 3 repeats. `governance` sweeps what the
    gateway does besides forwarding: "on" (every stage, audit on), "off" (no stage, no audit),
    "stages-only", "audit-only" (GOVERNANCE); peers always run as shipped. `tracing` sweeps
    OpenTelemetry on the rungs: "off", "on", "sampled:R" (spans go to a local OTLP receiver
    the sweep starts; docs/tracing.md). `order` ("fixed" or "alternate", ORDERS) is the order of
    the configurations inside each repeat: the same every time, or reversed every other repeat.

    `targets` ("py,py+rs,litellm,litellm-rust,portkey,noveum"; harness.infra.targets.TARGETS) replaces
    `modes`: rungs and peers measured side by side. `rates` (req/s) turns the concurrency sweep
    into open-loop rate ladders (CO-corrected); a cell is `sustained` when its p99 is at most
    `p99_cap_ms` and its error share under `max_error_share`, and a target's ladder stops at
    its first unsustained rate. `workers` ("1,2,4") is an axis of gateway processes per rung
    (--workers; one per gateway core, placed by harness.infra.profiles.place_workers, clamped and
    noted per cell when the machine is smaller: `clamped`, `clamp_notes`, `worker_cpus`); the
    `workers` table has each worker's CPU and GIL views. `results="raw"` writes JSON rows and no
    report (the lean install; `RunResult.table` is then a list of row dicts). `stream=True` sends `stream: true` and records TTFB (with its
    overhead over the direct baseline); give the mock `ttft_ms`/`itl_ms`/`tokens` in `upstream`.

    `gil=True` adds, beside every interpreter rung's throughput cells (no probe inside the
    gateway), view cells with the in-gateway GIL/loop probes and py-spy (`probes` column "on",
    labelled `probes=on`); figures compared across targets come from the throughput cells.
    `upstreams={"fast": {"latency_ms": 0}, "slow": {"latency_ms": 50}}` (instead of `upstream`)
    measures every configuration against each named mock upstream, alternating inside every
    repeat, with a direct baseline per upstream (`upstream` column).
    `pythons` ("3.11,3.12,3.13" or interpreter paths; harness.infra.interpreters) is the interpreter
    axis: each rung with an interpreter (py, py+rs, rs-core) runs once per interpreter, in that
    interpreter's venv; rs-server and peers run once (meta.json `interpreters.not_on_axis`).
    The cells' `python` column names the interpreter of every cell that has one.
    `cpu_latency_us` holds a PM QoS CPU latency request for the whole run (0: the CPUs poll
    instead of idling; harness.infra.cpuidle.hold_latency); meta.json's `cpu_idle` says how
    the CPUs idled either way, and `parameters.cpu_latency_us` what was asked.
    """
    if ci:
        if isinstance(concurrency, range) and concurrency == range(1, 17):
            concurrency = CI_CONCURRENCY
        duration_s = CI_DURATION_S if duration_s is None else duration_s
        warmup_s = CI_WARMUP_S if warmup_s is None else warmup_s
        repeat = CI_REPEAT if repeat is None else repeat
    sweep = Sweep(
        modes=modes,
        switches=switches,
        shells=shells,
        concurrency=concurrency,
        profile=profile,
        duration_s=5.0 if duration_s is None else duration_s,
        warmup_s=1.0 if warmup_s is None else warmup_s,
        repeat=3 if repeat is None else repeat,
        gil=gil,
        flamegraph=flamegraph,
        scalene=scalene,
        upstream=upstream if upstreams is not None else dict(latency_ms=0) if upstream is None else upstream,
        out=out,
        progress=progress,
        on_cell=on_cell,
        name=name,
        server=server,
        env=env,
        pyspy_rate=pyspy_rate,
        capacity=capacity,
        load_opts=load_opts,
        report=report,
        report_images=report_images,
        targets=targets,
        rates=rates,
        p99_cap_ms=p99_cap_ms,
        max_error_share=max_error_share,
        stream=stream,
        governance=tuple(governance),
        results=results,
        workers=workers,
        tracing=tuple(tracing),
        order=order,
        upstreams=upstreams,
        pythons=pythons,
        cpu_latency_us=cpu_latency_us,
    )
    return sweep.execute()
