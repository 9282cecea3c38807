"""`gatewaylab audit append|verify|prove|consistency --wal PATH [--impl python|rust]`
(docs/formats.md "CLI contract"); `verify --ledger DIR` reads a ledger directory in either
layout (docs/workers.md).

  append                 one payload per stdin line (the line without its "\\n", as bytes);
                         prints {"count", "root"}. Takes the WAL's writer lock; a torn tail
                         is truncated by recovery (reported on stderr).
  verify                 replays every record (the auditor's check; a gateway restart only
                         checks the WAL's tail against the node store): prints {"count",
                         "root", "truncated_bytes", "wal_version"} without modifying the file
                         (wal_version: 2, or 1 for a WAL from before v2; null while the
                         file is shorter than its header); corruption
                         exits 1 with a message naming the offset. When a node store
                         (audit.mmr) sits beside the WAL, every node it holds is compared
                         with the recomputed one; a difference exits 1 naming the node, and
                         `--repair` then replaces the store with the recomputed one.
  verify --ledger DIR    a single ledger (DIR/audit.wal): as --wal. A sharded one (DIR/shard-K/):
                         every shard verified as above, then prints {"layout": "sharded",
                         "shards": [{"shard", "count", "root", "truncated_bytes", "wal_version"}], "count",
                         "root": the combined root (gateway/audit/shards.py)}.
  prove --index I        prints the inclusion proof JSON of leaf I (--ledger DIR of a sharded
                         ledger: --shard K, and the proof comes up to the combined root).
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
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--wal", metavar="PATH", help="the WAL file")
    where.add_argument(
        "--ledger", metavar="DIR", help="a ledger directory, single or sharded (verify, prove)"
    )
    p.add_argument("--shard", type=int, help="prove --ledger DIR of a sharded ledger: the shard")
    p.add_argument("--impl", choices=["python", "rust"], default=None, help="twin for WAL and MMR")
    p.add_argument("--index", type=int, help="prove: leaf index")
    p.add_argument("--old", type=int, help="consistency: the older leaf count")
    p.add_argument(
        "--fsync", choices=["always", "group", "none"], default="group", help="append: fsync policy"
    )
    p.add_argument(
        "--repair", action="store_true", help="verify: replace a node store that disagrees with the WAL"
    )


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


def _wal_version(path: str) -> int | None:
    """The version the WAL's header names (None while the file is shorter than its header)."""
    from gateway.audit.wal import header_version

    with open(path, "rb") as f:
        head = f.read(8)
    return header_version(head) if len(head) == 8 else None


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


