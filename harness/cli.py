"""The ``harness`` command.

Each module in ``harness/commands/`` adds one subcommand through ``add_parser(subparsers)``
and sets ``func`` on its parser; a command returns an exit code. Every command module is
imported to build the parser, also for ``--version`` and ``--help``: keep its top-level imports
light (argparse, tabulate, ``harness.errors``, ``harness.config``) and import torch, pandas, the
registry and the pipeline inside the function that runs the command
(``tests/test_startup_imports.py`` checks).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import harness
import harness.commands
from harness.errors import HarnessError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Benchmark harness for AI-generated-image detectors."
    )
    parser.add_argument("--version", action="version", version=f"aigi-harness {harness.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(harness.commands.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"harness.commands.{module_info.name}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; finished work is kept and a rerun resumes from it", file=sys.stderr)
        return 130
