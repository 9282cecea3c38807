"""Results of the instruction benchmark: rows, summaries (median, min, max, spread), ratios,
tables (harness.schema), the markdown report and the metadata."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.bench.instructions import _cachegrind as cg

# A peer runs as it ships: no governance axis.
PEER_GOVERNANCE = "as-shipped"


def key(target: str, governance: str) -> str:
    """A request configuration's name: `target` (governance on, or a peer), else `target@governance`."""
    return target if governance in ("on", PEER_GOVERNANCE) else f"{target}@{governance}"


def component_key(component: str, impl: str, api: str) -> str:
    """A component's name: `component.impl`, and `.api` where it has two (mmr, wal)."""
    return f"{component}.{impl}" if api in ("call", "block") else f"{component}.{impl}.{api}"


@dataclass
class InstructionRun:
    """What `measure` / `measure_components` return: rows (one per repeat), summaries, the
    SHA-256 calibration, targets valgrind could not follow, metadata."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    sha256: dict[str, Any] = field(default_factory=dict)
    unfollowable: list[dict[str, str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # -- summaries
    @property
    def summary(self) -> list[dict[str, Any]]:
        """Per target x governance: median, min, max and spread of Ir per request, with the skew."""
        out = _summarise(self.rows, ("target", "target_kind", "governance"))
        for s in out:
            s["key"] = key(s["target"], s["governance"])
        return out

    @property
    def component_summary(self) -> list[dict[str, Any]]:
        """Per component x impl x api: median, min, max and spread of Ir per unit, with the skew."""
        out = _summarise(self.components, ("component", "impl", "api", "unit"))
        for s in out:
            s["key"] = component_key(s["component"], s["impl"], s["api"])
        return out

    def _find(self, name: str) -> dict[str, Any]:
        every = self.summary + self.component_summary
        for s in every:
            if s["key"] == name:
                if s["status"] != "ok":
                    raise KeyError(f"{name!r} has no ok repeat: {s['status']}: {s['error']}")
                return s
        raise KeyError(f"{name!r} was not measured; measured: {', '.join(s['key'] for s in every)}")

    def stats(self, name: str) -> dict[str, Any]:
        """The summary of `name` (a request configuration's or a component's key): median,
        min, max, spread over the ok repeats; KeyError when it has none."""
        return self._find(name)

    def per_request(self, target: str, governance: str = "on") -> float:
        """Median instructions per request of `target` under `governance` (a peer: as shipped)."""
        return self._find(key(target, governance))["median"]

    def per_unit(self, name: str) -> float:
        """Median instructions per unit of a component (`component_key`: `stage.auth.python`,
        `mmr.rust.batch`, `record.python`, `sha256.openssl`)."""
        return self._find(name)["median"]

    def ratio(self, a: str, b: str, without_sha_skew: bool = False) -> float:
        """median(a) / median(b). Names: `target` (governance on, or a peer),
        `target@governance` (`rs-server@off`), or a component's key (`mmr.python.per_leaf`).

        The default is exact (Cachegrind counts on both sides). `without_sha_skew=True`
        first takes each side's SHA-256 skew off its median: an estimate of the ratio with
        the hashing as the native CPU does it (the skew's native side is estimated where the
        machine has no hardware counters); KeyError when a side's skew is not modelled."""
        sa, sb = self._find(a), self._find(b)
        if not without_sha_skew:
            return sa["median"] / sb["median"]
        for name, s in ((a, sa), (b, sb)):
            if s.get("sha256_skew_per_unit") is None:
                raise KeyError(f"{name!r}: its SHA-256 skew is not modelled (a peer's hashing is unknown)")
        return (sa["median"] - sa["sha256_skew_per_unit"]) / (sb["median"] - sb["sha256_skew_per_unit"])

    # -- tables
    def frame(self, table: str = "instructions"):
        from harness.results import schema

        rows = self.rows if table == "instructions" else self.components
        return schema.frame(table, [{"run_id": self.meta.get("run_id", ""), **r} for r in rows])

    def to_json(self) -> dict[str, Any]:
        return {
            "label": cg.LABEL,
            "rows": self.rows,
            "summary": self.summary,
            "components": self.components,
            "component_summary": self.component_summary,
            "sha256": self.sha256,
            "unfollowable": self.unfollowable,
            "meta": self.meta,
        }

    def save(self, out: str | os.PathLike | None = None, name: str = "instructions") -> Path:
        """A run folder (harness.runs) with the tables as Parquet, the JSON and report.md."""
        from harness.results.runs import create_run

        run = create_run(
            name, parameters=self.meta.get("parameters"), root=out, extra={"kind": "instructions"}
        )
        self.meta["run_id"] = run.name
        if self.rows:
            run.write_table("instructions", self.frame("instructions"))
        if self.components:
            run.write_table("instr_components", self.frame("instr_components"))
        run.write_json("instructions.json", self.to_json())
        run.write_text("report.md", markdown(self) + "\n")
        run.update_meta(instructions=self.meta)
        return run.path

    def merge(self, other: InstructionRun) -> InstructionRun:
        return InstructionRun(
            self.rows + other.rows,
            self.components + other.components,
            self.sha256 or other.sha256,
            self.unfollowable + other.unfollowable,
            {**other.meta, **self.meta},
        )


