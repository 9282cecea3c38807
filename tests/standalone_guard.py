"""Watches, for a whole pytest session, that no test reads anything beside the checkout.

The repository stands alone: `make test` must pass from a fresh clone with nothing next to
it. `install()` adds an audit hook (PEP 578) that records every file or folder opened under
the checkout's parent folder but outside the checkout; the root conftest.py installs it and
fails the session if anything was recorded. Reads elsewhere (/tmp, the interpreter's own
library) are not the concern here and are not recorded.
"""

from __future__ import annotations

import os
import sys

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BESIDE = os.path.dirname(CHECKOUT) + os.sep
_INSIDE = CHECKOUT + os.sep
OUTSIDE_READS: list[str] = []
_installed = False


def outside(path) -> str | None:
    """The absolute path if it lies beside the checkout, else None."""
    if isinstance(path, int):  # a file descriptor: already open
        return None
    try:
        p = os.path.abspath(os.fsdecode(path))
    except (TypeError, ValueError):
        return None
    if p.startswith(_BESIDE) and not (p + os.sep).startswith(_INSIDE):
        return p
    return None


def _audit(event: str, args: tuple) -> None:
    if event in ("open", "os.listdir", "os.scandir") and args and args[0] is not None:
        p = outside(args[0])
        if p is not None:
            OUTSIDE_READS.append(p)


def install() -> None:
    global _installed
    if not _installed:  # audit hooks cannot be removed: add it once per process
        sys.addaudithook(_audit)
        _installed = True
