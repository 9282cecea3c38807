"""Raw results: a sweep's tables as JSON rows, for machines without pandas (docs/bundle.md).

A lean install (`gatewaylab bundle`) runs `gatewaylab sweep --raw` on the target hardware.
The run folder is the usual one (meta.json, raw/ artefacts, ledgers/) except that each tidy
table is `tables/<name>.json` instead of `<name>.parquet`, and there is no report:

    {"format": "gatewaylab-raw-table", "version": 1, "table": "cells", "rows": [{...}, ...]}

The rows are exactly the dicts the sweep would hand to `harness.results.schema.frame`, so nothing is
computed twice and no column is lost. Back on the notebook machine:

    from harness.results.raw_results import import_run
    dest = import_run("xeon-run/20261201T001500Z-sweep")     # -> data/runs/<same name>
    # copies the folder under the runs root (in_place=True converts where it lies), writes
    # the Parquet tables with harness.results.schema (typed, validated), then report.md/html;
    # meta.json gains "imported": {"at", "from", "tables"} and keeps its "provenance".

`gatewaylab import RUN_DIR [--out ROOT] [--in-place] [--no-report]` is the command line.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

RESULTS = ("parquet", "raw")
FORMAT = "gatewaylab-raw-table"
VERSION = 1
TABLES_DIR = "tables"


def write_raw_tables(run, tables: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[Path]:
    """Write each table's rows to `tables/<name>.json` in the run folder (harness.results.runs.Run)."""
    out = []
    for name, rows in tables.items():
        out.append(
            run.write_json(
                f"{TABLES_DIR}/{name}.json",
                {"format": FORMAT, "version": VERSION, "table": name, "rows": list(rows)},
            )
        )
    return out


def read_raw_table(run_dir: str | Path, name: str) -> list[dict[str, Any]]:
    """The rows of one raw table; a clear ConfigError when the file is not one."""
    p = Path(run_dir) / TABLES_DIR / f"{name}.json"
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: no raw table {name!r} ({p} is missing)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("table") != name:
        raise ConfigError(f"{p}: not a gatewaylab raw table")
    if doc.get("version") != VERSION:
        raise ConfigError(f"{p}: raw table version {doc.get('version')!r}, this build reads {VERSION}")
    rows = doc.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"{p}: 'rows' must be a list of objects")
    return rows


def raw_tables(run_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in (Path(run_dir) / TABLES_DIR).glob("*.json"))


def import_run(
    src: str | Path,
    root: str | Path | None = None,
    in_place: bool = False,
    report: bool = True,
    images: bool = False,
) -> Path:
    """Turn a raw run folder into the usual one (Parquet tables + report); returns its path."""
    from harness.results import schema
    from harness.results.meta import utc_now
    from harness.results.runs import META_FILE, open_run, runs_root

    src = Path(src)
    if not (src / META_FILE).is_file():
        raise ConfigError(f"{src}: not a run folder (no {META_FILE})")
    names = raw_tables(src)
    if not names:
        raise ConfigError(f"{src}: no raw tables under {TABLES_DIR}/ (was it swept with --raw?)")
    unknown = [n for n in names if n not in schema.TABLES]
    if unknown:
        raise ConfigError(f"{src}: unknown raw tables {unknown}; this build knows {sorted(schema.TABLES)}")
    if in_place:
        dest = src
    else:
        dest = runs_root(root) / src.name
        if dest.exists():
            raise ConfigError(f"{dest} already exists (import it once, or use --in-place on a copy)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest)
    run = open_run(dest)
    for name in names:
        df = schema.frame(name, read_raw_table(dest, name))
        problems = schema.validate(name, df)
        if problems:
            raise ConfigError(f"{dest}: table {name} does not fit the schema: {'; '.join(problems)}")
        run.write_table(name, df)
    run.update_meta(
        results="parquet", imported={"at": utc_now(), "from": str(src.resolve()), "tables": names}
    )
    if report:
        from harness.results.report import write_report

        write_report(dest, images=images)
    return dest
