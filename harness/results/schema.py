"""The results schema: the one documented source of truth for every sweep table.

A sweep run folder holds these tidy Parquet tables (one row per measurement):

- ``cells.parquet``     one row per sweep cell (mode x switches x shell x concurrency) and repeat
- ``baseline.parquet``  one row per concurrency and repeat: load generator -> mock directly
- ``capacity.parquet``  the load generator's capacity against the mock (so it is never the
                        bottleneck unnoticed), reported beside every sweep
- ``gil_threads.parquet`` GIL view 1 (sampled): one row per cell, repeat and thread
- ``gil_entries.parquet`` GIL view 2 (exact): one row per cell, repeat and Rust entry point
- ``workers.parquet``   one row per cell, repeat and gateway worker: its CPU and GIL views
- ``instructions.parquet`` / ``instr_components.parquet``  `gatewaylab bench instructions`:
                        instructions per request (per target, governance, repeat) and per
                        unit of a component, each with its SHA-256 skew

Units are in the column names (``_us`` microseconds, ``_s`` seconds, ``_mb`` MiB). Every
GIL/loop column belongs to a view whose label (exact or sampled) is in ``LABELS``. A probe
that could not run leaves its columns null and says why in ``probes_missing``
("probe: reason; ..."), never silently empty. Version: ``SCHEMA_VERSION``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SCHEMA_VERSION = 1

_PCTS = ("p50", "p90", "p95", "p99", "p999", "max")

# name -> (pandas dtype, description)
CELLS: dict[str, tuple[str, str]] = {
    "run_id": ("string", "run folder name"),
    "cell": (
        "string",
        "cell key: mode|switches|shell[|gov=G][|trace=T][|w=N][|probes=on][|up=U][|py=PYTHON]|c=N (or rate=R, open loop)",
    ),
    "mode": (
        "string",
        "target: a rung's mode (py, py+rs, rs-core, rs-server) or a peer target (litellm, portkey, ...)",
    ),
    "governance": (
        "string",
        "rungs: on (every stage, audit on), off (no stage, no audit), stages-only, audit-only or "
        "on-unlimited (on with a key without rpm/tpm: the limiter returns at once); "
        "peers: shipped (what that includes: the gov_* columns)",
    ),
    **{
        f"gov_{f}": ("bool", f"the target ran {what} on every request (peers: as their adapter starts them)")
        for f, what in (
            ("auth", "a check of the client's key"),
            ("waf", "a WAF over the prompt"),
            ("ratelimit", "per-key rate limits it could refuse at"),
            ("ledger", "an audit record into an fsynced log"),
            ("tracing", "span or per-request telemetry export"),
        )
    },
    "governance_notes": ("string", "how the target runs each governance feature, in words"),
    "claimed_stages": (
        "string",
        "rungs: the stages the label claims ran for every request (gateway_stage_runs_total names)",
    ),
    "stage_runs": ("string", "rungs: JSON {stage: times it ran in the window}, from the gateway's counters"),
    "stage_check": (
        "string",
        "rungs: the claimed stages' counts, or why a claimed stage did not run once per request "
        "(the cell then failed); peers: n/a",
    ),
    "expected_errors": ("string", "the errors the cell set out to cause ('none': any error fails the cell)"),
    "errors_by_kind": ("string", "JSON {kind: n} of the load generator's errors in the window"),
    "upstream": ("string", "the mock upstream's name in a sweep over several ('' = the one upstream)"),
    "probes": (
        "string",
        "off: a throughput cell (no probe inside the target); on: a GIL/loop view cell (interpreter rungs)",
    ),
    "probes_ran": ("string", "every probe that ran during the cell, with its rate"),
    "tracing": (
        "string",
        "rungs: off, on or sampled:R (OpenTelemetry spans to a local OTLP receiver); peers: off",
    ),
    "python": (
        "string",
        "the interpreter the gateway ran on: implementation, version, build flags (GIL or "
        "free-threaded, JIT), e.g. 'CPython 3.12.1 GIL'; '' where none is on the request path "
        "(rs-server, peers); --pythons makes it an axis (docs/interpreters.md)",
    ),
    "target_kind": ("string", "rung (our gateway) or peer (harness.peers)"),
    "route": ("string", "chat (/v1/chat/completions) or messages (/v1/messages)"),
    "peer_version": ("string", "a peer's installed version (install manifest); '' for rungs"),
    "path_check": (
        "string",
        "what one real answer said about the path that served it (peers: x-litellm-rust=...)",
    ),
    "switches": ("string", "label of the per-component overrides on top of the mode ('' = none)"),
    "impl": ("string", "resolved component=python|rust list, comma-separated"),
    "shell": ("string", "ASGI shell: asgi or fastapi"),
    "server": ("string", "ASGI server: uvicorn or granian"),
    "workers": ("int64", "gateway processes (--workers; 1 = one plain process; docs/workers.md)"),
    "worker_cpus": ("string", "where the gateway ran: its cpus, or w<k>:<cpu> per worker"),
    "clamped": ("bool", "the machine is smaller than the profile or the worker count asks (see clamp_notes)"),
    "clamp_notes": (
        "string",
        "what was clamped: the profile's notes, workers sharing cores with each other or "
        "with the mock and load generator",
    ),
    "concurrency": ("int64", "closed-loop concurrency c (0 in an open-loop cell)"),
    "rate": ("float64", "open-loop arrival rate, req/s (null in a closed-loop cell)"),
    "stream": ("bool", "requests sent with stream: true (TTFB recorded)"),
    "repeat": ("int64", "repeat index, 0-based"),
    "status": (
        "string",
        "ok (successful answers, no error the cell did not set out to cause, every claimed stage ran) | "
        "failed | skipped (an open-loop ladder stopped below this rate) | interrupted",
    ),
    "error": ("string", "why a cell failed ('' when ok)"),
    "loop": ("string", "closed (fixed concurrency) or open (fixed rate)"),
    "duration_s": ("float64", "measured window length (warm-up excluded)"),
    "requests": ("int64", "completed 2xx responses in the window"),
    "errors": ("int64", "failed requests in the window"),
    "error_share": ("float64", "failed / finished requests in the window"),
    "sustained": (
        "bool",
        "open loop: p99 at most the cap and error share under the limit (sweep parameters)",
    ),
    "rps": ("float64", "throughput: completed 2xx responses per second"),
    **{f"lat_{p}_us": ("float64", f"gateway latency {p} (HDR)") for p in _PCTS},
    **{f"base_{p}_us": ("float64", f"direct-to-mock latency {p}, same concurrency, same run") for p in _PCTS},
    **{f"ovh_{p}_us": ("float64", f"overhead {p}: gateway {p} - direct {p}") for p in _PCTS if p != "max"},
    "base_rps": ("float64", "direct-to-mock throughput at the same concurrency"),
    **{f"ttfb_{p}_us": ("float64", f"streaming: time to first body byte {p} (HDR)") for p in ("p50", "p99")},
    **{f"base_ttfb_{p}_us": ("float64", f"streaming: direct-to-mock TTFB {p}") for p in ("p50", "p99")},
    **{
        f"ovh_ttfb_{p}_us": ("float64", f"streaming: TTFB overhead {p} (gateway - direct)")
        for p in ("p50", "p99")
    },
    "cpu_user_s": ("float64", "gateway process tree user CPU seconds in the window (/proc)"),
    "cpu_sys_s": ("float64", "gateway process tree system CPU seconds in the window (/proc)"),
    "cpu_cores": ("float64", "gateway CPU: (user+sys) seconds per second"),
    "cpu_us_per_req": ("float64", "gateway CPU microseconds per successful (2xx) answer"),
    "rss_peak_mb": ("float64", "peak RSS of the gateway process tree during the window (sampled 20 Hz)"),
    "rss_hwm_mb": ("float64", "gateway main process VmHWM, reset at window start (exact)"),
    "gil_wait_count": ("float64", "GIL view 3 (exact): acquisitions timed by the probe thread"),
    "gil_wait_p50_us": ("float64", "GIL view 3 (exact): deadline-to-GIL latency p50"),
    "gil_wait_p99_us": ("float64", "GIL view 3 (exact): p99"),
    "gil_wait_max_us": ("float64", "GIL view 3 (exact): max"),
    "gil_wait_cal_p50_us": ("float64", "GIL view 3: idle calibration p50 (OS wake-up + uncontended acquire)"),
    "loop_lag_p50_us": ("float64", "GIL view 4 (exact): event-loop call_later lateness p50"),
    "loop_lag_p99_us": ("float64", "GIL view 4 (exact): p99"),
    "loop_lag_max_us": ("float64", "GIL view 4 (exact): max"),
    "native_calls": ("float64", "GIL view 2 (exact): Rust entry-point calls in the window"),
    "native_hold_s": ("float64", "GIL view 2 (exact): seconds Rust entry points held the GIL"),
    "native_detached_s": ("float64", "GIL view 2 (exact): seconds Rust entry points ran detached"),
    "native_wait_s": ("float64", "GIL view 2 (exact): seconds waiting to re-acquire the GIL"),
    "native_max_wait_us": ("float64", "GIL view 2 (exact): longest re-acquire wait"),
    "pyspy_samples": (
        "float64",
        "GIL view 1 (sampled): py-spy sampling ticks in the window (rate x seconds)",
    ),
    "gil_held_share": ("float64", "GIL view 1 (sampled): share of samples in which any thread held the GIL"),
    "gil_main_share": ("float64", "GIL view 1 (sampled): share held by the event-loop (main) thread"),
    "gil_other_share": ("float64", "GIL view 1 (sampled): share held by all other threads"),
    "probes_missing": ("string", "'probe: reason; ...' for every probe that could not run"),
    "flamegraph_svg": ("string", "relative path of the py-spy --native flamegraph (on request)"),
    "speedscope_json": ("string", "relative path of the py-spy speedscope profile (on request)"),
    "flamegraph_label": ("string", "how the py-spy flamegraph was made: sampled, rate, process, threads"),
    "perf_flamegraph_svg": (
        "string",
        "relative path of the perf flamegraph, every thread (on request; rungs with native threads, peers)",
    ),
    "perf_speedscope_json": ("string", "relative path of the perf profile as speedscope JSON (on request)"),
    "perf_flamegraph_label": (
        "string",
        "how the perf flamegraph was made: sampled (perf cpu-clock, N Hz), process, threads and their samples",
    ),
    "scalene_json": ("string", "relative path of the scalene profile (on request)"),
    "gateway_pid": ("float64", "gateway process id"),
    "started_at": ("string", "UTC ISO time the cell's window started"),
}

BASELINE: dict[str, tuple[str, str]] = {
    "run_id": ("string", "run folder name"),
    "concurrency": ("int64", "closed-loop concurrency c (0 in an open-loop row)"),
    "rate": ("float64", "open-loop arrival rate, req/s"),
    "route": ("string", "chat or messages: the mock route loaded directly"),
    "upstream": ("string", "the mock upstream's name in a sweep over several ('' = the one upstream)"),
    "loop": ("string", "closed or open"),
    "repeat": ("int64", "repeat index"),
    "status": ("string", "ok | failed"),
    "error": ("string", "error message ('' when ok)"),
    "duration_s": ("float64", "measured window"),
    "requests": ("int64", "completed responses"),
    "errors": ("int64", "failed requests"),
    "rps": ("float64", "throughput load -> mock"),
    **{f"lat_{p}_us": ("float64", f"direct latency {p}") for p in _PCTS},
    **{
        f"ttfb_{p}_us": ("float64", f"direct time to first body byte {p} (streaming)") for p in ("p50", "p99")
    },
}

CAPACITY: dict[str, tuple[str, str]] = {
    "run_id": ("string", "run folder name"),
    "concurrency": ("int64", "concurrency used to saturate the mock"),
    "status": ("string", "ok | failed"),
    "error": ("string", "error message"),
    "rps": ("float64", "load generator -> mock throughput (capacity)"),
    "lat_p50_us": ("float64", "latency p50"),
    "lat_p99_us": ("float64", "latency p99"),
    "max_gateway_rps": ("float64", "highest gateway throughput in the sweep"),
    "headroom": ("float64", "capacity / max gateway rps (>> 1: the load generator is not the bottleneck)"),
}

GIL_THREADS: dict[str, tuple[str, str]] = {
    "run_id": ("string", "run folder name"),
    "cell": ("string", "cell key"),
    "mode": ("string", "mode"),
    "switches": ("string", "switches label"),
    "shell": ("string", "shell"),
    "concurrency": ("int64", "concurrency"),
    "repeat": ("int64", "repeat"),
    "thread": ("string", "thread name (tid) as py-spy reports it"),
    "is_main": ("bool", "the event-loop thread (the process's main thread)"),
    "samples": ("int64", "samples in which this thread held the GIL"),
    "share": ("float64", "samples / sampling ticks (sampled ownership share)"),
}

GIL_ENTRIES: dict[str, tuple[str, str]] = {
    "run_id": ("string", "run folder name"),
    "cell": ("string", "cell key"),
    "mode": ("string", "mode"),
    "switches": ("string", "switches label"),
    "shell": ("string", "shell"),
    "concurrency": ("int64", "concurrency"),
    "repeat": ("int64", "repeat"),
    "entry": ("string", "Rust entry point"),
    "calls": ("int64", "calls in the window"),
    "hold_us": ("float64", "microseconds holding the GIL"),
    "detached_us": ("float64", "microseconds detached"),
    "reacquire_wait_us": ("float64", "microseconds waiting to re-acquire"),
    "max_reacquire_wait_us": ("float64", "longest re-acquire wait (since the previous reset)"),
}

WORKERS: dict[str, tuple[str, str]] = {
    "run_id": ("string", "run folder name"),
    "cell": ("string", "cell key"),
    "mode": ("string", "mode"),
    "switches": ("string", "switches label"),
    "shell": ("string", "shell"),
    "governance": ("string", "governance"),
    "workers": ("int64", "gateway processes in the cell"),
    "concurrency": ("int64", "concurrency"),
    "rate": ("float64", "open-loop rate (null in closed loop)"),
    "repeat": ("int64", "repeat"),
    "worker": ("int64", "worker index (0 for a one-process gateway)"),
    "pid": ("int64", "the worker's pid"),
    "cpus": ("string", "the cpus the worker was pinned to"),
    "clamped": ("bool", "as in cells"),
    "cpu_user_s": ("float64", "the worker's user CPU seconds in the window (/proc, exact)"),
    "cpu_sys_s": ("float64", "the worker's system CPU seconds in the window"),
    "cpu_cores": ("float64", "the worker's CPU: (user+sys) seconds per second"),
    "rss_peak_mb": ("float64", "the worker's peak RSS (sampled)"),
    "gil_wait_p99_us": ("float64", "GIL view 3 (exact) in this worker: p99"),
    "loop_lag_p99_us": ("float64", "GIL view 4 (exact) in this worker: event-loop lag p99"),
    "native_hold_s": ("float64", "GIL view 2 (exact) in this worker: seconds Rust entry points held the GIL"),
    "native_wait_s": ("float64", "GIL view 2 (exact) in this worker: seconds waiting to re-acquire"),
    "gil_held_share": (
        "float64",
        "GIL view 1 (sampled) in this worker: share of samples any thread held the GIL",
    ),
    "gil_main_share": ("float64", "GIL view 1 (sampled) in this worker: share held by its event-loop thread"),
}

# `gatewaylab bench instructions` (harness/bench/instructions.py): one row per target x
# governance x repeat (a request) or per component x repeat (a call, leaf or record). Every
# count is exact (Cachegrind Ir, user space) and carries its SHA-256 skew beside it.
_SKEW: dict[str, tuple[str, str]] = {
    "sha256_blocks_per_unit": (
        "float64",
        "SHA-256 blocks (64 bytes) hashed per unit, counted from the payload sizes (null: not modelled)",
    ),
    "sha256_ir_per_unit": (
        "float64",
        "instructions of those blocks under Cachegrind (blocks x the path's exact Ir per block)",
    ),
    "sha256_native_ir_est_per_unit": (
        "float64",
        "what the same blocks cost natively, in instructions (perf when the machine has counters, "
        "else an estimate from native timing: sha256_method)",
    ),
    "sha256_skew_per_unit": (
        "float64",
        "sha256_ir_per_unit - sha256_native_ir_est_per_unit: instructions Cachegrind counts that the "
        "native run does not execute (SHA-NI hidden by valgrind)",
    ),
    "sha256_skew_share": ("float64", "sha256_skew_per_unit / ir_per_unit"),
    "sha256_ir_by_symbol_per_unit": (
        "float64",
        "Ir in SHA-256's block functions by name (the Rust twins' statically linked OpenSSL; "
        "the shared libcrypto under hashlib has no symbols): a cross-check",
    ),
    "sha256_method": ("string", "how the native side of the skew was obtained"),
}

INSTRUCTIONS: dict[str, tuple[str, str]] = {
    "run_id": ("string", "run folder name ('' outside a run folder)"),
    "target": ("string", "a rung's mode (py, py+rs, rs-core, rs-server) or a peer target (noveum, ...)"),
    "target_kind": ("string", "rung or peer"),
    "governance": (
        "string",
        "rungs: on (every stage + ledger), off (--stages none --audit off), stages-only, audit-only, "
        "on-unlimited (on, the key without limits); "
        "peers: as-shipped",
    ),
    "stages": ("string", "--stages given to the rung ('' for peers)"),
    "audit": ("string", "--audit given to the rung ('' for peers)"),
    "server": ("string", "the Python rungs' ASGI server (uvicorn, granian); '' otherwise"),
    "repeat": ("int64", "repeat index, 0-based (repeats are the outer loop)"),
    "status": ("string", "ok | failed | unfollowable (valgrind cannot run the target)"),
    "error": ("string", "why a row is not ok, in one line"),
    "n1": ("int64", "requests in the smaller run (closed loop, c = 1)"),
    "n2": ("int64", "requests in the larger run"),
    "ir_n1": ("float64", "Ir of the gateway's processes over the whole smaller run (start to exit)"),
    "ir_n2": ("float64", "Ir over the whole larger run"),
    "ir_per_unit": ("float64", "instructions per request: (ir_n2 - ir_n1) / (n2 - n1)"),
    "processes": ("int64", "processes Cachegrind followed (and summed) in the larger run"),
    "audit_records": ("int64", "records in the ledger after the larger run (0 with the audit off)"),
    "wall_s": ("float64", "wall seconds of both runs under Cachegrind"),
    "serve_s_n1": (
        "float64",
        "seconds the smaller run served (ready to stop): held to the larger run's, so work on a "
        "timer (uvicorn's tick) cancels",
    ),
    "serve_s_n2": ("float64", "seconds the larger run served (ready to stop)"),
    "upstream_extra": (
        "int64",
        "requests the target sent the upstream beyond one per client request in the larger run "
        "(0 on our rungs; a peer's own calls)",
    ),
    **_SKEW,
    "label": ("string", "exact: cachegrind Ir, user space"),
}

INSTR_COMPONENTS: dict[str, tuple[str, str]] = {
    "run_id": ("string", "run folder name ('' outside a run folder)"),
    "component": ("string", "stage.auth, stage.waf.short, ..., mmr, wal, record, sha256"),
    "impl": ("string", "python | rust (sha256: openssl | rust)"),
    "api": ("string", "per_leaf | batch (mmr), per_record | batch (wal), call (stages, record), block"),
    "unit": ("string", "call | leaf | record | block"),
    "repeat": ("int64", "repeat index"),
    "status": ("string", "ok | failed"),
    "error": ("string", "why a row is not ok"),
    "n1": ("int64", "units in the smaller driver run"),
    "n2": ("int64", "units in the larger driver run"),
    "ir_n1": ("float64", "Ir of the smaller driver run"),
    "ir_n2": ("float64", "Ir of the larger driver run"),
    "ir_per_unit": ("float64", "instructions per unit: (ir_n2 - ir_n1) / (n2 - n1)"),
    **_SKEW,
    "label": ("string", "exact: cachegrind Ir, user space"),
}

TABLES: dict[str, dict[str, tuple[str, str]]] = {
    "cells": CELLS,
    "baseline": BASELINE,
    "capacity": CAPACITY,
    "gil_threads": GIL_THREADS,
    "gil_entries": GIL_ENTRIES,
    "workers": WORKERS,
}
# Tables of benchmarks that write into a run folder of their own (not a sweep's tables).
BENCH_TABLES: dict[str, dict[str, tuple[str, str]]] = {
    "instructions": INSTRUCTIONS,
    "instr_components": INSTR_COMPONENTS,
}


def columns(table: str) -> dict[str, tuple[str, str]]:
    """A table's columns: name -> (dtype, description)."""
    cols = TABLES.get(table) or BENCH_TABLES.get(table)
    if cols is None:
        raise KeyError(f"unknown table {table!r}; known: {', '.join([*TABLES, *BENCH_TABLES])}")
    return cols


