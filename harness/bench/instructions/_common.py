"""What the parts of the instruction benchmark share: the driver's command line, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from gateway.errors import GatewayLabError
from harness.bench.instructions import _cachegrind as cg

ROOT = Path(__file__).resolve().parents[3]


def precompile() -> None:
    """Byte-compile the checkout's packages first: a run that compiled a changed module's .pyc
    would count the compiler too (hundreds of thousands of instructions, in one run only)."""
    import compileall

    for pkg in ("gateway", "harness"):
        compileall.compile_dir(str(ROOT / pkg), quiet=2, workers=1)


def driver_argv(case: dict, units: int) -> list[str]:
    """`python -m harness.bench._instr_driver CASE UNITS` with this interpreter."""
    return [sys.executable, "-m", "harness.bench._instr_driver", json.dumps(case), str(units)]


def driver_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment with this checkout importable (and `extra` on top)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_driver(case: dict, units: int, timeout: float = 1800) -> cg.Counts:
    """The driver under Cachegrind at `units`; its counts (GatewayLabError if it fails)."""
    with tempfile.TemporaryDirectory(prefix="gatewaylab-instr-") as d:
        r = subprocess.run(
            [*cg.command(d), *driver_argv(case, units)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=driver_env(),
            cwd=ROOT,
        )
        if r.returncode != 0:
            raise GatewayLabError(
                f"driver {case} under Cachegrind failed (exit {r.returncode}): {last_line(r.stderr, d)}"
            )
        return cg.read_dir(d)


def last_line(stderr: str, out_dir: str | None = None) -> str:
    """Why a child failed: valgrind's own reason when it gave one, else stderr's last line."""
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    if out_dir is not None:
        why = cg.diagnose(out_dir)
        if why:
            return why
    return lines[-1] if lines else "no output"


def one_line(e: BaseException) -> str:
    """An exception as one line (its first), for rows and the command line."""
    text = f"{type(e).__name__}: {e}".strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return first[:400]
