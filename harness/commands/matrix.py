"""``harness matrix``: the train x test generator matrix (train on each generator, test on all)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

from harness.commands._common import add_run_arguments
from harness.errors import HarnessError

if TYPE_CHECKING:
    import pandas as pd


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "matrix",
        help="train on each generator in turn and test on all: the train x test accuracy matrix",
        description="For each training generator (default: every generator of the protocol's training suite) "
        "run `harness run` with protocol.train_generators set to it, then print the matrix of test accuracy "
        "(rows: training generator; columns: test generators, mAcc, std) and write it as CSV and markdown.",
    )
    add_run_arguments(parser)
    parser.add_argument("--generators", metavar="A,B", help="training generators (default: all)")
    parser.add_argument("--with-analyses", action="store_true", help="also run the protocol's analyses in each run")
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness import distributed
    from harness.pipeline import execute, paper_table, resolve
    from harness.registry import get_suite

    if args.weights:
        raise HarnessError("harness matrix trains one model per generator; --weights does not apply")
    config, protocol = resolve(args)
    train_suite = get_suite(protocol.train_suite)(
        config["suite"] if protocol.train_suite == protocol.suite else config.get("train_suite", {}))
    known = train_suite.generators()
    wanted = [g.strip() for g in args.generators.split(",") if g.strip()] if args.generators else known
    unknown = [g for g in wanted if g not in known]
    if unknown:
        raise HarnessError(f"suite '{protocol.train_suite}' has no generator(s) {', '.join(unknown)}; "
                           f"it has {', '.join(known)}")

    measured, runs, test_generators = {}, {}, None
    try:
        for gen in wanted:
            extra = [f'protocol.train_generators=["{gen}"]']
            if not args.with_analyses:
                extra.append("protocol.analyses=[]")
            gen_config, gen_protocol = resolve(args, extra_overrides=extra)
            results = execute(gen_config, gen_protocol, label=f"{args.detector}-{protocol.name}-train-{gen}")
            if results is not None:
                measured[gen] = results["metrics"]
                runs[gen] = results["run_dir"]
                test_generators = results["test_generators"]
    finally:
        distributed.destroy()
    if not measured:  # ranks other than 0 get no results
        return 0

    table = paper_table(measured, test_generators)
    table.index.name = "trained on"
    out = Path(config["run"].get("out", "runs")) / (
        f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-matrix-{args.detector}-{protocol.name}")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "matrix.csv")
    (out / "matrix.md").write_text(tabulate(table, headers="keys", tablefmt="github", floatfmt=".1f") + "\n")
    (out / "matrix.json").write_text(json.dumps(
        {"detector": args.detector, "benchmark": protocol.name, "test_generators": test_generators,
         "runs": runs, "accuracy": {gen: m["per_generator"] for gen, m in measured.items()}},
        indent=2, allow_nan=False, default=str))
    print(f"\n{protocol.name}: accuracy (%) of {args.detector}, trained on one generator (rows), "
          "tested on each (columns)\n")
    print(tabulate(_diagonal_marked(table), headers="keys", floatfmt=".1f", missingval="-"))
    print(f"\nmatrix: {out / 'matrix.csv'}")
    return 0


def _diagonal_marked(table: pd.DataFrame) -> pd.DataFrame:
    """Mark the in-distribution cells (train = test generator) with a star for the printed table."""
    import pandas as pd

    shown = table.astype(object)
    for gen in table.index:
        if gen in table.columns and pd.notna(table.loc[gen, gen]):
            shown.loc[gen, gen] = f"{table.loc[gen, gen]:.1f}*"
    return shown
