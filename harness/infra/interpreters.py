"""The interpreter axis (docs/interpreters.md): find the machine's Pythons, build and cache one
venv per interpreter holding this project and its extension, and say which could not be used.

    from harness.infra import interpreters as I
    found = I.discover()                  # PATH and `pyenv versions`, each interpreter probed
    print(found.line())                   # one line: what was found, what cannot be used and why
    chosen = I.resolve("3.11,3.12,3.13", found)     # or paths; ConfigError in one line otherwise
    envs = I.prepare_all(chosen)          # one venv each, built once and cached; the abi3 wheel built once
    envs[0].python                        # <cache>/interpreters/<checkout>/<slug>-<key>/bin/python

An `Interpreter` is what a probe of the executable says: implementation, version, build flags
(GIL or free-threaded, JIT, debug), SOABI. Its `label` ("CPython 3.12.1 GIL") is what the
cells table's `python` column, the figures and the exports carry; its `tag` ("cp312") names
metrics.

The extension is built for the stable ABI (`abi3`, CPython >= 3.11): one wheel serves every GIL
build, so it is built once per source (`maturin build --release`) and installed into each venv.
A free-threaded interpreter cannot load an abi3 extension: it gets a version-specific build
(the binding crate without its `abi3` feature), and only from the version PyO3 supports
(`FREE_THREADED_MIN`); older ones are refused in one line.

The cache: `$GATEWAYLAB_CACHE/interpreters` (default ~/.cache/gatewaylab). One venv per
(checkout, interpreter identity, dependency set); its manifest `gatewaylab-venv.json`, written
last, records what is installed: the project version and the source hash (`source_hash`). A
second `prepare` of the same source reuses the venv; a changed version or source reinstalls the
project (rebuilding the wheel once); a changed interpreter or dependency set makes a new venv.
A process using a venv holds a shared lock on it (`InterpreterEnv.hold`), so a reinstall waits
for a running benchmark or sweep instead of changing files under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MANIFEST = "gatewaylab-venv.json"
MANIFEST_FORMAT = "gatewaylab-interpreter-venv/1"
# set for the processes run in a venv: names its manifest (read by harness.infra.bundle.provenance)
VENV_ENV = "GATEWAYLAB_VENV"

# PyO3 0.30 builds free-threaded extensions for CPython 3.14t and newer (its changelog:
# "Drop support for Python 3.13t"); a 3.13t interpreter is refused, never half-supported.
FREE_THREADED_MIN = (3, 14)
PYO3 = "PyO3 0.30"

# Installed into every venv besides the project's runtime dependencies: `bench spawn` takes
# its percentiles with numpy, which the runtime set (pyproject `dependencies`) leaves out.
VENV_EXTRAS = ("numpy",)

# The source trees whose bytes go into the wheel (the Python packages and the Rust crates).
_SOURCE_DIRS = ("gateway", "harness", "lab_ext", "native")
_SOURCE_FILES = ("pyproject.toml", "README.md")
_SKIP_DIRS = {"target", "fuzz", "__pycache__", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".so", ".pyd")

# One probe, run by every candidate interpreter (Python 2 too, to say why it cannot be used).
PROBE = r"""
import json, platform, sys
try:
    import sysconfig
    cv = sysconfig.get_config_var
except Exception:
    cv = lambda name: None

def _jit():
    j = getattr(sys, "_jit", None)
    if j is not None and hasattr(j, "is_available"):
        try:
            return bool(j.is_available()), bool(j.is_enabled())
        except Exception:
            pass
    for arg in (cv("CONFIG_ARGS") or "").replace("'", " ").split():
        if arg.startswith("--enable-experimental-jit"):
            value = arg.partition("=")[2] or "yes"
            # "interpreter" builds the tier-2 interpreter without a JIT; "yes-off" a JIT off by default
            return value in ("yes", "yes-off"), value == "yes"
    return False, False

