"""`gatewaylab bundle OUT [--python X.Y]`: take the study to the hardware (docs/bundle.md).

A bundle is a folder that runs `gatewaylab sweep` on another Linux machine, offline, where
JupyterLab and pandas are not installed:

    OUT/wheels/      the project's wheel (with its compiled extension: the Rust twins, the
                     native mock and load generator) + the runtime dependencies only
                     (pyproject `dependencies`; the `analysis` and `dev` extras stay home)
    OUT/bin/         gatewaylab-server (rung 3), built here in release mode
    OUT/bundle.json  the manifest: format, version, git sha + dirty flag, build profile,
                     rustc, Python version and wheel tag, every wheel and binary with its size and sha256
    OUT/run.sh       the one line to run:  ./run.sh sweep --raw --modes py,py+rs --profile xeon-4c
                     (the first call makes OUT/venv with `pip install --no-index --find-links`)

On the target every result's meta.json says `"provenance": {"kind": "bundle", ...}` with the
bundle's git sha, build profile and Python version ($GATEWAYLAB_BUNDLE, set by run.sh, names
the manifest; harness.results.meta reads it). `gatewaylab import RUN_DIR` at home makes the tables.

    from harness.infra.bundle import build_bundle
    manifest = build_bundle("/tmp/xeon-bundle", python="3.11")

Building needs this checkout (`make dev` done), maturin, and the package registry for the
dependency wheels (pip's cache makes a second build quick). The extension is built for the
stable ABI (abi3, CPython >= 3.11), so one project wheel serves every target version. For
the running Python's version the dependencies come from `pip wheel` (registry wheels, sdists
built here); for another version from `pip download --only-binary=:all:` for that version
and this machine's platform tags (a dependency with no wheel there is a clear error).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
FORMAT = "gatewaylab-bundle"
VERSION = 1
MANIFEST = "bundle.json"
BUNDLE_ENV = "GATEWAYLAB_BUNDLE"
SERVER_BIN = "gatewaylab-server"

RUN_SH = """#!/bin/sh
# gatewaylab bundle {sha} (Python {python}): ./run.sh sweep --raw --modes py,py+rs --profile xeon-4c
D="$(cd "$(dirname "$0")" && pwd)"; [ -x "$D/venv/bin/gatewaylab" ] || {{ python{python} -m venv "$D/venv" && "$D/venv/bin/python" -m pip install -q --no-index --find-links "$D/wheels" gatewaylab; }} || exit 1; GATEWAYLAB_BUNDLE="$D/{manifest}" GATEWAYLAB_SERVER_BIN="$D/bin/{server}" exec "$D/venv/bin/gatewaylab" "$@"
"""

README = """gatewaylab bundle: run the study on the target hardware, offline (docs/bundle.md).

  ./run.sh sweep --raw --modes py,py+rs,rs-core,rs-server --concurrency 1..16 --profile xeon-4c

