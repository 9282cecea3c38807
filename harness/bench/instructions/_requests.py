"""Instructions per request: a target under Cachegrind from start to a graceful exit, served
N1 and then N2 requests (closed loop, c = 1), differenced."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, GatewayLabError
from gateway.ladder import RUNGS
from harness.bench.instructions import _cachegrind as cg
from harness.bench.instructions._common import one_line, precompile
from harness.bench.instructions._results import PEER_GOVERNANCE, InstructionRun, key, run_meta
from harness.bench.instructions._sha256 import (
    hash_impl,
    mmr_node_blocks,
    sha256_blocks,
    sha256_calibration,
    skew_fields,
)
from harness.infra.sweep import GOVERNANCE, key_limits  # governance -> (--stages, --audit): the sweep's axis

RUNG_TARGETS = ("py", "py+rs", "rs-core", "rs-server")
N1, N2 = 200, 600
API_KEY = "sk-gatewaylab-instr"
CHAT_BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Summarise the GIL in one line."}],
}
DEFAULT_PROFILE = "ci-2c"  # one gateway core: rs-server's thread count does not vary by machine
READY_TIMEOUT_S = 900.0  # a Python gateway under Cachegrind starts ~50x slower
STOP_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 120.0


@dataclass
class Sample:
    """One gateway life under Cachegrind: start, a probe, N requests, the audit drained, exit."""

    n: int
    ir: int
    processes: int
    wall_s: float
    sha_by_symbol: int
    serve_s: float = 0.0  # from ready to stop
    upstream_requests: int = 0  # what the mock saw
    audit_records: int = 0
    leaf_blocks: int = 0  # SHA-256 blocks of every MMR leaf hash H(0x00 || record)
    request_bytes: int = 0
    response_bytes: int = 0


class Unfollowable(GatewayLabError):
    """Valgrind cannot run this target (it says why)."""


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (127.0.0.1)
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _get_json(url: str, timeout: float = 60.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (127.0.0.1)
        return json.loads(r.read())


def _wait_audit(url: str, ledger: Path, expected: int, timeout_s: float) -> None:
    """Wait until the ledger's WAL holds `expected` records (read from the file: polling the
    gateway would add a varying number of requests to the count), then ask /audit/root once,
    as every run does, and check that it counts them all."""
    from gateway import twins

    replay = twins.load("wal", "python").replay
    wal = ledger / "audit.wal"
    deadline = time.monotonic() + timeout_s
    while not (wal.exists() and len(replay(str(wal))) >= expected):
        if time.monotonic() > deadline:
            got = len(replay(str(wal))) if wal.exists() else 0
            raise GatewayLabError(f"the WAL holds {got} of {expected} records after {timeout_s:.0f} s")
        time.sleep(0.2)
    count = int(_get_json(url + "/audit/root")["count"])
    if count != expected:
        raise GatewayLabError(f"/audit/root counts {count} records, expected {expected}")


def _wal_leaf_blocks(ledger: Path) -> tuple[int, int]:
    """(records, SHA-256 blocks of their MMR leaf hashes) in the ledger's WAL."""
    from gateway import twins

    wal = ledger / "audit.wal"
    if not wal.exists():
        return 0, 0
    payloads = twins.load("wal", "python").replay(str(wal))
    return len(payloads), sum(sha256_blocks(1 + len(p)) for p in payloads)


@dataclass(frozen=True)
class Spec:
    """One measured configuration: a rung under a governance setting, or a peer as shipped."""

    target: str
    kind: str  # rung | peer
    governance: str

    @property
    def key(self) -> str:
        return key(self.target, self.governance)