def _probe():
    try:
        import ensurepip, venv
        can_venv = True
    except Exception:
        can_venv = False
    jit_built, jit_enabled = _jit()
    vi = sys.version_info
    return {
        "implementation": platform.python_implementation(),
        "version": "%d.%d.%d" % tuple(vi[:3]),
        "gil_disabled": bool(cv("Py_GIL_DISABLED")),
        "gil_enabled": bool(sys._is_gil_enabled()) if hasattr(sys, "_is_gil_enabled") else True,
        "jit_built": jit_built,
        "jit_enabled": jit_enabled,
        "debug": bool(cv("Py_DEBUG")),
        "soabi": cv("SOABI") or "",
        "executable": sys.executable,
        "in_venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix),
        "can_venv": can_venv,
    }
"""


def slug(label: str) -> str:
    """`CPython 3.12.1 GIL` -> `cpython-3.12.1-gil` (file names, cell stems)."""
    return re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-")


def cache_root() -> Path:
    """$GATEWAYLAB_CACHE/interpreters (default ~/.cache/gatewaylab/interpreters)."""
    base = os.environ.get("GATEWAYLAB_CACHE") or Path.home() / ".cache" / "gatewaylab"
    return Path(base) / "interpreters"


# --- what an interpreter is --------------------------------------------------------------


@dataclass(frozen=True)
class Interpreter:
    path: str  # the executable as found or given (run as is)
    realpath: str  # symlinks resolved: the identity
    implementation: str  # "CPython", "PyPy", ...
    version: str  # "3.12.1"
    gil_disabled: bool  # built free-threaded (Py_GIL_DISABLED)
    gil_enabled: bool  # the GIL is on in a fresh process (a free-threaded build can turn it back on)
    jit_built: bool
    jit_enabled: bool
    debug: bool
    soabi: str
    source: str = "given"  # "PATH", "pyenv" or "given" (a path on the command line)
    can_venv: bool = True  # has the venv and ensurepip modules (Debian splits them out)

    @property
    def version_info(self) -> tuple[int, int, int]:
        a, b, c = (int(x) for x in self.version.split("."))
        return a, b, c

    @property
    def flags(self) -> list[str]:
        out = ["free-threaded" if self.gil_disabled else "GIL"]
        if self.jit_built:
            out.append("JIT" if self.jit_enabled else "JIT off")
        if self.debug:
            out.append("debug")
        return out

    @property
    def label(self) -> str:
        """`CPython 3.12.1 GIL`, `CPython 3.14.0 free-threaded`, `CPython 3.13.0 GIL JIT`."""
        return f"{self.implementation} {self.version} {' '.join(self.flags)}"

    @property
    def tag(self) -> str:
        """Stable short name for metrics: cp312, cp314t, cp313_jit, cp312_d."""
        major, minor, _ = self.version_info
        impl = {"CPython": "cp", "PyPy": "pp"}.get(self.implementation, self.implementation.lower()[:2])
        t = f"{impl}{major}{minor}{'t' if self.gil_disabled else ''}"
        return t + ("_jit" if self.jit_built and self.jit_enabled else "") + ("_d" if self.debug else "")

    @property
    def slug(self) -> str:
        """File-name form of the label: cpython-3.12.1-gil."""
        return slug(self.label)

    @property
    def where(self) -> str:
        return "pyenv" if self.source == "pyenv" else self.path

    def identity(self) -> dict[str, Any]:
        """What the venv key hashes: the interpreter's build, not where it was found."""
        return {
            "realpath": self.realpath,
            "implementation": self.implementation,
            "version": self.version,
            "gil_disabled": self.gil_disabled,
            "jit_built": self.jit_built,
            "debug": self.debug,
            "soabi": self.soabi,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label, "tag": self.tag}


class ProbeFailed(ConfigError):
    """The executable did not run the probe (not a Python, or a broken one)."""


