"""Twin selection, in one place.

Every accelerable component exists as a Python twin and a Rust twin with the same
interface. A *mode* picks all of them at once (`py` = every Python twin, `py+rs` = every
Rust twin behind the Python shell); per-component overrides pick one at a time
(`mmr=python`). Sources, later ones winning: defaults < environment
(`GATEWAYLAB_MODE`, `GATEWAYLAB_IMPL="mmr=rust,wal=python"`) < explicit arguments
(code or CLI `--mode`, `--impl COMPONENT=python|rust`).

Asking for a Rust twin when the extension is not built raises `RustTwinUnavailable`;
there is never a silent fallback.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway import inject
from gateway.errors import ConfigError, RustTwinUnavailable
from gateway.ladder import RUNGS, refusal

PYTHON, RUST = "python", "rust"
IMPLS = (PYTHON, RUST)
# mode -> the twin every component defaults to, from the table of rungs (gateway/ladder.py).
# `rs-core` (rung 2) runs the whole pipeline in one Rust call (gateway/rungs/rs_core.py), so its
# components are all Rust and not switchable; `rs-server` (rung 3) is the standalone Rust
# binary (gateway/rungs/rs_server.py): no Python twins at all.
MODES = {m: r.twins for m, r in RUNGS.items()}
PER_COMPONENT_MODES = tuple(m for m, r in RUNGS.items() if r.per_component)
# rungs with no Python interpreter in the gateway process: GIL, event-loop and py-spy/scalene
# probes do not apply to them (they say "not applicable (no interpreter)").
NO_INTERPRETER_MODES = tuple(m for m, r in RUNGS.items() if not r.interpreter)
NOT_APPLICABLE = "not applicable (no interpreter)"

# component -> (python twin, rust twin), as "module:attribute" import paths.
# Rust paths may point at a thin Python wrapper around gateway._native (the forwarder's
# awaitable, say); `_NATIVE_BACKED` marks every Rust path as needing the extension.
REGISTRY: dict[str, tuple[str, str]] = {
    "hash": ("gateway.audit.hashing:sha256_hex", "gateway._native:sha256_hex"),
    "record": ("gateway.audit.record:encode_record", "gateway._native:encode_record"),
    "entropy": ("gateway.audit.entropy:entropy_millibits", "gateway._native:entropy_millibits"),
    "mmr": ("gateway.audit.mmr:MerkleMountainRange", "gateway._native:MerkleMountainRange"),
    "wal": ("gateway.audit.wal:WriteAheadLog", "gateway._native:WriteAheadLog"),
    "auth": ("gateway.stages.auth:ApiKeyAuth", "gateway._native:ApiKeyAuth"),
    "waf": ("gateway.stages.waf:Waf", "gateway._native:Waf"),
    "ratelimit": ("gateway.stages.ratelimit:RateLimiter", "gateway._native:RateLimiter"),
    "adapter": ("gateway.stages.adapter:Adapter", "gateway._native:Adapter"),
    "forwarder": ("gateway.stages.forwarder:Forwarder", "gateway.stages.rust_forwarder:RustForwarder"),
    "router": ("gateway.router:Router", "gateway._native:Router"),
}
COMPONENTS = tuple(REGISTRY)


def native():
    """The extension module, or `RustTwinUnavailable` with how to build it."""
    try:
        return importlib.import_module("gateway._native")
    except ImportError as e:  # pragma: no cover - exercised by monkeypatching in tests
        raise RustTwinUnavailable(
            f"the Rust extension gateway._native is not built ({e}); run `make dev`"
        ) from e


def native_available() -> bool:
    try:
        native()
        return True
    except RustTwinUnavailable:
        return False


def parse_impl(spec: str | Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """`"mmr=rust,wal=python"`, `["mmr=rust", "wal=python"]` or a mapping -> validated dict."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        parts = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in s.split(",")]
        items = []
        for part in parts:
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ConfigError(f"impl override {part!r}: expected COMPONENT=python|rust")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    out: dict[str, str] = {}
    for k, v in items:
        if k not in REGISTRY:
            raise ConfigError(f"impl override {k!r}: unknown component; known: {', '.join(COMPONENTS)}")
        if v not in IMPLS:
            raise ConfigError(f"impl override {k}={v!r}: expected 'python' or 'rust'")
        out[k] = v
    return out


@dataclass(frozen=True)
class Switches:
    """Which twin runs for each component: a mode plus per-component overrides."""

    mode: str = "py"
    overrides: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        object.__setattr__(self, "overrides", parse_impl(self.overrides))
        if self.overrides and self.mode not in PER_COMPONENT_MODES:
            raise refusal(RUNGS[self.mode], f"impl override {','.join(sorted(self.overrides))}", "impl")

    @classmethod
    def resolve(
        cls,
        mode: str | None = None,
        impl: str | Iterable[str] | Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Switches:
        """Defaults < environment < arguments."""
        env = os.environ if env is None else env
        m = mode or env.get("GATEWAYLAB_MODE") or "py"
        ov = parse_impl(env.get("GATEWAYLAB_IMPL"))
        ov.update(parse_impl(impl))
        return cls(m, ov)

    def impl(self, component: str) -> str:
        if component not in REGISTRY:
            raise ConfigError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
        return self.overrides.get(component, MODES[self.mode])

    def as_dict(self) -> dict[str, str]:
        return {c: self.impl(c) for c in COMPONENTS}

    def with_overrides(self, **overrides: str) -> Switches:
        return Switches(self.mode, {**self.overrides, **overrides})

    def label(self) -> str:
        """Short label for tables: the mode plus any overrides (`py+rs[mmr=python]`)."""
        if not self.overrides:
            return self.mode
        return self.mode + "[" + ",".join(f"{k}={v}" for k, v in sorted(self.overrides.items())) + "]"

    def load(self, component: str) -> Any:
        return load(component, self.impl(component))


def load(component: str, impl: str) -> Any:
    """The object implementing `component` in the twin `impl` ('python' or 'rust')."""
    if component not in REGISTRY:
        raise ConfigError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
    if impl not in IMPLS:
        raise ConfigError(f"impl {impl!r}: expected 'python' or 'rust'")
    # test-only regressions (GATEWAYLAB_INJECT), off by default
    if impl == RUST and inject.python_as_rust(component, REGISTRY):
        impl = PYTHON  # injected: the Rust label loads the Python twin
    path = REGISTRY[component][IMPLS.index(impl)]
    if impl == RUST:
        native()  # clear error when the extension is missing
    mod, attr = path.split(":")
    obj = getattr(importlib.import_module(mod), attr, None)
    if obj is None:
        if impl == RUST:
            raise RustTwinUnavailable(
                f"the built extension has no Rust twin for {component!r} ({path}); rebuild with `make dev`"
            )
        raise ImportError(f"{path} not found")
    if impl == RUST and component == "mmr" and "mmr-batch-per-leaf" in inject.active(REGISTRY):
        return inject.batch_per_leaf(obj)  # injected: the batch path removed
    return obj
