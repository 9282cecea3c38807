"""Where one request's instructions go, per function: two Cachegrind runs, differenced.

    view = per_request_functions(n1_files, n2_files, n1=200, n2=600)
    view.per_request                 # (I(N2) - I(N1)) / (N2 - N1), every function together
    view.top(15)                     # [FunctionCost(function, ir_per_request, share, files, ...)]
    print(view.markdown(15))
    view.write_icicle(out_dir, stem) # optional: inferno SVG of the same counts by module path

A target served N1 requests in one life under Cachegrind (`valgrind --tool=cachegrind
--cache-sim=no`) and N2 in another. Start-up, shut-down and idle work are the same in both
lives, so a function's count in the N2 run minus its count in the N1 run, divided by N2 - N1,
is what one request costs in that function (its self cost: Cachegrind keeps no call graph).
The label is **exact** (user-space instructions, `Ir`), not sampled; it does not move with
the machine's load. Blind spots: the kernel, waiting, and the CPU features Valgrind hides
(SHA-NI: SHA-256 takes the portable path under it, so hashing counts more than it runs).

Each side may be several files (one per process of a run, e.g. `--trace-children=yes`); they
are summed. Functions are keyed by name, summed over the source files Cachegrind attributes
their instructions to (inlined code carries its own file). The per-function differences add
up to the total difference exactly; a negative one is a function that did less work in the
longer life (start-up noise such as a table resized at a different moment) and is kept so
that the table still adds up.

The Cachegrind output format read here is Valgrind's own (`cg_annotate` and `cg_diff` read the
same files): `fl=` names a file, `fn=` a function, a line `<line> <Ir>` adds to the current
function, and `summary: <Ir>` is the process total.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import GatewayLabError

LABEL = "exact: Cachegrind Ir (user-space instructions), self cost per function, N2 - N1 differenced"
NO_FILE = "???"  # Cachegrind's name for code without line information

PathLike = str | os.PathLike
Files = PathLike | Sequence[PathLike]


class CachegrindFileError(GatewayLabError):
    """A file is not a complete Cachegrind output (missing, truncated or of another kind)."""


@dataclass
class Profile:
    """One run's counts: `summary` (total Ir), Ir per function name, and per function the Ir
    of each source file its instructions were attributed to."""

    summary: int = 0
    functions: Counter = field(default_factory=Counter)
    files: dict[str, Counter] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    events: str = ""

    @classmethod
    def from_counts(cls, summary: int, by_file_function: Mapping[tuple[str, str], int]) -> Profile:
        """A profile from counts already read, keyed (file, function) as `cg_annotate` keys
        them (e.g. `harness.bench.instructions._cachegrind.Counts`: `.total`, `.functions`)."""
        prof = cls(summary=int(summary), events="Ir")
        for (fl, fn), ir in by_file_function.items():
            prof.functions[fn] += ir
            prof.files.setdefault(fn, Counter())[fl or NO_FILE] += ir
        return prof


def read(files: Files) -> Profile:
    """One or several Cachegrind output files (the processes of one run) -> their summed counts."""
    paths = [files] if isinstance(files, str | os.PathLike) else list(files)
    if not paths:
        raise CachegrindFileError("no Cachegrind output file given")
    prof = Profile()
    for p in paths:
        _read_one(Path(p), prof)
    return prof


def _read_one(path: Path, prof: Profile) -> None:
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        raise CachegrindFileError(f"{path}: {e.strerror or e}") from None
    fl, fn = NO_FILE, None
    summary = None
    ir_col = 0
    with f:
        for n, line in enumerate(f, 1):
            c = line[:1]
            if c.isdigit() or c == "-":
                if fn is None:
                    raise CachegrindFileError(f"{path}:{n}: counts before any fn= line")
                parts = line.split()
                if len(parts) > ir_col + 1:
                    ir = int(parts[ir_col + 1])
                    prof.functions[fn] += ir
                    prof.files.setdefault(fn, Counter())[fl] += ir
            elif line.startswith("fn="):
                fn = line[3:].rstrip("\n")
            elif line.startswith("fl="):
                fl = line[3:].rstrip("\n") or NO_FILE
            elif line.startswith("events:"):
                events = line[7:].split()
                if "Ir" not in events:
                    raise CachegrindFileError(f"{path}: no Ir event (events: {' '.join(events)})")
                ir_col = events.index("Ir")
                prof.events = " ".join(events)
            elif line.startswith("summary:"):
                summary = int(line.split()[1 + ir_col])
            elif line.startswith("cmd:"):
                prof.commands.append(line[4:].strip())
    if summary is None:
        raise CachegrindFileError(
            f"{path}: no summary line (not a Cachegrind output, or the process did not exit normally)"
        )
    prof.summary += summary


@dataclass(frozen=True)
class FunctionCost:
    """One function's instructions per request (`ir_per_request`, exact), its share of the
    request's total, its raw counts in the two runs and its main source file."""

    function: str
    ir_per_request: float
    share: float
    ir_n1: int
    ir_n2: int
    file: str

    def as_row(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "ir_per_request": self.ir_per_request,
            "share": self.share,
            "ir_n1": self.ir_n1,
            "ir_n2": self.ir_n2,
            "file": self.file,
        }