# Which measurement label each view carries (docs/architecture.md "Measurements").
LABELS: dict[str, str] = {
    "gil_ownership (py-spy --gil --idle)": "sampled",
    "native entry points (gil_stats)": "exact",
    "gil acquisition latency (probe thread)": "exact",
    "event-loop lag (call_later)": "exact",
    "cpu (/proc)": "exact",
    "rss_peak (20 Hz sampling)": "sampled",
    "latency (HDR, load generator)": "exact",
    "instructions (cachegrind Ir, user space)": "exact",
}

# Key of one cell (repeats share it).
CELL_KEY = ("mode", "switches", "shell", "workers", "concurrency")


def frame(table: str, rows: Iterable[dict[str, Any]]):
    """Rows -> a DataFrame with exactly the table's columns, in order, with their dtypes."""
    import pandas as pd

    cols = columns(table)
    df = pd.DataFrame(list(rows))
    absent = [name for name in cols if name not in df.columns]
    if absent:  # added at once: one column at a time fragments the frame (pandas warns)
        fill = pd.DataFrame({n: pd.Series([None] * len(df), dtype="object", index=df.index) for n in absent})
        df = pd.concat([df, fill], axis=1)
    df = df[list(cols)]
    for name, (dtype, _) in cols.items():
        if dtype == "string":
            df[name] = df[name].astype("string").fillna("")
        elif dtype == "int64":
            df[name] = pd.to_numeric(df[name], errors="coerce").fillna(0).astype("int64")
        elif dtype == "bool":
            df[name] = df[name].astype("bool")
        else:
            df[name] = pd.to_numeric(df[name], errors="coerce").astype("float64")
    return df


def validate(table: str, df) -> list[str]:
    """Problems with a loaded table (missing columns, wrong dtypes); empty when it conforms."""
    problems = []
    for name, (dtype, _) in columns(table).items():
        if name not in df.columns:
            problems.append(f"{table}: missing column {name}")
        elif str(df[name].dtype) not in (dtype, {"string": "str"}.get(dtype, dtype)) and not (
            dtype == "string" and str(df[name].dtype).startswith("string")
        ):
            problems.append(f"{table}.{name}: dtype {df[name].dtype}, expected {dtype}")
    return problems


def describe(table: str = "cells") -> str:
    """Markdown documentation of a table."""
    lines = ["| column | dtype | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} |" for k, (t, d) in columns(table).items()]
    return "\n".join(lines)
