"""`gatewaylab peers install [NAME ...]` and `gatewaylab peers list` (harness.peers).

gatewaylab peers install            # every installable peer, at the versions in harness/peers/versions.toml
gatewaylab peers install portkey    # just one
gatewaylab peers list               # installed versions and paths; Bifrost with the reason it is not here
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    i = sub.add_parser("install", help="install peers into .peers/ (idempotent)")
    i.add_argument("names", nargs="*", help="peers to install (default: every installable one)")
    sub.add_parser("list", help="what is installed, versions and paths")


def run(args: argparse.Namespace) -> int:
    from harness import peers

    if args.action == "install":
        peers.install(args.names or None)
        print(f"manifest: {peers.peers_dir() / 'manifest.json'}")
        return 0
    print("| peer | pinned | installed | status | package | where |")
    print("|---|---|---|---|---|---|")
    for r in peers.listing():
        print(
            f"| {r['peer']} | {r['pinned']} | {r['installed'] or '-'} | {r['status']} | "
            f"{r['registry']}: {r['package']} | {r['where']} |"
        )
    return 0
