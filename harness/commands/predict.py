"""``harness predict``: P(fake) for unlabelled images, as CSV or JSONL."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.errors import HarnessError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="score unlabelled images (files, folders, a CSV, or '-' for a list on stdin) with a detector",
        description="Score every input file with the detector and weights and write one row per file: path, "
        "p_fake, logit, error, input_policy, weights_sha256. Folders are walked recursively and every file "
        "in them is listed; a file that cannot be scored keeps its row with the reason in 'error'. Scores go "
        "through the score cache, so a second call on the same files reads them back.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image file, folder (recursive), CSV with a 'path' column, or '-' (paths on stdin)")
    parser.add_argument("--detector", required=True, metavar="NAME", help="detector name (harness list detectors)")
    parser.add_argument("--weights", metavar="PATH|NAME",
                        help="checkpoint to load: a file or a registry name (harness weights list); required unless "
                             "the detector carries its own weights (then weights_sha256 is the sha256 over the "
                             "loaded tensors)")
    parser.add_argument("--out", metavar="FILE", help="output file (default: standard output)")
    parser.add_argument("--format", choices=("csv", "jsonl"), help="output format (default: by --out's extension, "
                                                                   "else csv)")
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file whose [detector] and [eval] tables are used")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set eval.batch_size=16 (repeatable)")
    parser.add_argument("--device", default="auto", metavar="cpu|cuda|auto", help="device (default: auto)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the score cache")
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness import config as cfg
    from harness.checkpoints import sha256_file, state_digest
    from harness.commands._common import apply_weights
    from harness.predict import collect_inputs, output_format, predict, render, write_atomic
    from harness.registry import get_detector
    from harness.runs import select_device
    from harness.scoring import default_cache_dir

    fmt = output_format(args.out, args.format)  # a bad --out fails before any model is built
    detector_cls = get_detector(args.detector)
    file_config = cfg.load_toml(args.config) if args.config else None
    config = cfg.resolve(detector_defaults=detector_cls.defaults, file_config=file_config,
                         overrides=args.overrides, training_defaults=detector_cls.training)
    if args.weights:  # a registry name or a file; a harness checkpoint rebuilds the detector it was trained as
        config["run"]["weights"] = args.weights
        user = file_config or {}
        for item in args.overrides or []:
            user = cfg.merge(user, cfg.parse_override(item))
        apply_weights(config, detector_cls, user.get("detector") or {})
    paths = collect_inputs(args.inputs, sys.stdin)
    if not paths:
        raise HarnessError(f"no files found in {', '.join(args.inputs)}")
    detector = detector_cls(config["detector"])
    if args.weights:
        weights = Path(config["run"]["weights"])
        if not weights.is_file():
            raise HarnessError(f"--weights {args.weights}: no such checkpoint file")
        detector.load_weights(weights)
        weights_sha256 = sha256_file(weights)
    elif detector_cls.trainable:
        raise HarnessError(f"detector '{args.detector}' needs --weights PATH: without them its weights are "
                           "untrained and its scores mean nothing")
    else:
        weights_sha256 = state_digest(detector)  # weights the detector loads itself: hash of the loaded tensors
    ev = config.get("eval", {})
    cache_dir = None
    if not args.no_cache and ev.get("cache", True) is not False:
        cache_dir = Path(ev.get("cache_dir") or default_cache_dir())
    frame = predict(detector, paths, device=select_device(args.device), weights_sha256=weights_sha256,
                    batch_size=int(ev.get("batch_size", 64)), workers=int(ev.get("workers", min(4, os.cpu_count() or 1))),
                    cache_dir=cache_dir, precision=str(ev.get("precision", "auto")))
    text = render(frame, fmt)
    if args.out:
        write_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    bad = frame[frame["error"].notna()]
    print(f"harness predict: {len(frame)} files, {len(frame) - len(bad)} scored, {len(bad)} could not be scored"
          + (f" (e.g. {bad.iloc[0]['path']}: {bad.iloc[0]['error']})" if len(bad) else "")
          + (f"; written to {args.out}" if args.out else ""), file=sys.stderr)
    return 0
