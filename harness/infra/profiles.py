"""Hardware profiles: which CPUs the gateway, the mock upstream and the load generator get.

A profile asks for cores; `resolve()` maps it onto the CPUs this process may use
(`os.sched_getaffinity(0)`). When the machine is smaller than the profile asks for, the
profile is clamped and the result says so (`profile_satisfied: False`, the cores actually
used, and a note per clamp) rather than pretending.

Built-in profiles:
- ``xeon-4c`` (default): 4 gateway cores, the rest for the mock and the load generator.
- ``ci-2c``: 1 gateway core, 1 core shared by the mock and the load generator.
- ``all``: no separation; every role may use every core.
``place_workers(profile, n)`` puts ``--workers n`` one per gateway core (clamped and noted
when the machine has fewer; docs/workers.md).
Custom: ``"gateway=0-3;mock=4;load=5-7"`` (CPU ids, ranges allowed) or a mapping with the
same keys. On a 2-core machine ``xeon-4c`` clamps to gateway on one core and mock + load on
the other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.errors import ConfigError

ROLES = ("gateway", "mock", "load")


@dataclass(frozen=True)
class CoreCounts:
    """A built-in profile: how many cores each role wants (None = share what is left)."""

    gateway: int
    others_min: int  # cores wanted for mock + load together
    description: str


BUILTIN: dict[str, CoreCounts] = {
    "xeon-4c": CoreCounts(4, 2, "4 gateway cores, the rest for mock and load"),
    "ci-2c": CoreCounts(1, 1, "1 gateway core, 1 core for mock and load"),
}


@dataclass
class ResolvedProfile:
    name: str
    description: str
    gateway_cpus: list[int]
    mock_cpus: list[int]
    load_cpus: list[int]
    available_cpus: list[int]
    profile_satisfied: bool
    requested: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def harness_cpus(self) -> list[int]:
        """Where the harness itself (samplers, py-spy) should run: off the gateway's cores."""
        rest = sorted(set(self.mock_cpus) | set(self.load_cpus))
        return rest or self.available_cpus

    def line(self) -> str:
        """One-line description for reports."""
        sat = "satisfied" if self.profile_satisfied else "CLAMPED (profile_satisfied: false)"
        return (
            f"profile {self.name} ({self.description}); {len(self.available_cpus)} CPUs available; "
            f"gateway cpus {_fmt(self.gateway_cpus)}, mock cpus {_fmt(self.mock_cpus)}, "
            f"load cpus {_fmt(self.load_cpus)}; {sat}"
        )


def _fmt(cpus: list[int]) -> str:
    return ",".join(map(str, cpus)) or "-"