def probe(path: str | os.PathLike, source: str = "given", timeout: float = 20.0) -> Interpreter:
    """Run the probe with the executable at `path`; ProbeFailed (one line) when it cannot."""
    p = str(path)
    code = PROBE + "\nprint(json.dumps(_probe()))\n"
    try:
        r = subprocess.run([p, "-c", code], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ProbeFailed(f"{p}: does not run ({type(e).__name__}: {e})") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProbeFailed(f"{p}: not a working Python (exit {r.returncode}: {last})")
    try:
        d = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ProbeFailed(f"{p}: the probe printed no JSON: {r.stdout.strip()[-200:]!r}") from None
    return _from_probe(p, d, source)


def _from_probe(path: str, d: dict[str, Any], source: str) -> Interpreter:
    return Interpreter(
        path=path,
        realpath=os.path.realpath(path),
        implementation=str(d["implementation"]),
        version=str(d["version"]),
        gil_disabled=bool(d["gil_disabled"]),
        gil_enabled=bool(d["gil_enabled"]),
        jit_built=bool(d["jit_built"]),
        jit_enabled=bool(d["jit_enabled"]),
        debug=bool(d["debug"]),
        soabi=str(d["soabi"]),
        source=source,
        can_venv=bool(d.get("can_venv", True)),
    )


def running() -> Interpreter:
    """The interpreter this process runs on (the same probe, in-process)."""
    ns: dict[str, Any] = {}
    exec(compile(PROBE, "<interpreter probe>", "exec"), ns)  # noqa: S102 - our own constant
    d = ns["_probe"]()
    return _from_probe(sys.executable, d, "running")


def running_label() -> str:
    return running().label


# --- what the project needs ----------------------------------------------------------------


def requires_python() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]


def unusable_reason(i: Interpreter) -> str | None:
    """Why this interpreter cannot hold a venv with the project, or None when it can."""
    from packaging.specifiers import SpecifierSet

    spec = requires_python()
    if i.version not in SpecifierSet(spec):
        return f"below the project's requires-python {spec}"
    if i.implementation != "CPython":
        return f"{i.implementation}: the extension's wheels are built for CPython only"
    if i.gil_disabled and i.version_info[:2] < FREE_THREADED_MIN:
        m = ".".join(map(str, FREE_THREADED_MIN))
        return (
            f"free-threaded {i.version_info[0]}.{i.version_info[1]}: {PYO3} builds free-threaded "
            f"extensions for {m}t and newer"
        )
    if not i.can_venv:
        return "has no venv/ensurepip module (on Debian: apt install python3.X-venv)"
    return None


@dataclass(frozen=True)
class Flavor:
    """How the extension is built for an interpreter (the build-flag choice)."""

    name: str  # "abi3" (every GIL CPython >= 3.11) or a version-specific tag ("cp314t")
    cargo_args: tuple[str, ...]  # extra maturin/cargo arguments
    why: str


ABI3 = Flavor("abi3", (), "stable ABI (abi3-py311): one wheel for every GIL build of CPython 3.11+")


def build_flavor(i: Interpreter) -> Flavor:
    """abi3 for a GIL build; a version-specific build without the `abi3` feature for a
    free-threaded one (an abi3 extension cannot be loaded without the GIL before PEP 803)."""
    if not i.gil_disabled:
        return ABI3
    major, minor, _ = i.version_info
    return Flavor(
        f"cp{major}{minor}t",
        ("--no-default-features", "--features", "extension-module"),
        "free-threaded: version-specific build (the binding crate without its abi3 feature)",
    )


# --- discovery -----------------------------------------------------------------------------

_NAME = re.compile(r"^python(3(\.\d+t?)?)?$")


@dataclass
class Unusable:
    path: str
    source: str
    reason: str
    interpreter: Interpreter | None = None

    @property
    def what(self) -> str:
        if self.interpreter is not None:
            i = self.interpreter
            return f"{i.implementation} {i.version}" + (" free-threaded" if i.gil_disabled else "")
        return self.path


