"""Instructions per unit of a component twin: a driver (harness/bench/_instr_driver.py) under Cachegrind at two
sizes, differenced like requests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gateway.errors import ConfigError, GatewayLabError
from harness.bench.instructions import _cachegrind as cg
from harness.bench.instructions._common import one_line, precompile, run_driver
from harness.bench.instructions._results import InstructionRun
from harness.bench.instructions._sha256 import (
    SHA256_CALLS,
    mmr_node_blocks,
    sha256_blocks,
    sha256_calibration,
    skew_fields,
)

# Components (`--components`): each expands to driver cases (harness/bench/_instr_driver.py).
STAGES = (
    "auth",
    "waf.short",
    "waf.4k",
    "ratelimit",
    "adapter.request",
    "adapter.response",
    "adapter.anthropic",
)

PYTHON_ONLY_STAGES = ("guard", "parse")

COMPONENTS = ("stages", "mmr", "wal", "record", "sha256")

COMPONENT_UNITS = {  # (n1, n2) units per driver run
    "stage": (200, 600),
    "mmr": (1000, 3000),
    "wal": (1000, 3000),
    "record": (200, 600),
    "sha256": (64, 192),  # blocks per message, hashed SHA256_CALLS times
}


def component_cases(components: Iterable[str], impls: Sequence[str]) -> list[dict[str, Any]]:
    """The driver cases of `components` for the twins `impls`; ConfigError on an unknown name."""
    cases: list[dict[str, Any]] = []
    for comp in components:
        if comp.startswith("stage."):  # one stage: stage.auth, stage.waf.4k, ...
            st = comp.removeprefix("stage.")
            if st in PYTHON_ONLY_STAGES:
                cases += (
                    [{"kind": "stage", "stage": st, "impl": "python", "api": "call"}]
                    if "python" in impls
                    else []
                )
            elif st in STAGES:
                cases += [{"kind": "stage", "stage": st, "impl": i, "api": "call"} for i in impls]
            else:
                raise ConfigError(
                    f"component {comp!r}: no such stage; stages: {', '.join(PYTHON_ONLY_STAGES + STAGES)}"
                )
            continue
        if comp not in COMPONENTS:
            raise ConfigError(f"component {comp!r}: expected one of {', '.join(COMPONENTS)} or stage.NAME")
        if comp == "stages":
            for st in PYTHON_ONLY_STAGES:
                if "python" in impls:
                    cases.append({"kind": "stage", "stage": st, "impl": "python", "api": "call"})
            for st in STAGES:
                cases += [{"kind": "stage", "stage": st, "impl": i, "api": "call"} for i in impls]
        elif comp == "mmr":
            cases += [{"kind": "mmr", "impl": i, "api": "per_leaf"} for i in impls]
            cases += [{"kind": "mmr", "impl": i, "api": "batch"} for i in impls]
        elif comp == "wal":
            cases += [
                {"kind": "wal", "impl": i, "api": a, "size": 256}
                for a in ("per_record", "batch")
                for i in impls
            ]
        elif comp == "record":
            cases += [{"kind": "record", "impl": i, "api": "call"} for i in impls]
        elif comp == "sha256":
            cases += [
                {"kind": "sha256", "impl": i, "api": "block", "calls": SHA256_CALLS}
                for i in ("openssl", "rust")
            ]
    return cases


_UNIT = {"stage": "call", "mmr": "leaf", "wal": "record", "record": "record", "sha256": "block"}


def _component_name(c: dict[str, Any]) -> str:
    return f"stage.{c['stage']}" if c["kind"] == "stage" else c["kind"]


def _component_blocks(c: dict[str, Any], n1: int, n2: int) -> tuple[float | None, str | None]:
    """SHA-256 blocks per unit of a driver case, and which implementation hashes them."""
    impl = c.get("impl")
    hash_impl = "openssl" if impl == "python" else "rust"
    if c["kind"] == "sha256":
        return 1.0, impl
    if c["kind"] == "stage":
        return (
            (float(sha256_blocks(len("sk-bench-key-3"))), hash_impl) if c["stage"] == "auth" else (0.0, None)
        )
    if c["kind"] == "wal":
        return 0.0, None  # frames carry a CRC-32, no hash
    if c["kind"] == "mmr":  # each leaf H(0x00 || 32-byte leaf) is one block, plus the new nodes
        return (n2 - n1 + mmr_node_blocks(n2) - mmr_node_blocks(n1)) / (n2 - n1), hash_impl
    if c["kind"] == "record":
        return None, hash_impl  # counted from the driver's records: _record_blocks
    return None, None


def _record_blocks(n1: int, n2: int) -> float:
    """SHA-256 blocks per audit record of the `record` driver: request and response body
    hashes, the leaf hash of each record, and the MMR's new nodes."""
    from gateway.audit.job import RecordAssembler
    from gateway.twins import Switches
    from harness.bench._instr_driver import record_jobs

    asm = RecordAssembler(Switches("py"))  # both twins assemble the same bytes
    jobs = record_jobs(n2)
    leaf = [sha256_blocks(1 + len(asm.payload(i, j))) for i, j in enumerate(jobs)]
    bodies = sha256_blocks(len(jobs[0].request_body)) + sha256_blocks(len(jobs[0].response))
    nodes = mmr_node_blocks(n2) - mmr_node_blocks(n1)
    return bodies + (sum(leaf[n1:]) + nodes) / (n2 - n1)


