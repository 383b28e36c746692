"""``harness leaderboard add RUN_DIR | validate | build``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import HarnessError

# Figures of a run that are worth publishing beside its record (the analyses' summary plots).
DEFAULT_FIGURES = ("analyses/tde/tde_mean_heatmaps.png", "analyses/tde/tde_histogram.png",
                   "analyses/masking/masking_random.png", "analyses/corruptions/corruptions.png")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "leaderboard",
        help="add a run's result record, validate the records, build the leaderboard pages",
        description="The shared leaderboard lives in leaderboards/<benchmark>/records/*.json (one sealed record "
        "each); 'build' draws leaderboards/<benchmark>/README.md, index.html and plots from them.",
    )
    parser.add_argument("--root", default="leaderboards", metavar="DIR", help="leaderboard folder (default: %(default)s)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    # --root is accepted after the action too; SUPPRESS keeps the value given before it.
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument("--root", default=argparse.SUPPRESS, metavar="DIR", help="leaderboard folder")

    add = actions.add_parser("add", parents=[root], help="build the record of a finished run folder, validate it and file it")
    add.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'harness run'")
    add.add_argument("--benchmark", metavar="NAME", help="file it under this benchmark (default: the run's)")
    add.add_argument("--figure", dest="figures", action="append", metavar="GLOB",
                     help="run figures to publish with the record, globs relative to RUN_DIR and inside it, PNG of at most "
                     "8192 pixels a side (repeatable; default: "
                     + ", ".join(DEFAULT_FIGURES) + "); --figure none publishes none")
    add.add_argument("--build", action="store_true", help="rebuild the benchmark's pages afterwards")
    add.add_argument("--force", action="store_true",
                     help="file a run even though a test generator has no scored image of one class (its "
                     "accuracy is then the other class's alone), or its images were re-encoded, matched or scored "
                     "in bf16 (the row says so)")
    add.set_defaults(func=run_add)

    check = actions.add_parser("validate", parents=[root], help="check every record: schema, integrity hash, name, duplicates")
    check.set_defaults(func=run_validate)

    build = actions.add_parser("build", parents=[root], help="regenerate README.md, index.html and plots from the records")
    build.set_defaults(func=run_build)


def run_add(args) -> int:
    from harness import leaderboard

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise HarnessError(f"{run_dir} is not a folder: give the run folder that 'harness run' printed")
    patterns = tuple(args.figures) if args.figures else DEFAULT_FIGURES
    if patterns == ("none",):
        patterns = ()
    path, *pages = leaderboard.add_run(run_dir, Path(args.root), benchmark=args.benchmark,
                                       figure_patterns=patterns, force=args.force, build=args.build)
    print(f"added {path}")
    for written in pages:
        print(f"wrote {written}")
    return 0


def run_validate(args) -> int:
    from harness import leaderboard

    root = Path(args.root)
    if not root.is_dir():
        raise HarnessError(f"leaderboard folder {root} " + ("is a file, not a folder" if root.exists()
                                                            else "does not exist"))
    problems = leaderboard.validate(root)
    for path, message in problems:
        print(f"{path}: {message}", file=sys.stderr)
    count = sum(len(leaderboard.record_files(b)) for b in leaderboard.benchmarks(root))
    if problems:
        bad = len({path for path, _ in problems})
        print(f"{bad} of {count} records failed validation", file=sys.stderr)
        return 1
    print(f"{count} records valid")
    return 0


def run_build(args) -> int:
    from harness import leaderboard

    root = Path(args.root)
    if not root.is_dir():
        raise HarnessError(f"leaderboard folder {root} " + ("is a file, not a folder" if root.exists()
                                                            else "does not exist"))
    for path in leaderboard.build(root):
        print(f"wrote {path}")
    problems = leaderboard.validate(root)
    if problems:
        print(f"{len(problems)} problem(s) left records out of the pages: run 'harness leaderboard validate'",
              file=sys.stderr)
        return 1
    return 0