@dataclass
class Discovery:
    usable: list[Interpreter] = field(default_factory=list)
    unusable: list[Unusable] = field(default_factory=list)

    def line(self) -> str:
        """One line: the interpreters found and, grouped by reason, those that cannot be used."""
        found = ", ".join(f"{i.label} ({i.where})" for i in self.usable) or "none"
        out = f"interpreters: found {found}"
        by: dict[str, list[str]] = {}
        for u in self.unusable:
            by.setdefault(u.reason, []).append(
                u.what + (" (pyenv)" if u.source == "pyenv" else f" ({u.path})")
            )
        if by:
            out += "; cannot use " + "; ".join(f"{', '.join(w)}: {r}" for r, w in by.items())
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "usable": [i.to_dict() for i in self.usable],
            "unusable": [
                {"path": u.path, "source": u.source, "reason": u.reason, "what": u.what}
                for u in self.unusable
            ],
        }


def _pyenv_root() -> Path | None:
    exe = shutil.which("pyenv")
    if exe is not None:
        r = subprocess.run([exe, "root"], capture_output=True, text=True, timeout=20)
        if r.returncode == 0 and r.stdout.strip():
            return Path(r.stdout.strip())
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    return root if (root / "bin" / "pyenv").exists() else None


def _pyenv_candidates(root: Path | None) -> list[str]:
    """`pyenv versions --bare` -> each version's bin/python3 (bin/python as a last resort)."""
    if root is None:
        return []
    exe = shutil.which("pyenv") or str(root / "bin" / "pyenv")
    env = {**os.environ, "PYENV_ROOT": str(root)}
    r = subprocess.run(
        [exe, "versions", "--bare", "--skip-aliases"], capture_output=True, text=True, timeout=30, env=env
    )
    if r.returncode != 0:
        return []
    out = []
    for v in r.stdout.split():
        if v == "system":
            continue  # the PATH's interpreter, found there
        for name in ("python3", "python"):
            p = root / "versions" / v / "bin" / name
            if p.exists():
                out.append(str(p))
                break
    return out


def _path_candidates(path_env: str | None, skip_under: Path | None) -> list[str]:
    """python, python3, python3.X and python3.Xt on PATH (pyenv's shims are skipped: they
    dispatch to whichever version pyenv selects, so pyenv's own list is used instead)."""
    out = []
    for d in (path_env if path_env is not None else os.environ.get("PATH", "")).split(os.pathsep):
        if not d or not os.path.isdir(d):
            continue
        if skip_under is not None and Path(d).resolve().is_relative_to(skip_under.resolve()):
            continue
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if _NAME.match(name) and os.access(p, os.X_OK) and os.path.isfile(p):
                out.append(p)
    return out


def _probe_all(cands: list[tuple[str, str]]) -> list[tuple[str, str, Interpreter | None, str | None]]:
    def one(c):
        path, source = c
        try:
            return path, source, probe(path, source), None
        except ProbeFailed as e:
            return path, source, None, str(e).removeprefix(f"{path}: ")

    with ThreadPoolExecutor(max_workers=4) as ex:
        return list(ex.map(one, cands))


def discover(path_env: str | None = None, pyenv_root: Path | None | str = "auto") -> Discovery:
    """Every Python on PATH and in `pyenv versions`, probed; each once (by real path), in
    that order (PATH first)."""
    root = _pyenv_root() if pyenv_root == "auto" else (Path(pyenv_root) if pyenv_root else None)
    cands: list[tuple[str, str]] = []
    seen: set[str] = set()
    for src, paths in (
        ("PATH", _path_candidates(path_env, root)),
        ("pyenv", _pyenv_candidates(root)),
    ):
        for p in paths:
            rp = os.path.realpath(p)
            if rp not in seen:
                seen.add(rp)
                cands.append((p, src))
    found = Discovery()
    for path, source, interp, err in _probe_all(cands):
        if interp is None:
            found.unusable.append(Unusable(path, source, err or "unknown"))
            continue
        why = unusable_reason(interp)
        if why is None:
            found.usable.append(interp)
        else:
            found.unusable.append(Unusable(path, source, why, interp))
    return found


