"""`gatewaylab torture --mode M --kills N [--ack background|durable]`: kill -9 under load,
then check the ledger's crash promises after every kill (harness/infra/torture.py says which).

Prints one line per kill and a summary; `--json` prints the result as one JSON object.
Exit status 0 when no record was lost, no root failed its prefix check and the WAL was never
refused; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from gateway.ladder import SERVERS, SHELLS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode", required=True, help="the rung, as `gatewaylab serve --mode` takes it (py, py+rs, ...)"
    )
    p.add_argument("--kills", type=int, required=True, help="number of SIGKILLs")
    p.add_argument("--ack", choices=["background", "durable"], default="background")
    p.add_argument("--server", choices=list(SERVERS), default=None, help="Python rungs (default: uvicorn)")
    p.add_argument("--shell", choices=list(SHELLS), default=None, help="Python rungs (default: asgi)")
    p.add_argument(
        "--fsync", choices=["always", "group", "none"], default="group", help="the WAL's fsync policy"
    )
    p.add_argument("--rate", type=float, default=200.0, help="open-loop load, requests/s")
    p.add_argument("--seed", type=int, default=None, help="seeds the kill moments")
    p.add_argument("--ledger", default=None, help="ledger directory (default: a new temp dir)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from harness.infra.torture import run_torture, summary

    def log(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    r = run_torture(
        args.mode,
        args.kills,
        ack=args.ack,
        server=args.server,
        shell=args.shell,
        fsync=args.fsync,
        rate=args.rate,
        seed=args.seed,
        ledger_dir=args.ledger,
        log=log,
    )
    if args.json:
        print(json.dumps(r.as_dict()))
    else:
        print(summary(r))
        for f in r.failures[:20]:
            print("  " + f)
    return 0 if r.ok else 1