def _summarise(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for k, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        s: dict[str, Any] = dict(zip(keys, k, strict=True))
        s.update(repeats=len(rs), ok=len(ok))
        if not ok:
            s.update(status=rs[0]["status"], error=rs[0]["error"])
            out.append(s)
            continue
        vals = [r["ir_per_unit"] for r in ok]
        med = statistics.median(vals)
        s.update(
            status="ok",
            error="",
            median=med,
            min=min(vals),
            max=max(vals),
            spread=(max(vals) - min(vals)) / med if med else None,
        )
        for col in (
            "sha256_blocks_per_unit",
            "sha256_ir_per_unit",
            "sha256_native_ir_est_per_unit",
            "sha256_skew_per_unit",
            "sha256_ir_by_symbol_per_unit",
        ):
            v = [r[col] for r in ok if r.get(col) is not None]
            s[col] = statistics.median(v) if v else None
        s["sha256_skew_share"] = (
            s["sha256_skew_per_unit"] / med if med and s.get("sha256_skew_per_unit") is not None else None
        )
        s["sha256_method"] = ok[0].get("sha256_method")
        out.append(s)
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    for unit, k in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= k:
            return f"{x / k:.4g} {unit}"
    return f"{x:.4g}"


def _spread_cell(s: dict[str, Any]) -> str:
    """(max - min) / median over the ok repeats, and how many there were."""
    if s["ok"] < 2:
        return f"– ({s['ok']} repeat)"
    return f"{100 * (s['spread'] or 0):.2f}% ({s['ok']} repeats)"


def _skew_cell(s: dict[str, Any]) -> str:
    if s.get("sha256_skew_per_unit") is None:
        sym = s.get("sha256_ir_by_symbol_per_unit")
        return "not modelled" + (
            f" (SHA-256 by symbol: {_fmt(sym)})" if sym else " (no SHA-256 seen by symbol)"
        )
    if not s["sha256_blocks_per_unit"]:
        return "0 blocks: no skew"
    return (
        f"{s['sha256_blocks_per_unit']:.3g} blocks: {_fmt(s['sha256_ir_per_unit'])} under Cachegrind, "
        f"~{_fmt(s['sha256_native_ir_est_per_unit'])} native; skew {_fmt(s['sha256_skew_per_unit'])} "
        f"({100 * (s['sha256_skew_share'] or 0):.1f}%)"
    )


def markdown(run: InstructionRun) -> str:
    lines = []
    if run.rows:
        lines += [
            f"Instructions per request ({cg.LABEL}; c = 1, n1/n2 = {run.meta.get('n1')}/{run.meta.get('n2')}, "
            f"median (min–max) over repeats)",
            "",
            "| target | governance | Ir / request | spread | SHA-256 (skew) |",
            "|---|---|---:|---:|---|",
        ]
        for s in run.summary:
            if s["status"] != "ok":
                lines.append(f"| {s['target']} | {s['governance']} | {s['status']}: {s['error']} | | |")
                continue
            lines.append(
                f"| {s['target']} | {s['governance']} | {_fmt(s['median'])} ({_fmt(s['min'])}–{_fmt(s['max'])}) "
                f"| {_spread_cell(s)} | {_skew_cell(s)} |"
            )
    if run.components:
        lines += [
            "",
            f"Instructions per unit of a component ({cg.LABEL}; median (min–max) over repeats)",
            "",
            "| component | impl | api | unit | Ir / unit | spread | SHA-256 (skew) |",
            "|---|---|---|---|---:|---:|---|",
        ]
        for s in run.component_summary:
            head = f"| {s['component']} | {s['impl']} | {s['api']} | {s['unit']} |"
            if s["status"] != "ok":
                lines.append(f"{head} {s['status']}: {s['error']} | | |")
                continue
            lines.append(
                f"{head} {_fmt(s['median'])} ({_fmt(s['min'])}–{_fmt(s['max'])}) | {_spread_cell(s)} "
                f"| {_skew_cell(s)} |"
            )
    for u in run.unfollowable:
        lines.append(f"\nnot counted: {u['target']}: {u['reason']}")
    if run.sha256:
        lines.append(f"\nSHA-256 skew: {run.sha256.get('method')}")
        for impl, c in run.sha256.get("impls", {}).items():
            lines.append(
                f"- {impl}: {c['cachegrind_ir_per_block']:.0f} Ir/block under Cachegrind, "
                f"~{c['native_ir_per_block']:.0f} natively"
                + (f" ({c['native_ns_per_block']:.1f} ns/block)" if "native_ns_per_block" in c else "")
            )
        for note in run.sha256.get("notes", []):
            lines.append(f"- note: {note}")
    return "\n".join(lines)


def run_meta(params: dict[str, Any], profile) -> dict[str, Any]:
    from harness.results.meta import collect

    m = collect(
        parameters=params,
        hardware_profile=profile.name,
        profile_satisfied=profile.profile_satisfied,
        cores_used=len(set(profile.gateway_cpus) | set(profile.mock_cpus) | set(profile.load_cpus)),
    )
    m.update(
        label=cg.LABEL,
        valgrind=cg.version(),
        pinning={"gateway": profile.gateway_cpus, "mock": profile.mock_cpus, "load": profile.load_cpus},
        profile=profile.to_dict(),
        loop="closed, c = 1",
        probes="off on every target (GATEWAYLAB_PROBES unset)",
        env=dict(cg.ENV),
        n1=params.get("n1"),
        n2=params.get("n2"),
        repeat=params.get("repeat"),
    )
    return m
