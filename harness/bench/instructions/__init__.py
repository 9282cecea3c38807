"""`gatewaylab bench instructions`: user-space instructions per request (and per component
operation), counted exactly by Cachegrind.

    gatewaylab bench instructions --modes py,py+rs,rs-core,rs-server --governance on,off \\
        [--targets noveum] [--repeat 2] [--n1 200 --n2 600] [--json OUT] [--out DIR]
    gatewaylab bench instructions --components stages,mmr,wal,record,sha256 [--impl both] [--repeat 2]

    from harness.bench import instructions
    run = instructions.measure(targets=("py", "rs-server"), governance=("on", "off"), n1=200, n2=600, repeat=2)
    run.per_request("rs-server")                           # median Ir per request, governance on
    run.ratio("rs-server", "rs-server@off")                # rs-server against its own passthrough
    run.ratio("py", "py+rs")                               # names: target, target@governance
    run.ratio("py", "py+rs", without_sha_skew=True)        # an estimate with SHA-256 as natively
    comps = instructions.measure_components(("stages", "mmr"), repeat=2)
    comps.ratio("stage.auth.python", "stage.auth.rust")    # a twin's advantage, per call
    comps.ratio("mmr.rust.per_leaf", "mmr.rust.batch")     # names: component.impl[.api]
    run.frame(), comps.frame("instr_components")           # tidy tables (harness.schema)
    run.summary                                            # median/min/max/spread + SHA-256 skew

Method (docs/architecture.md "Measurements"). Each target runs under `valgrind
--tool=cachegrind --cache-sim=no --trace-children=yes` (the gateway's processes only: the
native mock and load generator run natively, pinned to their own cores by the hardware
profile), from start to a graceful exit, twice: once serving N2 requests, then once N1 (closed
loop, c = 1, one probe request before each). With the audit on, the gateway is stopped only
once its WAL holds a record of every request (read from the file, not by polling the
gateway) and one `/audit/root` request counts them, so the background audit work of all of
them is in the count; the ledger is checked again afterwards. The smaller run is kept serving as long as the
larger one did, so work on a timer (uvicorn's 10 Hz tick: ~120 k Ir a second on an idle py
gateway) is the same in both. Instructions per request = (I(N2) - I(N1)) / (N2 - N1):
start-up, the probe, timers and shutdown cancel. The checkout is byte-compiled first, and
Python runs with PYTHONHASHSEED=0, so no run counts a compiler or a different hash seed. Components run a small
driver (harness/bench/_instr_driver.py) the same way at two sizes.

What the count sees: every instruction the gateway executes in user space, in every thread,
the audit path included; it does not move with the machine's load. What it cannot see: time
spent waiting (GIL, locks, the event loop idle), system calls and kernel work, cache misses
and branch mispredictions. The timing views keep those.

The SHA-256 skew. Valgrind's simulated CPU hides SHA-NI, so SHA-256 runs its portable path
under Cachegrind (OpenSSL: ~1,790 instructions per 64-byte block) while natively this CPU
may use SHA-NI. Every figure carries, beside it, the SHA-256 blocks hashed per unit (counted
from the payload sizes: auth hashes the key, the record hashes the request and response
bodies, the MMR hashes each leaf and each new node), their instructions under Cachegrind,
their native cost (exact with `perf stat` where the machine has hardware counters, else an
estimate from native timing) and the difference, the skew. A Cachegrind count is never set
against a native timing as the same work.

JSON (`--json OUT`): {"label", "rows": [per target x governance x repeat], "summary":
[per target x governance: median, min, max, spread, skew], "components", "component_summary",
"sha256": {the calibration}, "unfollowable": [{"target", "reason"}], "meta"}; rows follow
harness.schema.INSTRUCTIONS / INSTR_COMPONENTS (`--out DIR` also writes them as Parquet in a
run folder).
"""

from __future__ import annotations

import argparse
import sys
import time

from gateway.errors import ConfigError
from harness.bench.instructions import _cachegrind as cg
from harness.bench.instructions._components import COMPONENTS, component_cases, measure_components
from harness.bench.instructions._requests import (
    DEFAULT_PROFILE,
    GOVERNANCE,
    N1,
    N2,
    RUNG_TARGETS,
    check_sizes,
    measure,
    specs,
)
from harness.bench.instructions._results import (
    PEER_GOVERNANCE,
    InstructionRun,
    component_key,
    key,
    markdown,
)
from harness.bench.instructions._sha256 import sha256_blocks, sha256_calibration

