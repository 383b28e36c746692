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
from pathlib import Path

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
    try:
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
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; finished work is kept and a rerun resumes from it", file=sys.stderr)
        return 130
    except Exception as exc:  # the one boundary: a bug is one line and a log file, never a bare traceback
        print(crash_report(exc, sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return 1


DEBUG_ENV = "HARNESS_DEBUG"


def crash_report(exc: BaseException, argv: list[str]) -> str:
    """Write the traceback of an unexpected exception to a log file under the harness cache
    (the temp folder if that is not writable) and return the one line that says where.
    ``HARNESS_DEBUG=1`` also prints the traceback. Under torchrun the line names the rank."""
    import os
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(exc))
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        print(text, file=sys.stderr, end="")
    cause = (str(exc).strip().splitlines() or [""])[0][:300]
    rank = f"rank {os.environ.get('RANK', '?')}: " if os.environ.get("WORLD_SIZE", "1") not in ("", "1") else ""
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}.log"
    header = f"harness {harness.__version__}, python {sys.version.split()[0]}, argv: {argv}\n"
    folders = [Path(tempfile.gettempdir()) / "aigi-harness"]
    try:
        from harness.manifest import cache_root

        folders.insert(0, cache_root() / "crashes")
    except Exception:  # the crash may be in importing the harness itself
        pass
    where = None
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / (name + ".tmp")
            tmp.write_text(header + text)
            tmp.replace(folder / name)
            where = folder / name
            break
        except OSError:
            continue
    saved = f"traceback in {where}" if where else "the traceback could not be saved"
    what = f"{type(exc).__name__}: {cause}" if cause else type(exc).__name__
    return f"harness: {rank}internal error: {what} ({saved}; {DEBUG_ENV}=1 prints it; please report it)"