# --- --pythons ------------------------------------------------------------------------------

_SPEC = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(t?)$")


def parse_spec(spec: str | Iterable[str]) -> list[str]:
    """`"3.11,3.12 3.13"` or a list -> ["3.11", "3.12", "3.13"] (commas or spaces)."""
    items = (
        spec.replace(",", " ").split()
        if isinstance(spec, str)
        else [s for x in spec for s in str(x).replace(",", " ").split()]
    )
    if not items:
        raise ConfigError("--pythons: expected versions like 3.11,3.12,3.13 or interpreter paths")
    for s in items:
        if not (_SPEC.match(s) or _is_path(s)):
            raise ConfigError(
                f"--pythons {s!r}: expected a version (3.12, 3.12.1, 3.14t) or an interpreter path"
            )
    return items


def _is_path(s: str) -> bool:
    return os.sep in s or s.startswith(("~", "."))


def resolve(spec: str | Iterable[str], found: Discovery | None = None) -> list[Interpreter]:
    """Each spec -> one usable interpreter: a version picks the newest patch release found
    (PATH before pyenv on a tie), `3.14t` a free-threaded build, a path that executable.
    Anything that cannot be used is a ConfigError naming it and why, in one line."""
    items = parse_spec(spec)
    out: list[Interpreter] = []
    for s in items:
        if _is_path(s):
            path = os.path.expanduser(s)
            if not os.path.exists(path):
                raise ConfigError(f"--pythons {s}: no such file")
            i = probe(path, "given")
            why = unusable_reason(i)
            if why:
                raise ConfigError(f"--pythons {s}: {i.label} cannot be used: {why}")
        else:
            found = found if found is not None else discover()
            i = _pick(s, found)
        if all(i.realpath != o.realpath for o in out):
            out.append(i)
    return out


def _pick(s: str, found: Discovery) -> Interpreter:
    m = _SPEC.match(s)
    assert m is not None
    want = (int(m.group(1)), int(m.group(2)))
    patch = int(m.group(3)) if m.group(3) is not None else None
    ft = m.group(4) == "t"

    def matches(i: Interpreter) -> bool:
        v = i.version_info
        return v[:2] == want and (patch is None or v[2] == patch) and i.gil_disabled == ft

    hits = [i for i in found.usable if matches(i)]
    if hits:
        best = max(i.version_info for i in hits)
        return next(i for i in hits if i.version_info == best)
    bad = [u for u in found.unusable if u.interpreter is not None and matches(u.interpreter)]
    if bad:
        u = bad[0]
        raise ConfigError(f"--pythons {s}: {u.what} ({u.path}) cannot be used: {u.reason}")
    have = ", ".join(f"{i.version}{'t' if i.gil_disabled else ''}" for i in found.usable) or "none"
    raise ConfigError(f"--pythons {s}: no such interpreter here (usable: {have}; give a path to use another)")


# --- the source and the wheel ---------------------------------------------------------------


def project_version() -> str:
    import tomllib

    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def dependencies() -> list[str]:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return sorted(deps) + list(VENV_EXTRAS)


def _source_files(root: Path = REPO) -> Iterator[Path]:
    for name in _SOURCE_FILES:
        if (root / name).is_file():
            yield root / name
    for top in _SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            for f in sorted(filenames):
                if not f.endswith(_SKIP_SUFFIXES):
                    yield Path(dirpath) / f


