"""Arguments shared by the commands that take a detector and a suite."""

from __future__ import annotations

import argparse
import logging

from harness import config as cfg

log = logging.getLogger("harness")


def add_run_arguments(parser: argparse.ArgumentParser, detector_required: bool = True) -> None:
    parser.add_argument("--detector", required=detector_required, metavar="NAME", help="detector name (harness list detectors)")
    parser.add_argument("--suite", required=True, metavar="NAME",
                        help="suite or benchmark protocol name (harness list suites; harness list benchmarks)")
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file layered over the plugin defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set detector.lr=1e-4 (repeatable; wins over --config)")
    parser.add_argument("--device", metavar="cpu|cuda|auto", help="device (default: run.device = auto)")
    parser.add_argument("--out", metavar="DIR", help="parent folder of run folders (default: runs)")
    parser.add_argument("--weights", metavar="PATH|NAME",
                        help="checkpoint to load instead of training: a file, or a registry name "
                             "(harness weights list); a harness checkpoint rebuilds the detector as it was trained")
    parser.add_argument("--seed", type=int, help="seed (default: run.seed = 0)")
    parser.add_argument("--compile", action="store_const", const=True, default=None,
                        help="torch.compile the model for training, scoring and analyses (run.compile; worth it "
                             "for long CUDA runs, rarely on CPU, where compiling takes tens of seconds)")


def resolve_config(args, suite_name: str | None = None, profile: str | None = None, layer: dict | None = None) -> dict:
    """Plugin defaults < detector profile < ``layer`` (a benchmark protocol file) < --config file
    < --set overrides < explicit flags."""
    from harness.registry import get_detector, get_plugins, get_suite

    detector_cls = get_detector(args.detector) if getattr(args, "detector", None) else None
    suite_cls = get_suite(suite_name or args.suite)
    file_config = cfg.load_toml(args.config) if args.config else None
    if layer:
        file_config = cfg.merge(layer, file_config or {})
    flags = {key: getattr(args, key) for key in ("device", "out", "seed", "weights", "compile")
             if getattr(args, key, None) is not None}
    config = cfg.resolve(
        detector_defaults=detector_cls.defaults if detector_cls else None,
        suite_defaults=suite_cls.defaults,
        file_config=file_config,
        overrides=args.overrides,
        training_defaults=detector_cls.training if detector_cls else None,
        profile=detector_cls.profiles.get(profile) if (detector_cls and profile) else None,
        settings=cfg.plugin_settings(detector_cls, suite_cls, get_plugins().registry["analysis"]),
        flags={"run": flags},
    )
    config["run"]["profile"] = profile if (detector_cls and profile in detector_cls.profiles) else None
    config["run"]["detector"] = getattr(args, "detector", None)
    config["run"]["suite"] = suite_cls.name
    if detector_cls and config["run"].get("weights"):
        user = cfg.merge(file_config or {}, {})
        for item in args.overrides or []:
            user = cfg.merge(user, cfg.parse_override(item))
        apply_weights(config, detector_cls, user.get("detector") or {})
    return config


def apply_weights(config: dict, detector_cls, user_detector: dict) -> None:
    """Resolve ``run.weights`` (a registry name or a file) and rebuild the detector's settings as
    the checkpoint was made: the registry entry's settings, or the configuration a harness
    checkpoint carries in its JSON sidecar, over the defaults and profile. Settings the user
    gave (``--config``, ``--set``) still win; each one that contradicts the checkpoint is
    reported and recorded in ``run.weights_conflicts``."""
    from harness import weights as registry
    from harness.checkpoints import checkpoint_meta
    from harness.errors import HarnessError

    value = str(config["run"]["weights"])
    if registry.looks_like_name(value):
        entry = registry.get(value)
        if entry.detector != detector_cls.name:
            raise HarnessError(f"checkpoint '{value}' is for {entry.detector or 'a backbone'}, not detector "
                               f"'{detector_cls.name}' (harness weights list --detector {detector_cls.name})")
        config["run"]["weights"] = str(registry.path(value))
        config["run"]["weights_entry"] = value
        saved = dict(entry.config)
    else:
        meta = checkpoint_meta(value)
        if meta.get("detector") not in (None, detector_cls.name):
            raise HarnessError(f"checkpoint {value} was trained for detector '{meta['detector']}', not "
                               f"'{detector_cls.name}': pass --detector {meta['detector']}")
        saved = meta.get("config") or {}
    saved = _without_foreign_paths(saved)
    conflicts = [f"detector.{k}={v!r} (checkpoint: {saved[k]!r})" for k, v in sorted(user_detector.items())
                 if k in saved and cfg.merge({k: saved[k]}, {k: v}) != {k: saved[k]}]
    if conflicts:
        log.warning("settings given for this run differ from those the checkpoint was made with; yours win: %s",
                    "; ".join(conflicts))
    config["run"]["weights_conflicts"] = conflicts
    config["detector"] = cfg.merge(cfg.merge(config["detector"], saved), user_detector)


def _without_foreign_paths(saved: dict) -> dict:
    """The checkpoint's settings less the local files of the machine it was trained on that are not here
    (``backbone_weights``, ``feature_cache_dir``, ...): each falls back to this machine's default, and says so."""
    import os

    kept = {}
    for key, value in saved.items():
        if isinstance(value, str) and os.path.isabs(value) and not os.path.exists(value):
            log.warning("the checkpoint was made with detector.%s=%s, which is not on this machine: using the "
                        "default (give it with --set detector.%s=PATH)", key, value, key)
            continue
        kept[key] = value
    return kept
