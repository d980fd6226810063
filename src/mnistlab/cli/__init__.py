"""The `mnistlab` command line: one module per command group, each exposing ``register``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from mnistlab import __version__
from mnistlab.errors import MnistlabError

# Each module defines `register(subparsers)`, which adds its commands and sets `func` on them.
COMMAND_MODULES = [
    "mnistlab.cli.data",
    "mnistlab.cli.train",
    "mnistlab.cli.evaluate",
    "mnistlab.cli.recognize",
    "mnistlab.cli.profiles",
    "mnistlab.cli.bench",
]


class UsageError(MnistlabError):
    """The command line itself is wrong (an unknown option, a bad value for one)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``mnistlab: error: ...`` and exit status 1,
    as every other refused input is (the subcommand parsers are made of this class too)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command group registered."""
    parser = Parser(
        prog="mnistlab",
        description="MNIST-style handwritten digit recognition: data, training, recipes, serving.",
    )
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except MnistlabError as error:  # refused input: one line; anything else is a bug
        print(f"mnistlab: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mnistlab: interrupted", file=sys.stderr)
        return 130
    finally:
        if argv is None:  # the process's own command line: it exits next
            _quick_exit()


def _quick_exit() -> None:
    """Spare the exit its last garbage collections: they walk every object the imports
    made (torch's: about 0.3 s on 2 cores), only for the process to end. Frozen objects
    are never collected; everything else (atexit, flushing, finalizers) happens as ever."""
    import gc

    gc.freeze()


def one_line(error: BaseException) -> str:
    """An error's message on one line (a message never needs a second one here)."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip())


if __name__ == "__main__":
    sys.exit(main())
