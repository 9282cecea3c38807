"""One module per `gatewaylab` subcommand, and the option parser they share."""

from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """A command's options: a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: {message} (--help for usage)", file=sys.stderr)
        sys.exit(2)