def source_hash(root: Path = REPO) -> str:
    """SHA-256 over the path and bytes of every file that goes into the wheel (the Python
    packages, the Rust crates, pyproject.toml, README.md); build products are left out."""
    h = hashlib.sha256()
    for p in _source_files(root):
        rel = p.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(4, "big") + rel)
        data = p.read_bytes()
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path, shared: bool = False) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lock_path(venv: Path) -> Path:
    return venv.parent / (venv.name + ".lock")


def _maturin() -> str:
    cand = Path(sys.executable).parent / "maturin"
    exe = str(cand) if cand.exists() else shutil.which("maturin")
    if exe is None:
        raise ConfigError("maturin is not installed (make dev installs it into .venv)")
    return exe


def _one_line(text: str) -> str:
    """The most telling line of a tool's failure output."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    causes = [ln.split("Caused by:", 1)[1].strip() for ln in lines if "Caused by:" in ln]
    if causes:  # maturin: "💥 maturin failed" then the reasons, innermost last
        return causes[-1]
    for ln in lines:
        if ln.startswith(("error", "Error", "ERROR")) or "error:" in ln:
            return ln
    return lines[-1] if lines else "no output"


class BuildRefused(ConfigError):
    """The extension cannot be built (or installed) for an interpreter."""


KEEP_WHEELS = 6  # wheel folders kept in the cache (least recently used go first)


def build_wheel(i: Interpreter, source: str, cache: Path | None = None) -> Path:
    """The project's wheel for this interpreter's flavor, built once per source and cached:
    `maturin build --release --interpreter PATH` (+ the flavor's arguments)."""
    why = unusable_reason(i)
    if why:
        raise BuildRefused(f"cannot build gateway._native for {i.label} ({i.path}): {why}")
    flavor = build_flavor(i)
    cache = cache or cache_root()
    out = cache / "wheels" / f"{source[:16]}-{flavor.name}"
    with _locked(cache / "wheels" / ".lock"):
        wheels = sorted(out.glob("gatewaylab-*.whl"))
        if len(wheels) == 1:
            os.utime(out)
            return wheels[0]
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        cmd = [
            _maturin(),
            "build",
            "--release",
            "--interpreter",
            i.path,
            "--out",
            str(out),
            *flavor.cargo_args,
        ]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wheels = sorted(out.glob("gatewaylab-*.whl"))
        if r.returncode != 0 or len(wheels) != 1:
            shutil.rmtree(out, ignore_errors=True)
            detail = _one_line(r.stderr or r.stdout) if r.returncode else f"wrote {len(wheels)} wheels"
            raise BuildRefused(f"cannot build gateway._native for {i.label} ({i.path}): maturin: {detail}")
        if flavor is ABI3 and "-abi3-" not in wheels[0].name:
            raise BuildRefused(f"maturin wrote {wheels[0].name}, expected an abi3 wheel")
        _prune_wheels(cache / "wheels")
        return wheels[0]


def _prune_wheels(d: Path, keep: int = KEEP_WHEELS) -> None:
    dirs = sorted((p for p in d.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for p in dirs[keep:]:
        shutil.rmtree(p, ignore_errors=True)


# --- the venvs -------------------------------------------------------------------------------


@dataclass
class InterpreterEnv:
    interp: Interpreter
    venv: Path
    manifest: dict[str, Any]
    action: str  # "reused" | "reinstalled" | "built"
    seconds: float  # what `prepare` took (wheel build included)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def label(self) -> str:
        return self.interp.label

    def env(self) -> dict[str, str]:
        """Environment for a process run in the venv: the checkout off sys.path, the manifest named."""
        e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        e[VENV_ENV] = str(self.venv / MANIFEST)
        return e

    @contextlib.contextmanager
    def hold(self) -> Iterator[InterpreterEnv]:
        """Use the venv: a reinstall by another process waits until this block ends."""
        with _locked(_lock_path(self.venv), shared=True):
            yield self

    def to_dict(self) -> dict[str, Any]:
        return {
            "interpreter": self.interp.to_dict(),
            "venv": str(self.venv),
            "action": self.action,
            "seconds": round(self.seconds, 2),
            "flavor": self.manifest.get("flavor"),
            "source_hash": self.manifest.get("source_hash"),
            "project_version": self.manifest.get("project_version"),
            "timings": self.manifest.get("timings"),
        }


def venv_dir(i: Interpreter, cache: Path | None = None, root: Path = REPO) -> Path:
    """<cache>/<checkout>/<slug>-<key>: one venv per checkout, interpreter and dependency set."""
    cache = cache or cache_root()
    checkout = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    key = hashlib.sha256(
        json.dumps({"interpreter": i.identity(), "dependencies": dependencies()}, sort_keys=True).encode()
    ).hexdigest()[:12]
    return cache / "venvs" / checkout / f"{i.slug}-{key}"


def plan(manifest: dict[str, Any] | None, want: dict[str, Any]) -> str:
    """What `prepare` does with a venv whose manifest is `manifest` (None: no complete venv):
    "reuse" (same interpreter, dependencies, project version and source), "reinstall" (the
    project changed) or "build" (nothing usable there)."""
    if not manifest or manifest.get("format") != MANIFEST_FORMAT:
        return "build"
    for k in ("interpreter", "dependencies", "flavor"):
        if manifest.get(k) != want[k]:
            return "build"
    if (
        manifest.get("project_version") != want["project_version"]
        or manifest.get("source_hash") != want["source_hash"]
    ):
        return "reinstall"
    return "reuse"


def read_venv_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """A venv's manifest (the file $GATEWAYLAB_VENV names); ConfigError when it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"${VENV_ENV}={path}: cannot read the venv manifest ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"${VENV_ENV}={path}: not a gatewaylab interpreter-venv manifest")
    return doc


def _read_manifest(venv: Path) -> dict[str, Any] | None:
    try:
        return json.loads((venv / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _pip(venv: Path, args: list[str], what: str, i: Interpreter) -> None:
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if r.returncode != 0:
        raise BuildRefused(
            f"cannot install {what} for {i.label} ({i.path}): pip: {_one_line(r.stderr or r.stdout)}"
        )


_VERIFY = (
    "import json, sys, gateway._native as n, harness;"
    "print(json.dumps({'build_profile': n.build_profile, 'native_version': n.__version__,"
    " 'file': n.__file__, 'harness': harness.__file__,"
    " 'gil_enabled': sys._is_gil_enabled() if hasattr(sys, '_is_gil_enabled') else True}))"
)


def _verify(venv: Path, i: Interpreter) -> dict[str, Any]:
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _VERIFY],
        capture_output=True,
        text=True,
        cwd=venv,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if r.returncode != 0:
        raise BuildRefused(f"gateway._native does not import on {i.label} ({i.path}): {_one_line(r.stderr)}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    if not str(d["harness"]).startswith(str(venv)):
        raise BuildRefused(f"{venv}: imports the project from {d['harness']}, not from the venv")
    if d["build_profile"] != "release":
        raise BuildRefused(f"{venv}: the extension is a {d['build_profile']} build, expected release")
    return d


def prepare(
    i: Interpreter,
    cache: Path | None = None,
    source: str | None = None,
    log: Callable[[str], None] | None = print,
) -> InterpreterEnv:
    """The venv for `i`, reused, reinstalled or built (see the module docstring)."""
    t0 = time.perf_counter()
    why = unusable_reason(i)
    if why:
        raise BuildRefused(f"cannot build gateway._native for {i.label} ({i.path}): {why}")
    cache = cache or cache_root()
    source = source or source_hash()
    flavor = build_flavor(i)
    venv = venv_dir(i, cache)
    want = {
        "format": MANIFEST_FORMAT,
        "interpreter": i.identity(),
        "dependencies": dependencies(),
        "flavor": flavor.name,
        "project_version": project_version(),
        "source_hash": source,
    }
    say = log or (lambda _m: None)
    with _locked(_lock_path(venv)):
        old = _read_manifest(venv)
        action = plan(old, want)
        if action == "reuse":
            assert old is not None
            return InterpreterEnv(i, venv, old, "reused", time.perf_counter() - t0)
        timings: dict[str, float] = {}
        tw = time.perf_counter()
        wheel = build_wheel(i, source, cache)
        timings["wheel_s"] = round(time.perf_counter() - tw, 2)
        (venv / MANIFEST).unlink(missing_ok=True)  # incomplete until written again
        if action == "build":
            say(f"interpreters: building the venv for {i.label} in {venv} ...")
            shutil.rmtree(venv, ignore_errors=True)
            tv = time.perf_counter()
            r = subprocess.run([i.path, "-m", "venv", str(venv)], capture_output=True, text=True)
            if r.returncode != 0:
                raise BuildRefused(f"cannot make a venv with {i.label} ({i.path}): {_one_line(r.stderr)}")
            timings["venv_s"] = round(time.perf_counter() - tv, 2)
            tp = time.perf_counter()
            _pip(venv, ["install", "-q", str(wheel), *VENV_EXTRAS], "the project and its dependencies", i)
            timings["install_s"] = round(time.perf_counter() - tp, 2)
        else:
            say(f"interpreters: the project changed; reinstalling it into the venv for {i.label} ...")
            tp = time.perf_counter()
            _pip(venv, ["install", "-q", "--no-deps", "--force-reinstall", str(wheel)], "the project", i)
            timings["install_s"] = round(time.perf_counter() - tp, 2)
        check = _verify(venv, i)
        total = time.perf_counter() - t0
        timings["total_s"] = round(total, 2)
        from harness.results.meta import git_info

        manifest = {
            **want,
            "label": i.label,
            "interpreter_path": i.path,
            "wheel": wheel.name,
            "flavor_why": flavor.why,
            "checkout": str(REPO),
            **git_info(),
            "built_by": action,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "timings": timings,
            "check": check,
        }
        # the cold build's timings outlive later reinstalls (notebook 11 reports both)
        if action == "build":
            manifest["first_build"] = {"built_at": manifest["built_at"], "timings": timings}
        else:  # None for a venv whose manifest predates this record
            manifest["first_build"] = (old or {}).get("first_build")
        tmp = venv / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.replace(venv / MANIFEST)
        return InterpreterEnv(i, venv, manifest, "built" if action == "build" else "reinstalled", total)


def prepare_all(
    interps: Iterable[Interpreter], cache: Path | None = None, log: Callable[[str], None] | None = print
) -> list[InterpreterEnv]:
    """`prepare` each (the source hashed once; each wheel flavor built once)."""
    source = source_hash()
    return [prepare(i, cache, source, log) for i in interps]


def resolve_spec(
    spec: str | Iterable[str], log: Callable[[str], None] | None = print
) -> tuple[Discovery | None, list[Interpreter]]:
    """--pythons -> (the discovery, its one line logged; the interpreters). Quick: nothing built."""
    items = parse_spec(spec)
    found = discover() if any(not _is_path(s) for s in items) else None
    if found is not None and log is not None:
        log(found.line())
    return found, resolve(items, found)


def from_spec(
    spec: str | Iterable[str], cache: Path | None = None, log: Callable[[str], None] | None = print
) -> tuple[Discovery | None, list[InterpreterEnv]]:
    """--pythons -> (the discovery, its one line logged; the prepared venvs)."""
    found, interps = resolve_spec(spec, log)
    return found, prepare_all(interps, cache, log)


# What a sweep says about a target with no interpreter on its request path (rs-server, peers).
NOT_ON_AXIS = "no Python interpreter on its request path: measured once, not per interpreter"