@dataclass
class FunctionView:
    """Instructions per request per function, from runs at `n1` and `n2` requests."""

    n1: int
    n2: int
    a: Profile
    b: Profile
    target: str = ""

    @property
    def requests(self) -> int:
        return self.n2 - self.n1

    @property
    def per_request(self) -> float:
        """The whole processes' instructions per request (equals the sum over functions)."""
        return (self.b.summary - self.a.summary) / self.requests

    def functions(self) -> list[FunctionCost]:
        """Every function whose count differs between the runs, most instructions first."""
        total = self.per_request
        out = []
        for fn in set(self.a.functions) | set(self.b.functions):
            i1, i2 = self.a.functions.get(fn, 0), self.b.functions.get(fn, 0)
            if i1 == i2:
                continue
            per = (i2 - i1) / self.requests
            files = self.b.files.get(fn) or self.a.files.get(fn) or Counter({NO_FILE: 0})
            out.append(
                FunctionCost(fn, per, per / total if total else 0.0, i1, i2, files.most_common(1)[0][0])
            )
        out.sort(key=lambda f: (-f.ir_per_request, f.function))
        return out

    def top(self, n: int = 15) -> list[FunctionCost]:
        return self.functions()[:n]

    def rows(self, n: int | None = None) -> list[dict[str, Any]]:
        """Table rows (dicts; `harness.results.schema`-style plain values), with the target and label."""
        fns = self.functions()
        return [
            {"target": self.target, "rank": k + 1, **f.as_row(), "n1": self.n1, "n2": self.n2, "label": LABEL}
            for k, f in enumerate(fns[:n] if n else fns)
        ]

    def frame(self, n: int | None = None):
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows(n))

    def markdown(self, n: int = 15) -> str:
        """A top-n table with the total, for a report or a terminal."""
        lines = [
            f"{self.target + ': ' if self.target else ''}{self.per_request:,.0f} instructions per request "
            f"(runs at N1 = {self.n1} and N2 = {self.n2} requests; {LABEL})",
            "",
            "| # | function | Ir per request | share |",
            "|---:|---|---:|---:|",
        ]
        for k, f in enumerate(self.top(n), 1):
            name = f.function.replace("|", "\\|")
            lines.append(f"| {k} | `{name}` | {f.ir_per_request:,.0f} | {f.share:.1%} |")
        return "\n".join(lines)

    # ------------------------------------------------------------ the optional icicle
    def folded(self) -> list[str]:
        """Folded lines `module;path;function count`: each function's raw difference (over
        N2 - N1 requests) under its module path, for a flamegraph of self costs grouped by
        module (not a call graph: Cachegrind records none). Negative differences are left out."""
        out = []
        for f in self.functions():
            d = f.ir_n2 - f.ir_n1
            if d > 0:
                out.append(f"{';'.join(module_path(f.function, f.file))} {d}")
        return out

    def write_icicle(self, out_dir: PathLike, stem: str) -> dict[str, Any]:
        """The folded counts drawn by inferno as an icicle (root on top), scaled to one request.
        Returns {"svg", "folded", "missing"} like the perf flamegraphs."""
        from harness.profilers import perf

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        folded = out_dir / f"{stem}.cachegrind.folded"
        folded.write_text("\n".join(self.folded()) + "\n")
        res: dict[str, Any] = {
            "svg": None,
            "folded": str(folded),
            "missing": perf.missing_tools(need_perf=False),
        }
        if res["missing"]:
            return res
        svg = out_dir / f"{stem}.cachegrind.svg"
        negative = sum(1 for f in self.functions() if f.ir_n2 < f.ir_n1)
        perf.draw(
            folded,
            svg,
            title=f"{self.target or 'target'}: instructions per request by module ({self.per_request:,.0f} Ir)",
            subtitle=f"exact: Cachegrind Ir, self cost per function grouped by module path (not a call graph); "
            f"runs at N1 = {self.n1}, N2 = {self.n2}; {negative} functions with fewer Ir in the longer run left out",
            countname="instructions per request",
            factor=1.0 / self.requests,
            inverted=True,
        )
        res["svg"] = str(svg)
        return res


