"""The work gates' measurements: instruction-count ratios that a notebook measures in its own
run (Cachegrind, `harness.bench.instructions`) and that its `work` gates check
(data/baselines/README.md, "Work gates").

    from harness import work_gates
    w = work_gates.measure("07_rust_ladder", "ci")
    w.metrics              # {name: harness.notebooks.metric(...)}, what write_metrics takes
    w.run                  # the InstructionRun they came from (tables, figures)

One measurement per notebook: one `measure` (requests) or `measure_components` call for
every target the notebook's ratios need. The notebooks call this module, and so do
`python -m harness.notebooks --work-only` (the work gates alone, no papermill: a cheap way to
record many runs) and the injection tests (tests/notebooks/test_work_gate_injection.py), so a
gate, its recorded runs and its injected regressions read the same measurement.

An instruction count does not move with the machine's load, so these ratios need no
confirmation: a work gate that trips fails at once (harness.notebooks, "Confirmation").
What a count cannot see (waits, system calls, cache misses) stays with the timing gates.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.bench import instructions as I

# Sizes per profile. ci keeps the notebooks' added wall time to a few minutes; the two-size
# difference cancels start-up, so small sizes cost precision only through the per-request
# noise of a Python gateway (the recorded runs show it; the gates' margins cover it).
# `ladder`: notebook 07's governance settings per rung, where narrower than all of
# LADDER_GOVERNANCE. ci counts every rung with everything on (the rung gates) and rs-server
# also with governance off and the stages alone (its passthrough gates): one configuration
# under Cachegrind takes 25-55 s on this loaded machine (two gateway lives), so full counts
# every rung with every setting, which the instructions view of 07 splits into parts.
SIZES: dict[str, dict[str, Any]] = {
    "ci": dict(
        n1=50,
        n2=150,
        repeat=1,
        units={"stage": (50, 150), "mmr": (500, 1500), "wal": (300, 900), "record": (50, 150)},
        ladder={
            "py": ("on",),
            "py+rs": ("on",),
            "rs-core": ("on",),
            "rs-server": ("on", "off", "stages-only"),
        },
    ),
    "full": dict(n1=200, n2=600, repeat=2, units=None, ladder=None),
}

# component drivers run this many at once (a count does not depend on what else runs)
JOBS = min(2, os.cpu_count() or 1)
RUNGS = ("py", "py+rs", "rs-core", "rs-server")
# notebook 07: every rung with each governance setting, from which the instructions view
# stacks the parts of a request (passthrough, shell and crossing, stages, ledger)
LADDER_GOVERNANCE = ("on", "off", "stages-only", "audit-only")
# notebook 06: the twins whose per-call advantage is gated: metric suffix -> component
TWINS = {
    "auth": "stage.auth",
    "waf_short": "stage.waf.short",
    "waf_4k": "stage.waf.4k",
    "ratelimit": "stage.ratelimit",
    "record": "record",
    "wal_record": "wal",
}


@dataclass
class WorkMeasurement:
    notebook: str
    profile: str
    run: I.InstructionRun
    metrics: dict[str, dict] = field(default_factory=dict)


def _metric(run: I.InstructionRun, a: str, b: str, desc: str) -> dict:
    """median(a) / median(b), with the widest and narrowest ratio the repeats allow."""
    from harness.notebooks import metric

    sa, sb = run.stats(a), run.stats(b)
    return metric(
        sa["median"] / sb["median"],
        sa["min"] / sb["max"],
        sa["max"] / sb["min"],
        unit="ratio",
        desc=f"{desc} (Cachegrind, exact; median, min-max over repeats)",
    )


def _component_key(component: str, impl: str) -> str:
    if component == "wal":
        return I.component_key("wal", impl, "per_record")
    return I.component_key(component, impl, "call")


def noveum_installed() -> bool:
    """Noveum is measured beside the rungs where it is installed (`make peers`)."""
    from harness import peers

    return peers.installed_version("noveum") is not None


def measure_01(profile: str, log: Callable[[str], None] | None = None) -> WorkMeasurement:
    """01: the Rust MMR's per-leaf advantage over the Python twin, and the batch API's over
    the per-leaf API, in instructions per leaf."""
    s = SIZES[profile]
    sizes = {"mmr": s["units"]["mmr"]} if s["units"] else None
    run = I.measure_components(("mmr",), ("python", "rust"), s["repeat"], sizes=sizes, log=log, jobs=JOBS)
    m = {
        "mmr_work_rust_over_python_per_leaf": _metric(
            run,
            "mmr.python.per_leaf",
            "mmr.rust.per_leaf",
            "instructions per leaf, Python per-leaf append / Rust per-leaf append",
        ),
        "mmr_work_batch_over_per_leaf": _metric(
            run,
            "mmr.rust.per_leaf",
            "mmr.rust.batch",
            "instructions per leaf, Rust per-leaf append / Rust append_many",
        ),
    }
    return WorkMeasurement("01_mmr_speedup", profile, run, m)


def measure_06(
    profile: str, log: Callable[[str], None] | None = None, twins: tuple[str, ...] | None = None
) -> WorkMeasurement:
    """06: each twin's advantage per call (per audit record, per WAL record), Python over Rust;
    `twins` narrows it to some of TWINS (the injection tests)."""
    s = SIZES[profile]
    names = tuple(TWINS) if twins is None else twins
    comps = tuple(TWINS[n] for n in names)
    run = I.measure_components(comps, ("python", "rust"), s["repeat"], sizes=s["units"], log=log, jobs=JOBS)
    m = {
        f"twin_work_{name}": _metric(
            run,
            _component_key(TWINS[name], "python"),
            _component_key(TWINS[name], "rust"),
            f"instructions per {'record' if name in ('record', 'wal_record') else 'call'}, "
            f"{TWINS[name]} Python twin / Rust twin",
        )
        for name in names
    }
    return WorkMeasurement("06_component_ablation", profile, run, m)


def measure_07(
    profile: str,
    log: Callable[[str], None] | None = None,
    noveum: bool | None = None,
    rungs: tuple[str, ...] = RUNGS,
    governance: tuple[str, ...] = LADDER_GOVERNANCE,
) -> WorkMeasurement:
    """07: each rung's advantage in instructions per request over the rung below it, every
    stage and the ledger on, and rs-server against its own passthrough; measured with every
    governance setting of LADDER_GOVERNANCE (the instructions view's parts) and Noveum as
    shipped where it is installed. `rungs`/`governance` narrow it (the injection tests): the
    ratios are those the narrower measurement holds."""
    s = SIZES[profile]
    noveum = noveum_installed() if noveum is None else noveum
    targets = list(rungs) + (["noveum"] if noveum else [])
    narrow = {r: g for r, g in (s["ladder"] or {}).items() if r in rungs}
    run = I.measure(targets, governance, s["n1"], s["n2"], s["repeat"], log=log, governance_of=narrow)
    return WorkMeasurement("07_rust_ladder", profile, run, ladder_metrics(run, rungs, governance))


def ladder_metrics(run: I.InstructionRun, rungs=RUNGS, governance=LADDER_GOVERNANCE) -> dict[str, dict]:
    """The gated ratios of notebook 07 that `run` (of `rungs` x `governance`) holds."""
    m = {}
    for a, b in zip(RUNGS, RUNGS[1:], strict=False):
        if a in rungs and b in rungs and "on" in governance:
            ta, tb = (x.replace("+", "").replace("-", "") for x in (a, b))
            m[f"work_{ta}_over_{tb}"] = _metric(
                run, a, b, f"instructions per request {a} / {b}, every stage and the ledger on"
            )
    if "rs-server" in rungs and {"stages-only", "off"} <= set(governance):
        m["work_rsserver_stages_over_passthrough"] = _metric(
            run,
            "rs-server@stages-only",
            "rs-server@off",
            "instructions per request rs-server with every stage and no ledger / rs-server@off (its passthrough)",
        )
    if "rs-server" in rungs and {"on", "off"} <= set(governance):
        m["work_rsserver_over_passthrough"] = _metric(
            run,
            "rs-server",
            "rs-server@off",
            "instructions per request rs-server, every stage and the ledger on / rs-server@off (its passthrough)",
        )
    return m


# The ratios each notebook's work measurement gives (and its work gates read).
GATED: dict[str, tuple[str, ...]] = {
    "01_mmr_speedup": ("mmr_work_rust_over_python_per_leaf", "mmr_work_batch_over_per_leaf"),
    "06_component_ablation": tuple(f"twin_work_{n}" for n in TWINS),
    "07_rust_ladder": (
        "work_py_over_pyrs",
        "work_pyrs_over_rscore",
        "work_rscore_over_rsserver",
        "work_rsserver_over_passthrough",
        "work_rsserver_stages_over_passthrough",
    ),
}

MEASURES: dict[str, Callable[..., WorkMeasurement]] = {
    "01_mmr_speedup": measure_01,
    "06_component_ablation": measure_06,
    "07_rust_ladder": measure_07,
}


def measure(
    notebook: str, profile: str = "ci", log: Callable[[str], None] | None = None, gated_only: bool = False
) -> WorkMeasurement:
    """The work-gate measurement of `notebook` (KeyError when it has none: MEASURES).
    `gated_only` leaves out what no gate reads (07: Noveum), as `--work-only` does."""
    if profile not in SIZES:
        raise ValueError(f"profile {profile!r}: expected one of {list(SIZES)}")
    if notebook == "07_rust_ladder" and gated_only:
        return measure_07(profile, log=log, noveum=False)
    return MEASURES[notebook](profile, log=log)
