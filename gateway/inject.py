"""Injected regressions, for tests only: `GATEWAYLAB_INJECT`.

The work gates of the notebooks (data/baselines/README.md) must fail on real regressions,
measured, not on numbers typed into the checker. These switches plant such regressions in a
real gateway or benchmark. They are **test-only**: off by default (the variable unset), read
at start-up from the environment of the process, and every result that collects run
metadata records them (`harness.results.meta.collect` stores `inject`), so no real result carries
one silently; `python -m harness.notebooks --record` refuses to record a run that has one.

    GATEWAYLAB_INJECT=python-as-rust:auth,python-as-rust:waf   # Rust twins that are the Python ones
    GATEWAYLAB_INJECT=mmr-batch-per-leaf                       # append_many loops over append
    GATEWAYLAB_INJECT=waf-twice                                # the Rust pipeline's WAF scans twice
    GATEWAYLAB_INJECT=waf-extra:4                              # ... and four more times

- `python-as-rust:COMPONENT`: the registry's Rust entry of COMPONENT loads the Python twin
  (`gateway.twins.load`), the regression of a Rust twin silently replaced under its label.
- `mmr-batch-per-leaf`: the Rust MMR's `append_many` calls the per-leaf `append` once per
  leaf from Python, the batch path removed.
- `waf-twice`, `waf-extra:N`: the Rust pipeline (rungs `rs-core` and `rs-server`,
  native/core's `Pipeline`) scans every prompt once (N times) more, a stage doing extra
  work. Read by the native code itself.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping

from gateway.errors import ConfigError

ENV = "GATEWAYLAB_INJECT"
PYTHON_AS_RUST = "python-as-rust:"
SIMPLE = ("mmr-batch-per-leaf", "waf-twice")


def active(components: Collection[str], env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The injections `GATEWAYLAB_INJECT` asks for (empty when unset); ConfigError on an
    unknown one, so a typo never measures a clean build under an injected label.
    `components`: the twins' component names (gateway.twins.REGISTRY, which imports this
    module, so it is passed in rather than imported)."""
    raw = (os.environ if env is None else env).get(ENV, "")
    out = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    for name in out:
        if name in SIMPLE:
            continue
        if name.startswith("waf-extra:") and name.removeprefix("waf-extra:").isdigit():
            continue
        if name.startswith(PYTHON_AS_RUST) and name.removeprefix(PYTHON_AS_RUST) in components:
            continue
        raise ConfigError(
            f"{ENV}: unknown injection {name!r}; known: {', '.join(SIMPLE)}, waf-extra:N, "
            f"{PYTHON_AS_RUST}COMPONENT ({', '.join(components)})"
        )
    return out


def python_as_rust(component: str, components: Collection[str]) -> bool:
    return PYTHON_AS_RUST + component in active(components)


def batch_per_leaf(mmr_class: type) -> type:
    """`mmr_class` with `append_many` replaced by one `append` call per leaf."""

    class PerLeafBatch:
        """The Rust MMR with its batch path removed (GATEWAYLAB_INJECT=mmr-batch-per-leaf)."""

        def __init__(self, *args, **kwargs):
            self._mmr = mmr_class(*args, **kwargs)

        def append_many(self, payloads) -> int:
            append = self._mmr.append
            for p in payloads:
                append(p)
            return self._mmr.leaf_count

        def __getattr__(self, name):
            return getattr(self._mmr, name)

    PerLeafBatch.__name__ = PerLeafBatch.__qualname__ = mmr_class.__name__
    return PerLeafBatch
