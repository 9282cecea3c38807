"""`gatewaylab audit append|verify|prove|consistency --wal PATH [--impl python|rust]`
(docs/formats.md "CLI contract").

  append                 one payload per stdin line (the line without its "\\n", as bytes);
                         prints {"count", "root"}. Takes the WAL's writer lock; a torn tail
                         is truncated by recovery (reported on stderr).
  verify                 prints {"count", "root", "truncated_bytes"} without modifying the
                         file; corruption exits 1 with a message naming the offset.
  prove --index I        prints the inclusion proof JSON of leaf I.
  consistency --old M    prints the consistency proof JSON from count M to now.

--impl picks the twin for both the WAL and the MMR (default: the `wal`/`mmr` switches
from $GATEWAYLAB_MODE / $GATEWAYLAB_IMPL, i.e. Python unless set).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ACTIONS = ("append", "verify", "prove", "consistency")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("--wal", required=True, metavar="PATH", help="the WAL file")
    p.add_argument("--impl", choices=["python", "rust"], default=None, help="twin for WAL and MMR")
    p.add_argument("--index", type=int, help="prove: leaf index")
    p.add_argument("--old", type=int, help="consistency: the older leaf count")
    p.add_argument("--fsync", choices=["always", "group", "none"], default="group", help="append: fsync policy")


def _twins(impl: str | None):
    from gateway.twins import Switches, load

    if impl is None:
        sw = Switches.resolve()
        return load("wal", sw.impl("wal")), load("mmr", sw.impl("mmr"))
    return load("wal", impl), load("mmr", impl)


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def _read_lines(stream) -> list[bytes]:
    data = stream.read()
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":  # a final newline ends the last line, it does not start another
        lines.pop()
    return lines


def _scan(WAL, MMR, path: str):
    """(payloads, mmr, truncated_bytes) for `path`, reading only."""
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    payloads = WAL.replay(path)
    mmr = MMR()
    if payloads:
        mmr.append_many(payloads)
    size = os.path.getsize(path)
    valid_end = 8 + sum(8 + len(p) for p in payloads)
    truncated = max(0, size - valid_end) if size >= 8 else 0
    return payloads, mmr, truncated


def run(args: argparse.Namespace) -> int:
    WAL, MMR = _twins(args.impl)
    path = args.wal
    try:
        if args.action == "append":
            lines = _read_lines(sys.stdin.buffer)
            with WAL(path, fsync=args.fsync) as wal:
                if wal.recovery.get("truncated_bytes"):
                    print(f"gatewaylab audit: recovered {path}: truncated a torn tail of "
                          f"{wal.recovery['truncated_bytes']} bytes", file=sys.stderr)
                mmr = MMR()
                existing = WAL.replay(path)
                if existing:
                    mmr.append_many(existing)
                if lines:
                    wal.append_many(lines)
                    mmr.append_many(lines)
                wal.flush()
                _emit({"count": len(mmr), "root": mmr.root()})
            return 0
        if args.action == "verify":
            _, mmr, truncated = _scan(WAL, MMR, path)
            _emit({"count": len(mmr), "root": mmr.root(), "truncated_bytes": truncated})
            return 0
        # prove --index I | consistency --old M
        value, flag = (args.index, "--index I") if args.action == "prove" else (args.old, "--old M")
        if value is None:
            print(f"gatewaylab audit {args.action}: {flag} is required", file=sys.stderr)
            return 2
        _, mmr, _ = _scan(WAL, MMR, path)
        _emit(mmr.inclusion_proof(value) if args.action == "prove" else mmr.consistency_proof(value))
        return 0
    except FileNotFoundError:
        print(f"gatewaylab audit: error: no WAL file at {path}", file=sys.stderr)
        return 1
    except IsADirectoryError:
        print(f"gatewaylab audit: error: {path} is a directory, not a WAL file", file=sys.stderr)
        return 1
