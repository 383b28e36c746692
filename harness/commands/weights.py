"""``harness weights list | pull | import | verify | path``: the published checkpoints."""

from __future__ import annotations

import textwrap

from tabulate import tabulate


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("weights", help="published checkpoints: list, pull, import, verify, path")
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="registry entries: host, trained on, what they reproduce, whether stored")
    p.add_argument("--detector", metavar="NAME", help="only this detector's entries")
    p.add_argument("-v", "--details", action="store_true", help="every fact of each entry, with its sources")
    p.set_defaults(func=run_list)
    p = sub.add_parser("pull", help="download an entry into the store (resumable, sha256-checked)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=run_pull)
    p = sub.add_parser("import", help="store a file fetched by hand as an entry (hash or key layout checked)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--as", dest="name", required=True, metavar="NAME")
    p.set_defaults(func=run_import)
    p = sub.add_parser("verify", help="which entry a file is (by sha256), or its closest key layout")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=run_verify)
    p = sub.add_parser("path", help="where an entry's stored file is")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=run_path)


def run_list(args) -> int:
    from harness import weights  # imports torch: only when an action runs

    entries = [e for e in weights.registry().values() if not args.detector or e.detector == args.detector]
    if not args.details:
        rows = [{k: textwrap.shorten(str(v), 48, placeholder="…") for k, v in row.items()}
                for row in weights.describe_rows(entries)]
        print(tabulate(rows, headers="keys"))
        return 0
    for e in entries:
        print(f"{e.name}  ({'backbone' if e.detector is None else 'detector ' + e.detector})")
        facts = {"host": e.host, "file": e.filename, "url": e.url, "repo": e.repo, "revision": e.revision,
                 "sha256": e.sha256, "size": e.size, "licence": e.licence, "trained on": e.trained_on,
                 "paper": e.paper, "settings": e.config or None, "stored": weights.stored_path(e) or "no"}
        for key, value in facts.items():
            print(f"  {key:<11} {'unknown' if value is None else value}")
        for r in e.reported:
            values = ", ".join(f"{g} {v}" for g, v in r.values.items())
            mean = f"; mean {r.mean}" if r.mean is not None else ""
            print(f"  reported    {r.source}: {r.metric} {values}{mean}"
                  + (f" (protocol {r.protocol})" if r.protocol else ""))
        if e.notes:
            print(textwrap.fill(e.notes, 110, initial_indent="  notes       ", subsequent_indent=" " * 14))
        print()
    return 0


def run_pull(args) -> int:
    from harness import weights  # imports torch: only when an action runs

    print(weights.pull(args.name))
    return 0


def run_import(args) -> int:
    from harness import weights  # imports torch: only when an action runs

    print(weights.import_file(args.file, args.name))
    return 0


def run_verify(args) -> int:
    from harness import weights  # imports torch: only when an action runs

    print(weights.verify(args.file))
    return 0


def run_path(args) -> int:
    from harness import weights  # imports torch: only when an action runs

    print(weights.path(args.name))
    return 0