The first call installs into ./venv (python{python} -m venv; pip install --no-index from ./wheels).
Copy the run folder it prints back home, then: gatewaylab import RUN_DIR
"""


def _run(cmd: list[str], what: str, cwd: Path | None = None, env: dict | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
        raise ConfigError(f"{what} failed ({' '.join(cmd[:4])} ...):\n{tail}")
    return r.stdout


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _maturin() -> str:
    cand = Path(sys.executable).parent / "maturin"
    exe = str(cand) if cand.exists() else shutil.which("maturin")
    if exe is None:
        raise ConfigError("maturin is not installed (make dev installs it into .venv)")
    return exe


def _platform_tags() -> list[str]:
    from packaging.tags import platform_tags

    return list(platform_tags())


def build_bundle(out: str | os.PathLike, python: str | None = None) -> dict[str, Any]:
    """Write a bundle into `out` (new or empty); returns its manifest (also OUT/bundle.json)."""
    from harness.results.meta import build_profile, git_info, rustc_version

    python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not re.fullmatch(r"\d\.\d{1,2}", python):
        raise ConfigError(f"--python {python!r}: expected a CPython version like 3.11")
    if tuple(map(int, python.split("."))) < (3, 11):
        raise ConfigError(f"--python {python}: the project requires Python >= 3.11")
    if not (REPO / "pyproject.toml").is_file() or not (REPO / "native").is_dir():
        raise ConfigError(f"{REPO} is not a gatewaylab checkout: a bundle is built from one")
    server = REPO / "native" / "target" / "release" / SERVER_BIN
    if not server.is_file():
        raise ConfigError(f"{server} is not built: run `make dev` first")
    profile = build_profile()
    if profile != "release":
        raise ConfigError(
            f"the extension here is a {profile or 'missing'} build: a bundle ships release builds (make dev)"
        )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty")
    wheels, bindir = out / "wheels", out / "bin"
    wheels.mkdir(parents=True, exist_ok=True)
    bindir.mkdir()
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    tag = "cp" + python.replace(".", "")

    # 1. the project's wheel: maturin in release mode (cargo reuses what `make dev` compiled)
    _run(
        [_maturin(), "build", "--release", "--interpreter", sys.executable, "--out", str(wheels), "--quiet"],
        "building the project wheel (maturin)",
        cwd=REPO,
    )
    own = sorted(wheels.glob("gatewaylab-*.whl"))
    if len(own) != 1 or "-abi3-" not in own[0].name:
        raise ConfigError(
            f"maturin wrote {[p.name for p in wheels.iterdir()]}, expected one abi3 gatewaylab wheel"
        )
    # 2. the runtime dependencies (never the analysis/dev extras): resolved from the wheel's own metadata
    pip = [sys.executable, "-m", "pip"]
    if python == here:
        _run(
            [*pip, "wheel", "-q", "--wheel-dir", str(wheels), str(own[0])],
            "fetching the dependency wheels (pip wheel)",
        )
    else:
        plat = [a for t in _platform_tags() for a in ("--platform", t)]
        _run(
            [
                *pip,
                "download",
                "-q",
                "--dest",
                str(wheels),
                "--only-binary=:all:",
                "--python-version",
                python,
                "--implementation",
                "cp",
                "--abi",
                tag,
                "--abi",
                "abi3",
                "--abi",
                "none",
                *plat,
                str(own[0]),
            ],
            f"downloading the dependency wheels for Python {python} (pip download)",
        )
    # 3. the native binary
    shutil.copy2(server, bindir / SERVER_BIN)
    # 4. manifest, run script
    git = git_info()
    files = sorted(p for p in out.rglob("*") if p.is_file())
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git_sha": git["git_sha"],
        "git_dirty": git["git_dirty"],
        "build_profile": profile,
        "rustc_version": rustc_version(),
        "python": python,
        "python_tag": tag,
        "project_wheel": own[0].name,
        "server_binary": f"bin/{SERVER_BIN}",
        "built_on": {"platform": sys.platform, "python": sys.version.split()[0]},
        "files": [
            {"path": str(p.relative_to(out)), "bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files
        ],
    }
    manifest["bytes"] = sum(f["bytes"] for f in manifest["files"])
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    run_sh = out / "run.sh"
    run_sh.write_text(
        RUN_SH.format(
            sha=(git["git_sha"] or "nogit")[:12], python=python, manifest=MANIFEST, server=SERVER_BIN
        )
    )
    run_sh.chmod(0o755)
    (out / "README.txt").write_text(README.format(python=python))
    return manifest


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """A bundle's manifest; ConfigError when the file is not one."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"${BUNDLE_ENV}={p}: cannot read the bundle manifest ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"${BUNDLE_ENV}={p}: not a gatewaylab bundle manifest")
    return doc


def provenance() -> dict[str, Any]:
    """Where the running code came from, for meta.json: a bundle (its manifest named by
    $GATEWAYLAB_BUNDLE, set by run.sh), or a checkout / an install of this tree."""
    path = os.environ.get(BUNDLE_ENV)
    venv = os.environ.get("GATEWAYLAB_VENV")  # harness.infra.interpreters.VENV_ENV
    if not path and venv:  # a venv of the interpreter axis: built from a checkout, described by its manifest
        from harness.infra.interpreters import read_venv_manifest

        v = read_venv_manifest(venv)
        return {
            "kind": "venv",
            "manifest": venv,
            "git_sha": v.get("git_sha"),
            "git_dirty": v.get("git_dirty"),
            "checkout": v.get("checkout"),
            "source_hash": v.get("source_hash"),
            "project_version": v.get("project_version"),
            "wheel": v.get("wheel"),
            "flavor": v.get("flavor"),
        }
    if not path:
        return {"kind": "checkout" if (REPO / ".git").exists() else "install"}
    m = read_manifest(path)
    return {
        "kind": "bundle",
        "manifest": str(Path(path).resolve()),
        "git_sha": m.get("git_sha"),
        "git_dirty": m.get("git_dirty"),
        "build_profile": m.get("build_profile"),
        "rustc_version": m.get("rustc_version"),
        "python": m.get("python"),
        "created": m.get("created"),
        "project_wheel": m.get("project_wheel"),
    }