def parse_cpu_list(text: str) -> list[int]:
    """`"0-3,6"` -> [0, 1, 2, 3, 6]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ConfigError(f"bad CPU list {text!r}: expected ids and ranges like 0-3,6") from None
    return sorted(set(out))


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _split_rest(rest: list[int]) -> tuple[list[int], list[int]]:
    if len(rest) >= 2:
        half = len(rest) // 2
        return rest[:half], rest[half:]
    return list(rest), list(rest)


def resolve(
    profile: str | Mapping[str, Any] | ResolvedProfile = "xeon-4c", cpus: list[int] | None = None
) -> ResolvedProfile:
    """Map a profile onto the CPUs available (`cpus`, default this process's affinity)."""
    if isinstance(profile, ResolvedProfile):
        return profile
    avail = sorted(cpus) if cpus is not None else available_cpus()
    if not avail:
        raise ConfigError("no CPUs available")
    if isinstance(profile, Mapping) or (isinstance(profile, str) and "=" in profile):
        return _resolve_custom(profile, avail)
    if profile == "all":
        return ResolvedProfile(
            "all",
            "every role on every core (no separation)",
            list(avail),
            list(avail),
            list(avail),
            avail,
            True,
            {"gateway": "all", "mock": "all", "load": "all"},
        )
    if profile not in BUILTIN:
        raise ConfigError(
            f"unknown hardware profile {profile!r}; known: {', '.join([*BUILTIN, 'all'])} "
            f"or a custom 'gateway=0-3;mock=4;load=5'"
        )
    want = BUILTIN[profile]
    requested = {"gateway_cores": want.gateway, "mock_load_cores_min": want.others_min}
    notes: list[str] = []
    n = len(avail)
    if n == 1:
        notes.append("only one CPU: gateway, mock and load share it")
        return ResolvedProfile(
            profile, want.description, list(avail), list(avail), list(avail), avail, False, requested, notes
        )
    g = min(want.gateway, n - 1)
    if g < want.gateway:
        notes.append(f"gateway gets {g} core(s) instead of {want.gateway}")
    gw, rest = avail[:g], avail[g:]
    if len(rest) < want.others_min:
        notes.append(f"mock and load get {len(rest)} core(s) instead of at least {want.others_min}")
    mock, load = _split_rest(rest)
    if mock == load and len(rest) >= 1 and want.others_min >= 2:
        notes.append("mock and load share their core(s)")
    satisfied = not notes
    return ResolvedProfile(profile, want.description, gw, mock, load, avail, satisfied, requested, notes)


def _resolve_custom(spec: str | Mapping[str, Any], avail: list[int]) -> ResolvedProfile:
    if isinstance(spec, str):
        items: dict[str, Any] = {}
        for part in spec.replace(" ", "").split(";"):
            if not part:
                continue
            if "=" not in part:
                raise ConfigError(f"custom profile part {part!r}: expected ROLE=CPUS")
            k, v = part.split("=", 1)
            items[k] = v
        name = spec
    else:
        items, name = dict(spec), "custom"
    unknown = set(items) - set(ROLES)
    if unknown:
        raise ConfigError(f"custom profile: unknown role(s) {sorted(unknown)}; roles are {ROLES}")
    if "gateway" not in items:
        raise ConfigError("custom profile needs gateway=CPUS")
    req = {
        k: (parse_cpu_list(v) if isinstance(v, str) else sorted(int(x) for x in v)) for k, v in items.items()
    }
    notes: list[str] = []
    got: dict[str, list[int]] = {}
    for role in ROLES:
        want = req.get(role)
        if want is None:
            continue
        have = [c for c in want if c in avail]
        if len(have) < len(want):
            notes.append(f"{role}: cpus {_fmt([c for c in want if c not in avail])} not available")
        got[role] = have
    if not got["gateway"]:
        got["gateway"] = avail[:1]
        notes.append(f"gateway falls back to cpu {avail[0]}")
    rest = [c for c in avail if c not in got["gateway"]] or list(avail)
    for role in ("mock", "load"):
        if not got.get(role):
            if role in req:
                notes.append(f"{role} falls back to the cores not used by the gateway")
            got[role] = list(rest)
    return ResolvedProfile(
        name,
        "custom core lists",
        got["gateway"],
        got["mock"],
        got["load"],
        avail,
        not notes,
        {k: v for k, v in req.items()},
        notes,
    )


@dataclass
class WorkerPlacement:
    """Where `--workers N` puts its workers under a resolved profile (`place_workers`)."""

    workers: int
    cpus: list[list[int]]  # worker k -> its CPU list (one CPU each)
    satisfied: bool  # every worker on its own gateway core, none shared
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        where = " ".join(f"w{k}:cpu{','.join(map(str, c))}" for k, c in enumerate(self.cpus))
        return f"{self.workers} worker(s) {where}" + (
            "" if self.satisfied else " CLAMPED: " + "; ".join(self.notes)
        )


def place_workers(profile: ResolvedProfile, n: int) -> WorkerPlacement:
    """One gateway core per worker: the profile's gateway cores first; when the machine has
    fewer, the mock's and load generator's cores next, then wrapping round (workers share a
    core). Every such compromise is a note, and `satisfied` is False."""
    if n < 1:
        raise ConfigError(f"workers: expected a positive integer, got {n!r}")
    order = list(profile.gateway_cpus) + [c for c in profile.available_cpus if c not in profile.gateway_cpus]
    cpus = [[order[k % len(order)]] for k in range(n)]
    notes: list[str] = [f"profile: {x}" for x in profile.notes]
    want = profile.requested.get("gateway_cores")
    if isinstance(want, int) and n > want:
        notes.append(f"{n} workers on a profile of {want} gateway core(s)")
    for k, (c,) in enumerate(cpus):
        roles = [r for r, cs in (("mock", profile.mock_cpus), ("load", profile.load_cpus)) if c in cs]
        if c not in profile.gateway_cpus and roles:
            notes.append(
                f"worker {k} on cpu {c}, shared with the {' and the '.join(roles)} generator".replace(
                    "mock generator", "mock"
                )
            )
        others = [j for j, (d,) in enumerate(cpus) if d == c and j < k]
        if others:
            notes.append(f"worker {k} shares cpu {c} with worker {others[0]}")
    return WorkerPlacement(n, cpus, not notes, notes)