def per_request_functions(
    n1_files: Files, n2_files: Files, n1: int, n2: int, target: str = ""
) -> FunctionView:
    """Per-function instructions per request from a run at `n1` requests and one at `n2` (> n1)."""
    if int(n2) <= int(n1):
        raise GatewayLabError(f"N2 ({n2}) must be larger than N1 ({n1})")
    return FunctionView(int(n1), int(n2), read(n1_files), read(n2_files), target)


# ------------------------------------------------------------------ module paths

_RUST_HASH = re.compile(r"::h[0-9a-f]{16}$")


def _split_top(name: str) -> list[str]:
    """Split at `::` outside <...>, (...) and [...]."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(name):
        ch = name[i]
        if ch in "<([{":
            depth += 1
        elif ch in ">)]}" and depth > 0:
            depth -= 1
        elif depth == 0 and name.startswith("::", i):
            parts.append(name[start:i])
            start = i + 2
            i += 1
        i += 1
    parts.append(name[start:])
    return [p for p in parts if p]


def module_path(function: str, file: str = NO_FILE) -> list[str]:
    """`gatewaylab_core::audit::wal::Wal::append` -> its path segments; a trait impl
    `<hyper::Conn<I> as Drop>::drop` is filed under the implementing type's path; a C
    function goes under its source file (or `[no line info]`)."""
    name = _RUST_HASH.sub("", function)
    parts = _split_top(name)
    if len(parts) > 1 or "::" in name:
        head = parts[0]
        if head.startswith("<") and head.endswith(">"):
            inner = head[1:-1]
            self_ty = re.split(r"\s+as\s+", inner, maxsplit=1)[0].lstrip("&*").removeprefix("mut ").strip()
            self_ty = re.sub(r"^(dyn|impl)\s+", "", self_ty)
            parts = [*_split_top(self_ty.split("<", 1)[0] or self_ty), *parts[1:]]
        return [p.replace(";", ",") for p in parts]
    where = f"[{file}]" if file and file != NO_FILE else "[no line info]"
    return [where, name.replace(";", ",")]


# ------------------------------------------------------------------ Valgrind's own listing


def cg_annotate_text(n1_file: PathLike, n2_file: PathLike, out_dir: PathLike, threshold: float = 0.1) -> str:
    """Valgrind's own per-function listing of the difference (`cg_diff` then `cg_annotate`),
    raw counts over N2 - N1 requests, for a reader who wants the tool's output itself."""
    import shutil

    diff = Path(out_dir) / "cachegrind.diff"
    for tool in ("cg_diff", "cg_annotate"):
        if shutil.which(tool) is None:
            raise GatewayLabError(f"{tool} not found (it comes with valgrind)")
    with open(diff, "w") as f:
        subprocess.run(["cg_diff", str(n1_file), str(n2_file)], stdout=f, check=True, timeout=300)
    r = subprocess.run(
        ["cg_annotate", f"--threshold={threshold}", "--auto=no", str(diff)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return r.stdout


def files_of(out_dir: PathLike, prefix: str = "cachegrind.out.") -> list[Path]:
    """Every Cachegrind output file of one run's folder (one per process)."""
    found = sorted(Path(out_dir).glob(prefix + "*"))
    if not found:
        raise CachegrindFileError(f"{out_dir}: no {prefix}* file")
    return found


__all__ = [
    "LABEL",
    "CachegrindFileError",
    "FunctionCost",
    "FunctionView",
    "Profile",
    "cg_annotate_text",
    "files_of",
    "module_path",
    "per_request_functions",
    "read",
]