def _verify_store(WAL, MMR, path: str, payloads: list[bytes], repair: bool) -> int:
    """Compare the node store beside `path` (if any) with the nodes recomputed from every
    record; 0 if it agrees (or was repaired), 1 otherwise. Messages go to stderr."""
    import shutil
    import tempfile

    from gateway.audit.ledger import STORE_NAME
    from gateway.audit.node_store import HEADER_LEN, NODE, leaves_for, nodes_for

    store = os.path.join(os.path.dirname(os.path.abspath(path)), STORE_NAME)
    if not os.path.exists(store):
        return 0
    tmpdir = tempfile.mkdtemp(prefix=".verify-", dir=os.path.dirname(store))
    try:
        fresh = os.path.join(tmpdir, STORE_NAME)
        mmr = MMR(store=fresh)
        for k in range(0, len(payloads), 65536):
            mmr.append_many(payloads[k : k + 65536])
        valid_end = 8 + sum(8 + len(p) for p in payloads)
        mmr.checkpoint(valid_end, len(payloads[-1]) if payloads else 0)
        mmr.close()
        with open(store, "rb") as a, open(fresh, "rb") as b:
            head = a.read(HEADER_LEN)
            b.seek(HEADER_LEN)
            held = min(leaves_for(max(0, os.path.getsize(store) - HEADER_LEN) // NODE), len(payloads))
            todo, pos, bad = nodes_for(held) * NODE, 0, None
            if head[:8] != b"GLMMR\x00\x01\n":
                bad = "its header is not a node store v1 header"
            while todo and bad is None:
                x, y = a.read(min(todo, 1 << 20)), b.read(min(todo, 1 << 20))
                if x != y:
                    i = (
                        next(k for k in range(len(x)) if x[k] != y[k])
                        if len(x) == len(y)
                        else min(len(x), len(y))
                    )
                    bad = f"node {(pos + i) // NODE} differs from the one recomputed from the WAL"
                pos, todo = pos + len(x), todo - len(x)
        if bad is None:
            print(
                f"gatewaylab audit: node store {store}: its {held} leaves agree with the WAL", file=sys.stderr
            )
            return 0
        if not repair:
            print(
                f"gatewaylab audit: error: node store {store} is corrupt: {bad}; "
                "rerun with --repair to rebuild it from the WAL",
                file=sys.stderr,
            )
            return 1
        import fcntl

        with open(store, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(
                    f"gatewaylab audit: error: node store {store} is in use; stop the gateway to repair it",
                    file=sys.stderr,
                )
                return 1
            os.replace(fresh, store)
        print(
            f"gatewaylab audit: node store {store} was corrupt ({bad}); rebuilt from the WAL", file=sys.stderr
        )
        return 0
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _run_ledger(args: argparse.Namespace, WAL, MMR) -> int:
    """verify / prove on a ledger directory, single or sharded."""
    from gateway.audit.ledger import WAL_NAME
    from gateway.audit.shards import combined_root, iter_layout, sharded_proof
    from gateway.errors import ConfigError

    if args.action not in ("verify", "prove"):
        print(
            f"gatewaylab audit {args.action}: takes --wal PATH (--ledger DIR is for verify and prove)",
            file=sys.stderr,
        )
        return 2
    try:
        layout, dirs = iter_layout(args.ledger)
    except ConfigError as e:
        print(f"gatewaylab audit: error: {e}", file=sys.stderr)
        return 1
    if layout == "single":
        args.wal = os.path.join(args.ledger, WAL_NAME)
        return run(args)
    scans = []
    for d in dirs:
        path = os.path.join(d, WAL_NAME)
        if not os.path.exists(path):  # a worker that never wrote: an empty shard
            scans.append(([], MMR(), 0, path))
            continue
        payloads, mmr, truncated = _scan(WAL, MMR, path)
        scans.append((payloads, mmr, truncated, path))
    rows = [
        {
            "shard": k,
            "count": len(m),
            "root": m.root(),
            "truncated_bytes": t,
            "wal_version": _wal_version(p) if os.path.exists(p) else None,
        }
        for k, (_, m, t, p) in enumerate(scans)
    ]
    if args.action == "prove":
        if args.shard is None or args.index is None:
            print("gatewaylab audit prove: a sharded ledger needs --shard K and --index I", file=sys.stderr)
            return 2
        if not 0 <= args.shard < len(rows):
            print(
                f"gatewaylab audit prove: --shard {args.shard}: the ledger has shards 0..{len(rows) - 1}",
                file=sys.stderr,
            )
            return 2
        _emit(sharded_proof(args.shard, scans[args.shard][1].inclusion_proof(args.index), rows))
        return 0
    _emit(
        {
            "layout": "sharded",
            "shards": rows,
            "count": sum(r["count"] for r in rows),
            "root": combined_root(rows),
        }
    )
    status = 0
    for payloads, _, _, path in scans:
        if os.path.exists(path):
            status |= _verify_store(WAL, MMR, path, payloads, args.repair)
    return status


def run(args: argparse.Namespace) -> int:
    WAL, MMR = _twins(args.impl)
    if args.wal is None:
        return _run_ledger(args, WAL, MMR)
    path = args.wal
    try:
        if args.action == "append":
            lines = _read_lines(sys.stdin.buffer)
            with WAL(path, fsync=args.fsync) as wal:
                if wal.recovery.get("truncated_bytes"):
                    print(
                        f"gatewaylab audit: recovered {path}: truncated a torn tail of "
                        f"{wal.recovery['truncated_bytes']} bytes",
                        file=sys.stderr,
                    )
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
            payloads, mmr, truncated = _scan(WAL, MMR, path)
            _emit(
                {
                    "count": len(mmr),
                    "root": mmr.root(),
                    "truncated_bytes": truncated,
                    "wal_version": _wal_version(path),
                }
            )
            return _verify_store(WAL, MMR, path, payloads, args.repair)
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