__all__ = [
    "COMPONENTS",
    "GOVERNANCE",
    "PEER_GOVERNANCE",
    "RUNG_TARGETS",
    "InstructionRun",
    "component_key",
    "key",
    "markdown",
    "measure",
    "measure_components",
    "sha256_blocks",
    "sha256_calibration",
    "add_arguments",
    "run",
]


# ---------------------------------------------------------------------------------------------
# the command line (`gatewaylab bench instructions`; the `%bench` magic runs the same)
# ---------------------------------------------------------------------------------------------
def _csv(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modes", nargs="+", help="rungs: py,py+rs,rs-core,rs-server (default: all four)")
    p.add_argument(
        "--targets", nargs="+", help="more targets (peers: noveum, litellm-chat, portkey, ...; or rungs)"
    )
    p.add_argument(
        "--governance", nargs="+", help="rungs: on,off,stages-only,audit-only,on-unlimited (default on)"
    )
    p.add_argument(
        "--components",
        nargs="*",
        help=f"also (or, with no --modes/--targets, only) per-component counts: {','.join(COMPONENTS)} "
        "or one stage (stage.auth, stage.waf.4k, ...); no value: all",
    )
    p.add_argument("--impl", choices=["python", "rust", "both"], default="both", help="components' twins")
    p.add_argument("--n1", type=int, default=N1, help=f"requests in the smaller run (default {N1})")
    p.add_argument("--n2", type=int, default=N2, help=f"requests in the larger run (default {N2})")
    p.add_argument("--repeat", type=int, default=2, help="repeats (default 2)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help=f"hardware profile (default {DEFAULT_PROFILE})")
    p.add_argument(
        "--server", choices=["uvicorn", "granian"], default="uvicorn", help="the Python rungs' server"
    )
    p.add_argument("--json", metavar="OUT", help="write the result JSON here")
    p.add_argument(
        "--out", metavar="DIR", help="also write a run folder under DIR (Parquet tables, report.md)"
    )


def run(args: argparse.Namespace) -> int:
    modes, extra = _csv(args.modes), _csv(args.targets)
    comps = None if args.components is None else (_csv(args.components) or list(COMPONENTS))
    targets = list(dict.fromkeys(modes + extra)) or ([] if comps else list(RUNG_TARGETS))
    governance = _csv(args.governance) or ["on"]
    try:
        for m in modes:
            if m not in RUNG_TARGETS:
                raise ConfigError(f"--modes: {m!r} is not a rung; expected {', '.join(RUNG_TARGETS)}")
        if targets:
            specs(targets, governance)
            check_sizes(args.n1, args.n2, args.repeat)
        if comps:
            component_cases(comps, ["python"])
        if args.repeat < 1:
            raise ConfigError(f"--repeat: need an integer >= 1, got {args.repeat}")
        cg.valgrind()
    except ConfigError as e:
        print(f"gatewaylab bench instructions: {e}", file=sys.stderr)
        return 2
    except cg.CachegrindUnavailable as e:
        print(f"gatewaylab bench instructions: error: {e}", file=sys.stderr)
        return 1

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    t0 = time.monotonic()
    result = InstructionRun()
    if targets:
        result = measure(
            targets, governance, args.n1, args.n2, args.repeat, args.profile, args.server, log=log
        )
    if comps:
        impls = ["python", "rust"] if args.impl == "both" else [args.impl]
        result = result.merge(measure_components(comps, impls, args.repeat, log=log))
    result.meta["wall_s"] = time.monotonic() - t0
    print(markdown(result))
    print(f"\nwall time: {result.meta['wall_s']:.0f} s")
    if args.out:
        print(f"run folder: {result.save(args.out)}")
    if args.json:
        from harness.bench._runner import write_json

        write_json(args.json, result.to_json())
        print(f"result JSON: {args.json}", file=sys.stderr)
    bad = [r for r in result.rows + result.components if r["status"] == "failed"]
    return 1 if bad else 0
