"""``harness train``: train a detector on a suite's training generators, nothing else."""

from __future__ import annotations

import logging

from harness.commands._common import add_run_arguments, resolve_config

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a detector on a suite (best and last checkpoints in the run folder)",
        description="Train the detector on the suite's train split (of --generators, default: every generator), "
        "validating each epoch on their val split. Writes checkpoints/best.safetensors (+ .json), "
        "the last checkpoint (checkpoints/last.manifest.json naming its weights and state) and training.json in a new run folder; --set run.dir=RUN resumes "
        "a stopped run from its last checkpoint. --weights initialises from a checkpoint. Under torchrun "
        "every process trains on its shard (DDP).",
    )
    add_run_arguments(parser)
    parser.add_argument("--generators", metavar="A,B", help="training generators (default: all of the suite's)")
    parser.add_argument("--profile", metavar="NAME",
                        help="the detector's scaled-down profile (e.g. mini); default: the suite's name when the "
                        "detector has a profile of that name")
    parser.set_defaults(func=run)


def _samples(suite):
    try:
        from harness.manifest import load_samples
    except ImportError:  # the manifest cache is optional: a plain scan gives the same samples
        return list(suite.scan())
    return load_samples(suite)


def run(args) -> int:
    from harness import distributed
    from harness.errors import HarnessError
    from harness.registry import get_detector, get_suite
    from harness.runs import select_device, start_run
    from harness.training import TrainingStopped, train

    detector_cls = get_detector(args.detector)
    profile = args.profile or (args.suite if args.suite in detector_cls.profiles else None)
    if args.profile and args.profile not in detector_cls.profiles:
        known = ", ".join(detector_cls.profiles) or "none"
        raise HarnessError(f"detector '{args.detector}' has no profile '{args.profile}' (profiles: {known})")
    config = resolve_config(args, profile=profile)
    info = distributed.init_from_env(select_device(str(config["run"].get("device", "auto"))))
    suite = get_suite(args.suite)(config["suite"])
    known = suite.generators()
    wanted = [g.strip() for g in args.generators.split(",") if g.strip()] if args.generators else list(known)
    unknown = [g for g in wanted if g not in known]
    if unknown:
        raise HarnessError(f"suite '{args.suite}' has no generator(s) {', '.join(unknown)}; it has {', '.join(known)}")
    config["train"]["generators"] = wanted
    samples = [s for s in _samples(suite) if s.generator in wanted]
    train_samples = [s for s in samples if s.split == "train"]
    val_samples = [s for s in samples if s.split == "val"]
    if not val_samples:
        log.warning("suite '%s' has no val split for %s: every epoch's weights count as the best",
                    args.suite, ", ".join(wanted))

    run = start_run(config, f"train-{args.detector}-{args.suite}", is_main_process=info.is_main)
    detector = detector_cls(config["detector"])
    if config["run"].get("weights"):
        detector.load_weights(config["run"]["weights"])
    try:
        best = train(detector, train_samples, val_samples, config=config, run_dir=run.dir, device=run.device)
    except TrainingStopped as stop:
        if info.is_main:
            print(f"{stop} (rerun with --set run.dir={run.dir})")
        distributed.destroy()
        return 0
    if info.is_main:
        print(f"best checkpoint: {best}")
        print(f"run folder: {run.dir}")
    distributed.destroy()
    return 0
