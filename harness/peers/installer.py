"""`gatewaylab peers install|list`: each peer from its own registry into .peers/<name>.

Idempotent: a peer whose pinned version is already installed (checked on disk, not only in
the manifest) is left alone, so a second run takes well under a second. A failed install
raises `PeerError` with the installer's last lines; the peers installed before it stay.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.errors import GatewayLabError
from harness.peers import manifest, peers_dir, pins


class PeerError(GatewayLabError, RuntimeError):
    """A peer cannot be installed or started; the message says why."""


def cache_root() -> Path:
    """Build products shared by every checkout on this machine ($GATEWAYLAB_CACHE or
    ~/.cache/gatewaylab): a fresh clone (CI) then installs a peer in seconds, not minutes."""
    return Path(os.environ.get("GATEWAYLAB_CACHE") or Path.home() / ".cache" / "gatewaylab")


def cargo_target_dir(package: str, version: str) -> Path:
    """Where cargo builds a crate peer: outside the checkout, keyed by version."""
    return cache_root() / "cargo-target" / f"{package}-{version}"


def venv_dir(name: str, version: str, python: str) -> Path:
    """A Python peer's venv: outside the checkout, keyed by version and interpreter (a venv
    cannot move, so .peers/<name> is a symlink to it)."""
    return cache_root() / "venvs" / f"{name}-{version}-{Path(python).name}"


# ------------------------------------------------------------------ what is on disk


def _site_packages(venv: Path) -> list[Path]:
    return sorted(venv.glob("lib/python3*/site-packages"))


def entry_point(name: str) -> Path:
    """The executable or script that starts peer `name`."""
    d = peers_dir() / name
    if name == "litellm":
        return d / "bin" / "litellm"
    if name == "portkey":
        return d / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if name == "noveum":
        return d / "bin" / pins()["noveum"]["binary"]
    raise PeerError(f"unknown peer {name!r}; known: {', '.join(pins())}")


def on_disk_version(name: str) -> str | None:
    """The version actually installed under .peers/<name>, or None."""
    d = peers_dir() / name
    if name == "litellm":
        for sp in _site_packages(d):
            for info in sp.glob("litellm-*.dist-info"):
                ver = info.name[len("litellm-") : -len(".dist-info")]
                if (d / "bin" / "litellm").exists() and (sp / "litellm_proxy_extras").exists():
                    return ver
        return None
    if name == "portkey":
        pj = d / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
        return json.loads(pj.read_text())["version"] if pj.exists() and entry_point(name).exists() else None
    if name == "noveum":
        crates = d / ".crates.toml"
        if not (crates.exists() and entry_point(name).exists()):
            return None
        pkg = pins()["noveum"]["package"]
        for line in crates.read_text().splitlines():
            if line.startswith(f'"{pkg} '):
                return line.split()[1]
        return None
    return None


# ------------------------------------------------------------------ installers


def _run(argv: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    with open(log_path, "w") as logf:
        proc = subprocess.run(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    if proc.returncode != 0:
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-4:])
        raise PeerError(f"{' '.join(argv[:4])} ... failed (exit {proc.returncode}; log {log_path}): {tail}")


def _install_litellm(pin: dict, log_path: Path) -> None:
    python = shutil.which(pin.get("python", "python3")) or "python3"
    venv = venv_dir("litellm", pin["version"], python)
    py = venv / "bin" / "python"
    if not py.exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run([python, "-m", "venv", str(venv)], log_path)
    done = any(
        any(sp.glob(f"litellm-{pin['version']}.dist-info")) and (sp / "litellm_proxy_extras").exists()
        for sp in _site_packages(venv)
    )
    if not done:  # another checkout on this machine may have installed it already
        _run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                f"{pin['package']}=={pin['version']}",
            ],
            log_path,
        )
    link = peers_dir() / "litellm"
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)  # an install from before the venv moved to the cache
    link.unlink(missing_ok=True)
    link.symlink_to(venv, target_is_directory=True)


def _install_portkey(pin: dict, log_path: Path) -> None:
    d = peers_dir() / "portkey"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "package.json").exists():
        (d / "package.json").write_text(
            json.dumps({"name": "gatewaylab-peer-portkey", "private": True}) + "\n"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise PeerError("npm is not installed (the Makefile installs Debian's nodejs/npm)")
    _run(
        [npm, "install", "--no-audit", "--no-fund", "--save-exact", f"{pin['package']}@{pin['version']}"],
        log_path,
        cwd=d,
    )


def _install_noveum(pin: dict, log_path: Path) -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        raise PeerError("cargo is not installed (Rust stable is a prerequisite, see README)")
    target = cargo_target_dir(pin["package"], pin["version"])
    target.mkdir(parents=True, exist_ok=True)
    _run(
        [
            cargo,
            "install",
            "--locked",
            "--root",
            str(peers_dir() / "noveum"),
            "--version",
            pin["version"],
            pin["package"],
        ],
        log_path,
        env={"CARGO_TARGET_DIR": str(target)},
    )


INSTALLERS: dict[str, Callable[[dict, Path], None]] = {
    "litellm": _install_litellm,
    "portkey": _install_portkey,
    "noveum": _install_noveum,
}


def _write_manifest(data: dict[str, Any]) -> None:
    path = peers_dir() / "manifest.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _record(name: str, pin: dict, seconds: float | None, prev: dict | None) -> dict[str, Any]:
    return {
        "version": pin["version"],
        "registry": pin["registry"],
        "package": pin["package"],
        "path": str(peers_dir() / name),
        "entry": str(entry_point(name)),
        "installed_at": (prev or {}).get("installed_at")
        if seconds is None
        else _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "install_s": (prev or {}).get("install_s") if seconds is None else round(seconds, 1),
    }


def install(names: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Install the named peers (default: every installable one); returns the manifest."""
    all_pins = pins()
    names = list(names) if names else [n for n, p in all_pins.items() if p.get("installable", True)]
    for n in names:
        if n not in all_pins:
            raise PeerError(f"unknown peer {n!r}; known: {', '.join(all_pins)}")
        if not all_pins[n].get("installable", True):
            raise PeerError(f"{n}: {all_pins[n]['reason']}")
    root = peers_dir()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    data = manifest()
    for n in names:
        pin = all_pins[n]
        have = on_disk_version(n)
        if have == pin["version"]:
            data["peers"][n] = _record(n, pin, None, data["peers"].get(n))
            log(f"{n} {have}: already installed ({root / n})")
            continue
        log(
            f"{n}: installing {pin['package']} {pin['version']} from {pin['registry']}"
            + (f" (replacing {have})" if have else "")
            + " ..."
        )
        t0 = time.monotonic()
        INSTALLERS[n](pin, root / "logs" / f"{n}.log")
        took = time.monotonic() - t0
        got = on_disk_version(n)
        if got != pin["version"]:
            raise PeerError(
                f"{n}: installer finished but found version {got!r} on disk, pinned {pin['version']}"
            )
        data["peers"][n] = _record(n, pin, took, data["peers"].get(n))
        _write_manifest(data)
        log(f"{n} {got}: installed in {took:.0f} s ({root / n})")
    _write_manifest(data)
    return data


def listing() -> list[dict[str, Any]]:
    """One row per pinned peer: name, pinned, installed, path or reason."""
    rows = []
    recorded = manifest()["peers"]
    for n, pin in pins().items():
        if not pin.get("installable", True):
            rows.append(
                {
                    "peer": n,
                    "pinned": pin.get("version", "-"),
                    "installed": None,
                    "status": "not installable",
                    "where": pin["reason"],
                    "package": pin["package"],
                    "registry": pin["registry"],
                }
            )
            continue
        have = on_disk_version(n)
        status = "installed" if have == pin["version"] else ("other version" if have else "not installed")
        rec = recorded.get(n) or {}
        rows.append(
            {
                "peer": n,
                "pinned": pin["version"],
                "installed": have,
                "status": status,
                "where": str(entry_point(n)) if have else "run `gatewaylab peers install " + n + "`",
                "package": pin["package"],
                "registry": pin["registry"],
                "install_s": rec.get("install_s"),
            }
        )
    return rows
