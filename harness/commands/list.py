"""``harness list [detectors|suites|analyses|benchmarks]``."""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from harness.config import load_toml
from harness.errors import HarnessError

PLURAL = {"detectors": "detector", "suites": "suite", "analyses": "analysis"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list registered detectors, suites, analyses and benchmark protocols")
    parser.add_argument("kind", nargs="?", choices=sorted([*PLURAL, "benchmarks"]), help="only this kind")
    parser.set_defaults(func=run)


def one_line(description: str, width: int = 96) -> str:
    """The description's first line, shortened to fit a terminal row."""
    first = description.strip().splitlines()[0] if description.strip() else ""
    return textwrap.shorten(first, width, placeholder="...")


def run(args) -> int:
    from harness.registry import KINDS, get_plugins

    if args.kind == "benchmarks":
        return list_benchmarks()
    plugins = get_plugins()
    kinds = [PLURAL[args.kind]] if args.kind else list(KINDS)
    for kind in kinds:
        rows = [
            (name, one_line(cls.description), textwrap.shorten(cls.reference or "", 40, placeholder="..."),
             plugins.owner(kind, name).name)
            for name, cls in sorted(plugins.registry[kind].items())
        ]
        title = {v: k for k, v in PLURAL.items()}[kind]
        print(f"{title}:")
        print(tabulate(rows, headers=["name", "description", "reference", "plugin"]) if rows else "  (none)")
        print()
    if not args.kind:
        list_benchmarks()
    return 0


def list_benchmarks() -> int:
    """Benchmark protocols (``--suite NAME``), with the file each one is read from."""
    from harness.protocols import available_benchmarks

    rows = []
    for name, path in sorted(available_benchmarks().items()):
        try:
            section = load_toml(path).get("protocol") or {}
        except HarnessError as exc:
            section = {"description": f"unreadable: {exc}"}
        rows.append((name, one_line(str(section.get("description", ""))), str(section.get("suite", "")), str(path)))
    print("benchmarks:")
    print(tabulate(rows, headers=["name", "description", "suite", "file"]) if rows else "  (none)")
    print()
    return 0
