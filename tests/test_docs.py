"""The docs describe this tree, in the repository's own words.

- The README's layout table lists every top-level directory, every package of gateway/ and
  every crate of native/, and everything it lists exists.
- Every repository path the README and docs/ name in backticks exists.
- Nothing refers to a document outside the repository: the published claims the notebooks
  reproduce are stated in docs/claims.md, and that is what code and docs cite.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A numbered seed document ("seed 002", "seeds 000/001"), "the seed's" / "the seeds'",
# "the seeds", or the old design document.
OUTSIDE = re.compile(
    r"seeds?\s+0\d\d|seeds'|seed's|\bthe\s+seeds\b|" + "DESIGN" + r"\.md",
    re.IGNORECASE,
)
# Files another branch was editing while these references were replaced: their prose is
# rewritten after the merge (the lead's list); nothing else may carry such a reference.
NOT_YET = ("notebooks/", "harness/bench/mmr.py")


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def _text(rel: str) -> str | None:
    try:
        return (ROOT / rel).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def test_nothing_refers_to_a_document_outside_the_repository():
    bad = []
    for rel in _tracked():
        if rel.startswith(NOT_YET) or rel.startswith("data/") or rel == "tests/test_docs.py":
            continue  # (this file names the patterns it looks for)
        text = _text(rel)
        if text is None:
            continue
        for m in OUTSIDE.finditer(text):
            bad.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}")
    assert not bad, "references outside the repository (cite docs/claims.md instead):\n" + "\n".join(bad)


def test_the_scan_catches_what_it_is_for():
    for s in ("seed 002's table", "Seeds 000/001", "the seed's claim", "the seeds' advice", "DESIGN" + ".md"):
        assert OUTSIDE.search(s), s
    for s in ("--seed S", "seed: 0", "the router's seed", "seeded", "z = seed"):
        assert not OUTSIDE.search(s), s


def _layout_rows() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| path | what lives there |") :].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    return [re.findall(r"`([^`]+)`", row.split("|")[1]) for row in rows]


def test_the_readme_layout_table_matches_the_tree():
    listed = [p for row in _layout_rows() for p in row]
    missing = [p for p in listed if not (ROOT / p).exists()]
    assert not missing, f"the layout table lists what does not exist: {missing}"
    names = {p.rstrip("/") for p in listed}
    tracked_dirs = {Path(p).parts[0] for p in _tracked() if len(Path(p).parts) > 1}
    required = {d for d in tracked_dirs if not d.startswith(".")}
    required |= {f"gateway/{d.name}" for d in (ROOT / "gateway").iterdir() if (d / "__init__.py").exists()}
    required |= {f"native/{d.name}" for d in (ROOT / "native").iterdir() if (d / "Cargo.toml").exists()}
    required |= {"data/baselines", "data/runs"}
    # a directory is listed when it, or something inside it, has a row
    unlisted = sorted(d for d in required if not any(n == d or n.startswith(d + "/") for n in names))
    assert not unlisted, f"the layout table does not list: {unlisted}"


_PATH = re.compile(r"`((?:gateway|harness|lab_ext|native|notebooks|tests|docs|data)/[A-Za-z0-9_./-]*)`")


def test_every_path_the_docs_name_exists():
    bad = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in _PATH.finditer(doc.read_text()):
            path = m.group(1).rstrip(".")
            if any(c in path for c in "*<>{}") or "NN_" in path or "/runs/" in path:
                continue  # a pattern or a run folder, not a path
            if path.endswith("/target"):
                continue  # a build directory
            if not (ROOT / path).exists():
                bad.append(f"{doc.relative_to(ROOT)}: {path}")
    assert not bad, "docs name paths that do not exist:\n" + "\n".join(bad)


def test_claims_name_notebooks_that_exist_and_every_cited_claim_is_stated():
    claims = (ROOT / "docs" / "claims.md").read_text()
    ids = set(re.findall(r"^\| `([a-z0-9.-]+)` \|", claims, re.MULTILINE))
    assert len(ids) >= 10
    for nb in set(re.findall(r"`(\d\d_[a-z_]+)`", claims)):
        assert (ROOT / "notebooks" / f"{nb}.py").exists(), nb
    cited = []
    for rel in _tracked():
        text = _text(rel)
        if text is not None and rel != "docs/claims.md":
            cited += [(rel, c) for c in re.findall(r"docs/claims\.md[`,:]?\s+`([a-z0-9.-]+)`", text)]
    unknown = [f"{rel}: {c}" for rel, c in cited if c not in ids]
    assert cited and not unknown, unknown
