"""Run folders: one per run, `data/runs/<UTC timestamp>-<name>/` (docs/formats.md "Run folders
and the results schema"). A run holds `meta.json`, tidy tables as Parquet (one row per measurement),
raw artefacts (pyperf JSON, histograms, ...) and `report.md`.

API:

    run = create_run(name, parameters=None, switches=None, root=None, **meta_kw) -> Run
        makes the folder (timestamp like 20261122T045012Z; a numeric suffix if taken) and
        writes meta.json from harness.results.meta.collect(parameters=..., switches=..., **meta_kw).
    run.path / run.name / run.meta
    run.write_table(name, rows) -> Path       rows: DataFrame or list of dicts -> <name>.parquet
    run.read_table(name) -> DataFrame
    run.tables() -> list[str]                 names of the tables in the run
    run.artefact(relpath) -> Path             a path inside the run (parent dirs created)
    run.write_json(relpath, obj) / run.write_text(relpath, text) -> Path
    run.update_meta(**fields)                 merge into meta.json (e.g. end_time)
    open_run(path) -> Run                     an existing run folder
    load_table(run_dir, name) -> DataFrame
    list_runs(root=None, name=None) -> list[Path]   oldest first
    latest_run(name=None, root=None) -> Path | None

The root is `data/runs` in the repository, or $GATEWAYLAB_RUNS_DIR when set.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.results import meta as _meta

REPO = Path(__file__).resolve().parents[2]
META_FILE = "meta.json"


def runs_root(root: str | os.PathLike | None = None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("GATEWAYLAB_RUNS_DIR")
    return Path(env) if env else REPO / "data" / "runs"


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if not s:
        raise ValueError(f"run name {name!r} has no usable characters")
    return s


def _json_default(o: Any):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


class Run:
    """A run folder. See the module docstring for the API."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"run folder {self.path} does not exist")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def meta(self) -> dict[str, Any]:
        f = self.path / META_FILE
        return json.loads(f.read_text()) if f.exists() else {}

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        m = self.meta
        m.update(fields)
        (self.path / META_FILE).write_text(_dump(m))
        return m

    def artefact(self, relpath: str | os.PathLike) -> Path:
        p = self.path / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_json(self, relpath: str | os.PathLike, obj: Any) -> Path:
        p = self.artefact(relpath)
        p.write_text(_dump(obj))
        return p

    def write_text(self, relpath: str | os.PathLike, text: str) -> Path:
        p = self.artefact(relpath)
        p.write_text(text)
        return p

    def write_table(self, name: str, rows) -> Path:
        """Write a tidy table (DataFrame or iterable of dicts) as `<name>.parquet`."""
        import pandas as pd

        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        p = self.artefact(f"{_slug(name)}.parquet")
        df.to_parquet(p, engine="pyarrow", index=False)
        return p

    def read_table(self, name: str):
        return load_table(self.path, name)

    def tables(self) -> list[str]:
        return sorted(p.stem for p in self.path.glob("*.parquet"))

    def __repr__(self) -> str:
        return f"<Run {self.path}>"

    def __fspath__(self) -> str:
        return str(self.path)


def create_run(
    name: str,
    parameters: Mapping[str, Any] | None = None,
    switches=None,
    root: str | os.PathLike | None = None,
    **meta_kw: Any,
) -> Run:
    """Create `<root>/<UTC timestamp>-<name>/` and its meta.json; returns the Run."""
    base = runs_root(root)
    base.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.UTC)
    stem = f"{now:%Y%m%dT%H%M%SZ}-{_slug(name)}"
    for k in range(1, 1000):
        path = base / (stem if k == 1 else f"{stem}-{k}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover
        raise FileExistsError(f"could not create a run folder for {stem} under {base}")
    start = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    meta = _meta.collect(parameters=parameters, switches=switches, start_time=start, **meta_kw)
    meta["run_name"] = name
    (path / META_FILE).write_text(_dump(meta))
    return Run(path)


def open_run(path: str | os.PathLike) -> Run:
    return Run(path)


def load_table(run_dir: str | os.PathLike, name: str):
    """A table of a run folder as a pandas DataFrame."""
    import pandas as pd

    p = Path(run_dir) / f"{_slug(name)}.parquet"
    if not p.exists():
        raise FileNotFoundError(f"run {run_dir} has no table {name!r} ({p.name})")
    return pd.read_parquet(p, engine="pyarrow")


def list_runs(root: str | os.PathLike | None = None, name: str | None = None) -> list[Path]:
    base = runs_root(root)
    if not base.is_dir():
        return []
    out = [p for p in base.iterdir() if p.is_dir() and (p / META_FILE).exists()]
    if name is not None:
        tag = _slug(name)
        out = [p for p in out if re.fullmatch(rf"\d{{8}}T\d{{6}}Z-{re.escape(tag)}(-\d+)?", p.name)]
    return sorted(out, key=lambda p: p.name)


def latest_run(name: str | None = None, root: str | os.PathLike | None = None) -> Path | None:
    runs = list_runs(root, name)
    return runs[-1] if runs else None
