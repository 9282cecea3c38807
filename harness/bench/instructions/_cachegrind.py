"""Valgrind's Cachegrind as an instruction counter: the command prefix, and its output read back.

    prefix = command(out_dir)                 # valgrind --tool=cachegrind --cache-sim=no ...
    subprocess.run([*prefix, sys.executable, "driver.py"])
    counts = read_dir(out_dir)                # every process the command left a file for
    counts.total, counts.by_pid, counts.matching(SHA256_SYMBOLS)

Cachegrind without its cache simulation counts the instructions each process executes in
user space (`Ir`), exactly and deterministically: the count does not depend on the machine's
load. `--trace-children=yes` follows every process the command starts (granian's worker, an
`exec` into the rs-server binary), each into its own `cachegrind.out.<pid>`.

Valgrind runs the program on a simulated CPU that lacks some of the host's features: the
CPUID it answers hides SHA-NI (and AVX-512), so hashing takes the portable path under it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import GatewayLabError

OUT_PREFIX = "cachegrind.out."
LABEL = "exact: cachegrind Ir, user space"
# SHA-256's block functions, by symbol: OpenSSL's `sha256_block_data_order*`, which the Rust
# twins link statically (.cargo/config.toml), symbols kept; the shared libcrypto under hashlib
# is stripped, so a Python twin's hashing is not seen by name.
SHA256_SYMBOLS = re.compile(r"sha256_block", re.IGNORECASE)


class CachegrindUnavailable(GatewayLabError):
    """valgrind is missing, or Cachegrind did not write the counts it should have."""


def valgrind() -> str:
    """Path of the valgrind executable, or CachegrindUnavailable with what to do."""
    path = shutil.which("valgrind")
    if path is None:
        raise CachegrindUnavailable(
            "valgrind is not installed: instruction counts need it (`make dev` installs the "
            "Debian package; or apt-get install valgrind)"
        )
    return path


def version() -> str | None:
    try:
        r = subprocess.run([valgrind(), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired, CachegrindUnavailable):
        return None
    return r.stdout.strip() or None


# Fixed string hashing in Python processes: with a random seed (Python's default) dict
# layouts, and so the instructions of start-up, differ from one process to the next by
# hundreds of thousands; the seed is recorded with every result.
ENV = {"PYTHONHASHSEED": "0"}


def command(out_dir: str | os.PathLike, trace_children: bool = True) -> list[str]:
    """The prefix that runs a command under Cachegrind, one output file per process in out_dir
    (through `env`, which sets ENV and is not itself counted)."""
    return [
        "env",
        *(f"{k}={v}" for k, v in ENV.items()),
        valgrind(),
        "--tool=cachegrind",
        "--cache-sim=no",
        "--branch-sim=no",
        f"--trace-children={'yes' if trace_children else 'no'}",
        # a program that execs another (gateway.serving.server -> the rs-server binary) keeps its pid:
        # the exec'd program's counts replace the launcher's in the same file
        f"--cachegrind-out-file={Path(out_dir) / OUT_PREFIX}%p",
        "--log-file=" + str(Path(out_dir) / "valgrind.%p.log"),
    ]


@dataclass
class Counts:
    """Ir of every process Cachegrind wrote a file for, and per function."""

    by_pid: dict[int, int] = field(default_factory=dict)
    commands: dict[int, str] = field(default_factory=dict)
    functions: Counter = field(default_factory=Counter)  # (file, function) -> Ir, all processes

    @property
    def total(self) -> int:
        return sum(self.by_pid.values())

    def matching(self, pattern: re.Pattern) -> int:
        """Ir in the functions whose name matches `pattern` (every process)."""
        return sum(ir for (_, fn), ir in self.functions.items() if pattern.search(fn))


def read_file(path: str | os.PathLike) -> tuple[int, str, Counter]:
    """One cachegrind.out file -> (summary Ir, its command line, Ir per (file, function))."""
    fns: Counter = Counter()
    fl = fn = "???"
    total = None
    cmd = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit():
                parts = line.split()
                if len(parts) >= 2:
                    fns[(fl, fn)] += int(parts[1])
            elif line.startswith("fn="):
                fn = line[3:].rstrip("\n")
            elif line.startswith("fl="):
                fl = line[3:].rstrip("\n")
            elif line.startswith("summary:"):
                total = int(line.split()[1])
            elif line.startswith("cmd:"):
                cmd = line[4:].strip()
    if total is None:
        raise CachegrindUnavailable(f"{path}: no summary line (the process did not finish under Cachegrind)")
    return total, cmd, fns


def read_dir(out_dir: str | os.PathLike) -> Counts:
    """Every cachegrind.out.<pid> in out_dir, summed; CachegrindUnavailable when there is none."""
    counts = Counts()
    files = sorted(Path(out_dir).glob(OUT_PREFIX + "*"))
    if not files:
        logs = sorted(Path(out_dir).glob("valgrind.*.log"))
        tail = ""
        for log in logs:
            text = log.read_text(errors="replace").strip().splitlines()
            tail = " | ".join(line.split("== ", 1)[-1] for line in text[-3:])
        raise CachegrindUnavailable(
            f"Cachegrind wrote no counts in {out_dir}" + (f" (valgrind said: {tail})" if tail else "")
        )
    for p in files:
        pid = int(p.name[len(OUT_PREFIX) :])
        total, cmd, fns = read_file(p)
        counts.by_pid[pid] = total
        counts.commands[pid] = cmd
        counts.functions.update(fns)
    return counts


# What valgrind says when it cannot run a program (its log, one line each).
_CANNOT = (
    "unhandled instruction bytes",
    "valgrind: Unrecognised instruction",
    "Valgrind cannot continue",
    "the 'impossible' happened",
    "Valgrind's memory management: out of memory",
    "Fatal error at startup",
    "cannot execute binary file",
)


def diagnose(out_dir: str | os.PathLike) -> str | None:
    """One line saying why valgrind could not run the program, from its logs; None when
    they say nothing of the kind."""
    for log in sorted(Path(out_dir).glob("valgrind.*.log")):
        for line in log.read_text(errors="replace").splitlines():
            text = line.split("== ", 1)[-1].split("-- ", 1)[-1].strip()
            if any(k.lower() in text.lower() for k in _CANNOT):
                return f"valgrind cannot run it: {text[:300]}"
    return None
