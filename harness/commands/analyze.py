"""``harness analyze NAME --detector X --suite Y [--weights PATH]``: run one analysis."""

from __future__ import annotations

from harness.commands._common import add_run_arguments
from harness.errors import HarnessError

SPLITS = ("test", "val", "train")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="run one analysis (tde, masking, corruptions, ...) of a detector on a suite or benchmark",
        description="Build the detector as 'harness run' does (load --weights, or train on the benchmark's "
        "training generator(s) when none are given and the detector is trainable), run the analysis on one "
        "split and write its tables (CSV + markdown), figures (PNG), summary and report into a new run "
        "folder. Settings of the analysis: --set analyses.NAME.KEY=VALUE (see docs/analyses.md).",
    )
    parser.add_argument("name", metavar="NAME", help="analysis name (harness list analyses)")
    add_run_arguments(parser)
    parser.add_argument("--split", choices=SPLITS, default="test", help="which split to analyse (default: test)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tabulate import tabulate

    from harness import pipeline
    from harness.analysis import AnalysisContext
    from harness.registry import get_analysis, get_detector
    from harness.reports import write_result

    analysis_cls = get_analysis(args.name)  # an unknown name fails before any work
    config, protocol = pipeline.resolve(args)
    detector_name = config["run"]["detector"]
    if reason := analysis_cls.skip_reason(get_detector(detector_name)):
        raise HarnessError(f"analysis '{args.name}' does not apply: {reason}")
    config["eval"].setdefault("workers", pipeline.default_workers())  # recorded in config.json as chosen
    run_ = pipeline._start(config, f"analyze-{args.name}-{detector_name}-{protocol.name}")
    try:
        pipeline.check_compile(config, run_.device)
        plan = pipeline.plan_samples(config, protocol)
        samples = {"test": plan.test, "val": plan.val, "train": plan.train}[args.split]
        if not samples:
            raise HarnessError(f"benchmark '{protocol.name}' has no {args.split} images to analyse")
        detector = get_detector(detector_name)(config["detector"])
        weights = pipeline._obtain_weights(detector, config, plan, run_)
        pipeline.prepare_for_inference(detector, config)
        detector.place(run_.device).eval()
        analysis = analysis_cls(config.get("analyses", {}).get(args.name, {}))
        context = AnalysisContext(detector=detector, samples=samples, device=run_.device,
                                  out_dir=run_.dir / "analyses" / args.name, config=config)
        result = analysis.run(context)
        files = write_result(result, run_.dir / "analyses", args.name)
        run_.write_json("analysis.json", {
            "schema": 1, "analysis": args.name, "config": analysis.config, "detector": detector.name,
            "suite": protocol.suite, "benchmark": protocol.name, "split": args.split, "images": len(samples),
            "weights": weights, "manifest_hash": plan.manifest_hash, "summary": result.summary, "files": files,
            "seed": run_.seed,
        })
    finally:
        pipeline._close_log(run_)

    print(f"\n{args.name} of {detector.name} on {protocol.name} ({args.split}, {len(samples)} images)\n")
    headline = "summary" if "summary" in result.tables else next(iter(result.tables), None)
    if headline is not None:
        print(tabulate(result.tables[headline], headers="keys", tablefmt="simple", showindex=False,
                       floatfmt=".4g", missingval="-"))
    print(f"\nreport: {files['report']}")
    return 0
