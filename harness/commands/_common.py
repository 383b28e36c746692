"""Arguments shared by the commands that take a detector and a suite."""

from __future__ import annotations

import argparse

from harness import config as cfg


def add_run_arguments(parser: argparse.ArgumentParser, detector_required: bool = True) -> None:
    parser.add_argument("--detector", required=detector_required, metavar="NAME", help="detector name (harness list detectors)")
    parser.add_argument("--suite", required=True, metavar="NAME",
                        help="suite or benchmark protocol name (harness list suites; harness list benchmarks)")
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file layered over the plugin defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set detector.lr=1e-4 (repeatable; wins over --config)")
    parser.add_argument("--device", metavar="cpu|cuda|auto", help="device (default: run.device = auto)")
    parser.add_argument("--out", metavar="DIR", help="parent folder of run folders (default: runs)")
    parser.add_argument("--weights", metavar="PATH", help="checkpoint to load instead of training")
    parser.add_argument("--seed", type=int, help="seed (default: run.seed = 0)")
    parser.add_argument("--compile", action="store_const", const=True, default=None,
                        help="torch.compile the model for training, scoring and analyses (run.compile; worth it "
                             "for long CUDA runs, rarely on CPU, where compiling takes tens of seconds)")


def resolve_config(args, suite_name: str | None = None, profile: str | None = None, layer: dict | None = None) -> dict:
    """Plugin defaults < detector profile < ``layer`` (a benchmark protocol file) < --config file
    < --set overrides < explicit flags."""
    from harness.registry import get_detector, get_suite

    detector_cls = get_detector(args.detector) if getattr(args, "detector", None) else None
    suite_cls = get_suite(suite_name or args.suite)
    file_config = cfg.load_toml(args.config) if args.config else None
    if layer:
        file_config = cfg.merge(layer, file_config or {})
    config = cfg.resolve(
        detector_defaults=detector_cls.defaults if detector_cls else None,
        suite_defaults=suite_cls.defaults,
        file_config=file_config,
        overrides=args.overrides,
        training_defaults=detector_cls.training if detector_cls else None,
        profile=detector_cls.profiles.get(profile) if (detector_cls and profile) else None,
    )
    config["run"]["profile"] = profile if (detector_cls and profile in detector_cls.profiles) else None
    for flag, key in (("device", "device"), ("out", "out"), ("seed", "seed"), ("weights", "weights"),
                      ("compile", "compile")):
        value = getattr(args, flag, None)
        if value is not None:
            config["run"][key] = value
    config["run"]["detector"] = getattr(args, "detector", None)
    config["run"]["suite"] = suite_cls.name
    return config
