"""The console scripts of the environment under test.

Tests run `gatewaylab` as a user would, through its installed entry point -- the one that
belongs to the interpreter running the tests (`sys.executable`'s bin folder), never a
path guessed from the checkout (`.venv/bin/...`), which may be another, stale install."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def script(name: str) -> str:
    """Absolute path of console script `name` installed beside `sys.executable`."""
    bindir = Path(sys.executable).parent
    found = shutil.which(name, path=str(bindir))
    if found is None:
        raise RuntimeError(
            f"{name!r} is not installed in {bindir} (the environment running the tests): run `make dev`"
        )
    return found


def gatewaylab() -> str:
    return script("gatewaylab")