def measure_components(
    components: Sequence[str] = COMPONENTS,
    impls: Sequence[str] = ("python", "rust"),
    repeat: int = 2,
    sizes: dict[str, tuple[int, int]] | None = None,
    log: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> InstructionRun:
    """Instructions per unit of each component twin: a driver under Cachegrind at two sizes
    (harness/bench/_instr_driver.py), differenced like requests. Units: a stage call, an MMR
    leaf, a WAL record, an audit record (entropy + record + hashes + MMR + WAL), a SHA-256 block.
    `jobs` > 1 runs that many driver lives at once (an instruction count does not depend on
    what else runs; the wall time does)."""
    cg.valgrind()
    if not isinstance(repeat, int) or repeat < 1:
        raise ConfigError(f"repeat: need an integer >= 1, got {repeat!r}")
    for i in impls:
        if i not in ("python", "rust"):
            raise ConfigError(f"impl {i!r}: expected python or rust")
    from harness.bench._runner import require_release

    if "rust" in impls:
        require_release()
    sizes = {**COMPONENT_UNITS, **(sizes or {})}
    cases = component_cases(components, impls)
    log = log or (lambda s: None)
    precompile()
    cal = sha256_calibration()
    run = InstructionRun(sha256=cal)
    t_start = time.monotonic()
    rec_blocks: dict[tuple[int, int], float] = {}

    def one(rep: int, c: dict[str, Any]) -> dict[str, Any]:
        n1, n2 = sizes[c["kind"]]
        name = _component_name(c)
        head = {
            "component": name,
            "impl": c["impl"],
            "api": c["api"],
            "unit": _UNIT[c["kind"]],
            "repeat": rep,
            "n1": n1,
            "n2": n2,
            "label": cg.LABEL,
        }
        case = {**c, "sizes": [n1, n2]}
        try:
            a = run_driver(case, n1)
            b = run_driver(case, n2)
        except (GatewayLabError, subprocess.TimeoutExpired) as e:
            log(f"{name}.{c['impl']}.{c['api']} r{rep}: failed: {one_line(e)}")
            return {**head, "status": "failed", "error": one_line(e)}
        units = (n2 - n1) * c.get("calls", 1)
        per = (b.total - a.total) / units
        blocks, himpl = _component_blocks(c, n1, n2)
        if c["kind"] == "record":
            blocks = rec_blocks[(n1, n2)]
        by_symbol = (b.matching(cg.SHA256_SYMBOLS) - a.matching(cg.SHA256_SYMBOLS)) / units
        log(f"{name}.{c['impl']}.{c['api']} r{rep}: {per:,.0f} Ir/{_UNIT[c['kind']]}")
        return {
            **head,
            "status": "ok",
            "error": "",
            "ir_n1": a.total,
            "ir_n2": b.total,
            "ir_per_unit": per,
            **skew_fields(blocks, himpl, per, by_symbol, cal),
        }

    for c in cases:
        if c["kind"] == "record" and sizes["record"] not in rec_blocks:
            rec_blocks[sizes["record"]] = _record_blocks(*sizes["record"])
    todo = [(rep, c) for rep in range(repeat) for c in cases]
    if jobs <= 1:
        run.components += [one(rep, c) for rep, c in todo]
    else:  # counts do not depend on what else runs: the driver runs may overlap
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            run.components += list(pool.map(lambda t: one(*t), todo))
    from harness.results.meta import collect

    run.meta = collect(
        parameters={"components": list(components), "impls": list(impls), "repeat": repeat, "jobs": jobs}
    )
    run.meta.update(
        label=cg.LABEL,
        valgrind=cg.version(),
        sizes=sizes,
        repeat=repeat,
        env=dict(cg.ENV),
        wall_s=time.monotonic() - t_start,
    )
    return run
