"""The repository stands alone: no test, Rust test or build file reads anything beside the
checkout (a fresh clone has nothing next to it). Two guards: a scan of the sources for
paths that climb out of the checkout, and the session-wide audit hook of tests/standalone_guard.py (installed by conftest.py) that
records every file opened beside the checkout while the tests run."""

from __future__ import annotations

import re
from pathlib import Path

from tests import standalone_guard

ROOT = Path(__file__).resolve().parents[1]

# what a path out of the checkout looks like in our sources
CLIMB = re.compile(r"""\.\./shared|["']shared["']\s*/|/work/|parents\[(\d+)\]|(?:\.\./){3,}""")


def _sources() -> list[Path]:
    out = [ROOT / "Makefile", ROOT / "conftest.py", ROOT / "pyproject.toml", ROOT / "environment.yml"]
    out += sorted((ROOT / "tests").rglob("*.py"))
    out += sorted((ROOT / "notebooks").glob("*.py"))
    for crate in (ROOT / "native").iterdir():
        if crate.is_dir() and crate.name != "target":
            out += (
                sorted(crate.rglob("*.rs"))
                + sorted(crate.glob("Cargo.toml"))
                + sorted(crate.glob("build.rs"))
            )
    return [p for p in out if p.is_file() and p != Path(__file__).resolve()]  # this file spells the patterns


def _climbs(path: Path, text: str) -> list[str]:
    bad = []
    depth = len(path.relative_to(ROOT).parts) - 1  # folders between the file and the checkout root
    for n, line in enumerate(text.splitlines(), 1):
        for m in CLIMB.finditer(line):
            if m.group(1) is not None and int(m.group(1)) <= depth:
                continue  # parents[k] that stays inside the checkout
            if m.group(0).startswith("../") and path.suffix == ".rs":
                # relative to the crate (native/<crate>: two levels) with CARGO_MANIFEST_DIR,
                # else to the file's own folder
                up = m.group(0).count("../")
                if up <= (2 if "CARGO_MANIFEST_DIR" in line else depth):
                    continue
            bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    return bad


def test_no_source_climbs_out_of_the_checkout():
    bad = [b for p in _sources() for b in _climbs(p, p.read_text(errors="replace"))]
    assert not bad, "paths that leave the checkout:\n" + "\n".join(bad)


def test_the_scan_catches_the_old_vector_paths():
    """The patterns the scan is for (the vectors used to be read from ../shared)."""
    t = ROOT / "tests" / "audit" / "test_x.py"
    assert _climbs(t, 'V = (Path(__file__).resolve().parents[3] / "shared" / "vectors" / "mmr_v2.json")')
    r = ROOT / "native" / "core" / "src" / "mmr.rs"
    assert _climbs(r, 'Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/mmr_v2.json")')
    assert not _climbs(r, 'Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/mmr_v2.json")')
    assert not _climbs(t, "ROOT = Path(__file__).resolve().parents[2]")


def test_the_session_hook_records_a_read_beside_the_checkout(tmp_path):
    beside = ROOT.parent / f".{ROOT.name}-standalone-probe-does-not-exist"
    before = len(standalone_guard.OUTSIDE_READS)
    try:
        open(beside)  # noqa: SIM115 - only the audit event matters; the file does not exist
    except OSError:
        pass
    recorded = standalone_guard.OUTSIDE_READS[before:]
    # this one was deliberate: take it back out so that the session does not fail on it
    del standalone_guard.OUTSIDE_READS[before:]
    assert recorded == [str(beside)]
    # reads inside the checkout and elsewhere (tmp) are not recorded
    (ROOT / "README.md").read_text()
    (tmp_path / "x").write_text("x")
    assert len(standalone_guard.OUTSIDE_READS) == before