class _Bench:
    """The native mock (pinned, shared by every target) and one target's life under Cachegrind."""

    def __init__(self, profile, server: str, shell: str):
        from harness.infra.profiles import resolve

        self.profile = resolve(profile)
        self.server, self.shell = server, shell
        self.mock = None

    def __enter__(self):
        from harness.infra.native_procs import start_mock

        self.mock = start_mock(cpus=self.profile.mock_cpus, latency_ms=0)
        return self

    def __exit__(self, *exc):
        if self.mock is not None:
            self.mock.stop()

    def _shape(self, spec: Spec):
        from harness.infra.targets import target
        from harness.peers._base import RequestShape

        if spec.kind == "peer":
            return target(spec.target).request(API_KEY, self.mock.url)
        return RequestShape(
            "/v1/chat/completions",
            {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
            CHAT_BODY,
        )

    def sample(self, spec: Spec, n: int, workdir: Path, hold_s: float = 0.0) -> Sample:
        """One life of the target under Cachegrind serving `n` requests. `hold_s`: keep it
        serving at least this long (from ready to stop) before stopping it, so that work on
        a timer (uvicorn's 10 Hz tick costs a py gateway ~120 k Ir a second, idle) is the
        same in both runs of a pair and cancels."""
        from harness.infra.native_procs import run_load

        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / "cachegrind"
        out.mkdir()
        ledger = workdir / "ledger"
        prefix = cg.command(out)
        shape = self._shape(spec)
        body = json.dumps(shape.body).encode()  # the bytes the load generator sends too
        t0 = time.monotonic()
        self.mock.reset_stats()
        proc = None
        try:
            if spec.kind == "peer":
                from harness.infra.targets import target

                proc = target(spec.target).start(
                    self.mock.url,
                    self.profile.gateway_cpus,
                    workdir=workdir / "peer",
                    wrapper=prefix,
                    ready_timeout_s=READY_TIMEOUT_S,
                )
            else:
                from gateway.serving.launch import start_gateway
                from harness.infra.targets import write_bench_config

                stages, audit = GOVERNANCE[spec.governance]
                config = write_bench_config(
                    workdir / "gateway.yaml",
                    self.mock.url,
                    API_KEY,
                    ledger,
                    limits=key_limits(spec.governance),
                )
                rung = RUNGS[spec.target]  # a rung that serves HTTP itself takes no --shell/--server
                proc = start_gateway(
                    None,
                    None,
                    mode=spec.target,
                    shell=self.shell if rung.shells else None,
                    server=self.server if rung.servers else None,
                    ledger_dir=str(ledger),
                    config=str(config),
                    cpus=self.profile.gateway_cpus,
                    ready_timeout=READY_TIMEOUT_S,
                    wrapper=[*prefix, sys.executable, "{script}"],
                    stages=stages,
                    audit=audit,
                )
        except Exception as e:  # noqa: BLE001 - turned into one line below
            why = cg.diagnose(out)
            if why:
                raise Unfollowable(why) from None
            raise GatewayLabError(f"did not start under Cachegrind: {one_line(e)}") from None
        t_ready = time.monotonic()
        try:
            status, answer = _post(proc.url + shape.path, body, dict(shape.headers), REQUEST_TIMEOUT_S)
            if status != 200:
                raise GatewayLabError(f"probe request: HTTP {status}: {answer[:200]!r}")
            r = run_load(
                proc.url + shape.path,
                concurrency=1,
                requests=n,
                cpus=self.profile.load_cpus,
                body=dict(shape.body),
                headers=dict(shape.headers),
                timeout_s=REQUEST_TIMEOUT_S,
                max_duration_s=3600,
            )
            ok = int((r.get("meta") or {}).get("ok") or 0)
            errors = r.get("errors") or {}
            if ok != n or int(r.get("requests") or 0) != n or (errors and sum(errors.values())):
                raise GatewayLabError(f"load: {ok} of {n} requests answered 2xx (errors {errors})")
            audit_on = spec.kind == "rung" and GOVERNANCE[spec.governance][1] == "on"
            if audit_on:
                _wait_audit(proc.url, ledger, n + 1, STOP_TIMEOUT_S)
            left = hold_s - (time.monotonic() - t_ready)
            if left > 0:
                time.sleep(left)
            serve_s = time.monotonic() - t_ready
        except BaseException:
            with contextlib.suppress(Exception):
                proc.stop()
            raise
        code = proc.stop(STOP_TIMEOUT_S)
        seen = self.mock.stats()
        forwarded = int(seen.get("total") or 0)
        # every request reached the upstream once; a peer may also call it on its own (LiteLLM
        # does once): that is its work, in both runs of a pair
        if forwarded < n + 1 or (spec.kind == "rung" and forwarded != n + 1):
            raise GatewayLabError(
                f"the mock saw {forwarded} requests, expected {n + 1} (the probe and {n}): {seen.get('by_route')}"
            )
        try:
            counts = cg.read_dir(out)
        except cg.CachegrindUnavailable as e:
            raise GatewayLabError(f"{e} (exit status {code})") from None
        s = Sample(
            n=n,
            ir=counts.total,
            processes=len(counts.by_pid),
            wall_s=time.monotonic() - t0,
            serve_s=serve_s,
            sha_by_symbol=counts.matching(cg.SHA256_SYMBOLS),
            upstream_requests=forwarded,
            request_bytes=len(body),
            response_bytes=len(answer),
        )
        if audit_on:
            s.audit_records, s.leaf_blocks = _wal_leaf_blocks(ledger)
            if s.audit_records != n + 1:
                raise GatewayLabError(f"the ledger holds {s.audit_records} records, expected {n + 1}")
        return s


def _request_blocks(spec: Spec, a: Sample, b: Sample) -> float | None:
    """SHA-256 blocks per request on a rung, from the payload sizes (None for a peer)."""
    if spec.kind != "rung":
        return None
    stages, audit = GOVERNANCE[spec.governance]
    blocks = 0.0
    if stages == "all":  # auth hashes the presented key
        blocks += sha256_blocks(len(API_KEY))
    if audit == "on":  # the record's two body hashes, the leaf hashes, the new nodes
        dn = b.n - a.n
        blocks += sha256_blocks(b.request_bytes) + sha256_blocks(b.response_bytes)
        blocks += (b.leaf_blocks - a.leaf_blocks) / dn
        blocks += (mmr_node_blocks(b.audit_records) - mmr_node_blocks(a.audit_records)) / dn
    return blocks


def _request_row(spec: Spec, rep: int, a: Sample, b: Sample, server: str, cal: dict) -> dict[str, Any]:
    dn = b.n - a.n
    per = (b.ir - a.ir) / dn
    stages, audit = GOVERNANCE.get(spec.governance, ("", ""))
    blocks = _request_blocks(spec, a, b)
    by_symbol = (b.sha_by_symbol - a.sha_by_symbol) / dn
    impl = hash_impl(spec.target) if spec.kind == "rung" else None
    return {
        **_head(spec, rep, server),
        "stages": stages,
        "audit": audit,
        "status": "ok",
        "error": "",
        "n1": a.n,
        "n2": b.n,
        "ir_n1": a.ir,
        "ir_n2": b.ir,
        "ir_per_unit": per,
        "processes": b.processes,
        "audit_records": b.audit_records,
        "wall_s": a.wall_s + b.wall_s,
        "serve_s_n1": a.serve_s,
        "serve_s_n2": b.serve_s,
        "upstream_extra": b.upstream_requests - (b.n + 1),
        **skew_fields(blocks, impl, per, by_symbol, cal),
        "label": cg.LABEL,
    }


def _head(spec: Spec, rep: int, server: str) -> dict[str, Any]:
    from gateway.twins import NO_INTERPRETER_MODES

    python_rung = spec.kind == "rung" and spec.target not in NO_INTERPRETER_MODES
    return {
        "target": spec.target,
        "target_kind": spec.kind,
        "governance": spec.governance,
        "server": server if python_rung else "",
        "repeat": rep,
    }


def specs(targets: Sequence[str], governance: Sequence[str]) -> list[Spec]:
    """Rungs x governance settings, peers once (as shipped); ConfigError on an unknown name."""
    from harness.infra.targets import kind, parse_targets, target

    for g in governance:
        if g not in GOVERNANCE:
            raise ConfigError(f"governance {g!r}: expected one of {', '.join(GOVERNANCE)}")
    out: list[Spec] = []
    for name in parse_targets(list(targets)):
        if kind(target(name)) == "peer":
            out.append(Spec(name, "peer", PEER_GOVERNANCE))
        else:
            out += [Spec(name, "rung", g) for g in dict.fromkeys(governance)]
    return out


def check_sizes(n1: int, n2: int, repeat: int) -> None:
    """ConfigError unless 1 <= n1 < n2 and repeat >= 1."""
    if not (isinstance(n1, int) and isinstance(n2, int)) or n1 < 1 or n2 <= n1:
        raise ConfigError(f"sizes: need 1 <= n1 < n2, got n1={n1!r} n2={n2!r}")
    if not isinstance(repeat, int) or repeat < 1:
        raise ConfigError(f"repeat: need an integer >= 1, got {repeat!r}")


def measure(
    targets: Sequence[str] = RUNG_TARGETS,
    governance: Sequence[str] = ("on",),
    n1: int = N1,
    n2: int = N2,
    repeat: int = 2,
    profile: str = DEFAULT_PROFILE,
    server: str = "uvicorn",
    shell: str = "asgi",
    log: Callable[[str], None] | None = None,
    workdir: str | os.PathLike | None = None,
    governance_of: dict[str, Sequence[str]] | None = None,
) -> InstructionRun:
    """Instructions per request of every target (rungs x governance, peers as shipped), each
    run under Cachegrind at n1 and n2 requests, `repeat` times (repeats the outer loop).
    `governance_of` narrows the settings of the rungs it names ({"py": ["on"]}: py with
    governance on only). A target valgrind cannot run is reported in `unfollowable` (one
    line) and the rest go on; a configuration that fails otherwise gets a failed row with
    its error."""
    from harness.infra.profiles import resolve

    cg.valgrind()
    check_sizes(n1, n2, repeat)
    todo = specs(targets, governance)
    if governance_of:
        todo = [
            s for s in todo if s.kind == "peer" or s.governance in governance_of.get(s.target, governance)
        ]
    log = log or (lambda s: None)
    prof = resolve(profile)
    precompile()
    cal = sha256_calibration()
    params = {
        "targets": list(dict.fromkeys(s.target for s in todo)),
        "governance": list(governance),
        "n1": n1,
        "n2": n2,
        "repeat": repeat,
        "profile": prof.name,
        "server": server,
        "shell": shell,
        **({"governance_of": {k: list(v) for k, v in governance_of.items()}} if governance_of else {}),
    }
    run = InstructionRun(sha256=cal)
    skip: dict[Spec, str] = {}
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="gatewaylab-instructions-"))
    t_start = time.monotonic()
    try:
        with _Bench(prof, server, shell) as bench:
            for rep in range(repeat):
                for spec in todo:
                    if spec in skip:
                        continue
                    head = _head(spec, rep, server)
                    try:
                        stem = base / f"r{rep}-{spec.key.replace('@', '-').replace('+', 'p')}"
                        # the larger run first: the smaller one then serves as long as it did
                        big = bench.sample(spec, n2, Path(f"{stem}-n{n2}"))
                        small = bench.sample(spec, n1, Path(f"{stem}-n{n1}"), hold_s=big.serve_s)
                        for n in (n1, n2):
                            shutil.rmtree(f"{stem}-n{n}", ignore_errors=True)
                        row = _request_row(spec, rep, small, big, server, cal)
                        log(
                            f"{spec.key} r{rep}: {row['ir_per_unit']:,.0f} Ir/request "
                            f"({row['wall_s']:.0f} s under Cachegrind)"
                        )
                    except Unfollowable as e:
                        skip[spec] = str(e)
                        run.unfollowable.append({"target": spec.key, "reason": str(e)})
                        row = {**head, "status": "unfollowable", "error": str(e), "n1": n1, "n2": n2}
                        log(f"{spec.key}: valgrind cannot follow it: {e}")
                    except GatewayLabError as e:
                        row = {**head, "status": "failed", "error": one_line(e), "n1": n1, "n2": n2}
                        log(f"{spec.key} r{rep}: failed: {one_line(e)}")
                    run.rows.append({"label": cg.LABEL, **row})
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    run.meta = run_meta(params, prof)
    run.meta["wall_s"] = time.monotonic() - t_start
    return run
