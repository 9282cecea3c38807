"""environment.yml (conda users) mirrors pyproject.toml: the same packages with the same
specifiers -- runtime dependencies, every optional extra (dev included) and the build
backend (maturin), which conda users need to `pip install -e .`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> tuple[str, str]:
    r = Requirement(req)
    name = re.sub(r"[-_.]+", "-", r.name).lower()
    spec = ",".join(sorted(str(s) for s in r.specifier))
    return name, spec + (f";{r.marker}" if r.marker else "")


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"].get("optional-dependencies", {}).values():
        reqs += extra
    reqs += [r for r in data["build-system"]["requires"] if r.lower().startswith("maturin")]
    out: dict[str, str] = {}
    for r in reqs:
        name, spec = _norm(r)
        assert name not in out or out[name] == spec, (
            f"{name} listed twice with different specifiers in pyproject.toml"
        )
        out[name] = spec
    return out


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one `pip:` section"
    out: dict[str, str] = {}
    for r in pip[0]:
        name, spec = _norm(r)
        assert name not in out, f"{name} listed twice in environment.yml"
        out[name] = spec
    return out


def test_environment_yml_mirrors_pyproject():
    py, env = _pyproject(), _environment()
    assert "maturin" in env, "environment.yml must list maturin (the build backend)"
    missing = sorted(set(py) - set(env))
    extra = sorted(set(env) - set(py))
    differ = sorted(n for n in set(py) & set(env) if py[n] != env[n])
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"
    assert not extra, f"in environment.yml but not pyproject.toml: {extra}"
    assert not differ, "specifiers differ: " + ", ".join(f"{n}: {py[n]!r} vs {env[n]!r}" for n in differ)


def test_environment_python_matches_requires_python():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pins = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert pins, "environment.yml pins no python"
    version = pins[0].split("=", 1)[1].strip("=")
    from packaging.specifiers import SpecifierSet

    assert version in SpecifierSet(data["project"]["requires-python"]) or f"{version}.0" in SpecifierSet(
        data["project"]["requires-python"]
    )
