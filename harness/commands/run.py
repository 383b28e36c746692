"""``harness run``: train (when no --weights), evaluate, analyse, report."""

from __future__ import annotations

from harness.commands._common import add_run_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train if needed, evaluate and analyse a detector on a suite or benchmark",
        description="Train the detector on the benchmark's training generator(s) unless --weights is given, "
        "score every test image, compute per-generator metrics, run the benchmark's analyses and print "
        "the per-generator table. Every run gets its own folder under runs/.",
    )
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.pipeline import run_from_args

    return run_from_args(args)
