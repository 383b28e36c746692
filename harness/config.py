"""Configuration layering: plugin defaults < a TOML file < ``--set key=value`` overrides.

The resolved configuration is one nested dict with the sections ``run``, ``detector``,
``suite``, ``eval``, ``train`` and ``analyses``; it is written into every run folder.
"""

from __future__ import annotations

import copy
import logging
import tomllib
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

log = logging.getLogger("harness")

RUN_DEFAULTS: dict[str, Any] = {
    "run": {"seed": 0, "device": "auto", "out": "runs"},
    "eval": {},
    "train": {},
    "analyses": {},
}


#: Settings read outside the plugins' own defaults, per section (the rest are the plugins' keys).
KNOWN_KEYS: dict[str, set[str]] = {
    "run": {"seed", "device", "out", "weights", "compile", "threads", "dir", "detector", "suite", "profile", "benchmark"},
    "eval": {"batch_size", "workers", "cache", "cache_dir", "precision", "bootstrap", "fuse"},
    # the engine's keys are in harness.training.TRAIN_DEFAULTS; these are read by optimisers and train_head
    "train": {"lr", "weight_decay", "betas", "min_lr", "min_delta", "feature_batch_size"},
    "suite": {"root"},
}


def unknown_settings(user: dict, known: dict) -> list[str]:
    """Dotted keys set in ``user`` (a --config file or --set overrides) that ``known`` (the
    configuration before them) lacks, in the sections whose keys are all known, each with
    the closest known key when there is one."""
    import difflib

    from harness.training import TRAIN_DEFAULTS

    out = []
    for section in ("run", "eval", "train", "suite", "detector"):
        given, have = user.get(section), known.get(section)
        if not isinstance(given, dict) or not isinstance(have, dict):
            continue
        names = set(have) | KNOWN_KEYS.get(section, set()) | (set(TRAIN_DEFAULTS) if section == "train" else set())
        for key in sorted(set(given) - names):
            close = difflib.get_close_matches(key, sorted(names), n=1)
            out.append(f"{section}.{key}" + (f" (did you mean {section}.{close[0]}?)" if close else ""))
    return out


def merge(base: dict, override: dict) -> dict:
    """Recursive dictionary merge: ``override`` wins, nested tables merge."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_value(text: str) -> Any:
    """A ``--set`` value read as TOML (numbers, booleans, lists, quoted strings), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> dict:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise HarnessError(f"--set expects key=value with a dotted key such as detector.lr=1e-4, got '{item}'")
    node: dict = {}
    out = node
    parts = key.split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = parse_value(value.strip())
    return out


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise HarnessError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"config file {path} is not valid TOML: {exc}") from None


def resolve(
    detector_defaults: dict | None = None,
    suite_defaults: dict | None = None,
    file_config: dict | None = None,
    overrides: list[str] | None = None,
    training_defaults: dict | None = None,
    profile: dict | None = None,
    report_unknown: bool = True,
) -> dict:
    """Layer the configuration: plugin defaults < detector profile < file < overrides.

    ``training_defaults`` is the detector's published recipe (the ``train`` section);
    ``profile`` is a named scaled-down overlay (for example the ``mini`` profile) holding
    ``detector`` and ``train`` sections. ``report_unknown``: warn about (and record in
    ``run.unknown_settings``) settings that nothing reads; only meaningful when the plugins'
    defaults are given.
    """
    config = copy.deepcopy(RUN_DEFAULTS)
    config["detector"] = copy.deepcopy(detector_defaults or {})
    config["suite"] = copy.deepcopy(suite_defaults or {})
    config["train"] = merge(config["train"], copy.deepcopy(training_defaults or {}))
    if profile:
        config = merge(config, copy.deepcopy(profile))
    known = copy.deepcopy(config)
    if file_config:
        config = merge(config, file_config)
    user: dict = copy.deepcopy(file_config or {})
    for item in overrides or []:
        parsed = parse_override(item)
        config = merge(config, parsed)
        user = merge(user, parsed)
    if report_unknown:
        unknown = unknown_settings(user, known)
        if unknown:
            log.warning("settings no plugin or engine reads (typos?): %s", "; ".join(unknown))
        config["run"]["unknown_settings"] = unknown
    return config
