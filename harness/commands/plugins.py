"""``harness plugins``: loaded plugins, versions, where from, and the broken ones."""

from __future__ import annotations

from tabulate import tabulate


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("plugins", help="show loaded plugins, their versions and origins")
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.registry import ALLOW_LIST_ENV, allow_list, get_plugins

    plugins = get_plugins()
    rows = []
    for info in sorted(plugins.info.values(), key=lambda i: i.name):
        status = "broken: " + info.error if info.broken else "ok"
        rows.append((info.name, info.distribution, info.version, info.location or info.module,
                     ", ".join(info.provides), status))
    print(tabulate(rows, headers=["plugin", "distribution", "version", "from", "provides", "status"]))
    allowed = allow_list()
    if allowed is not None:
        print(f"\n{ALLOW_LIST_ENV} allow-list in effect: {', '.join(sorted(allowed)) or '(empty)'}")
    return 0
