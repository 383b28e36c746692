"""Configuration layering: plugin defaults < a TOML file < ``--set key=value`` overrides.

The resolved configuration is one nested dict with the sections ``run``, ``detector``,
``suite``, ``eval``, ``train`` and ``analyses``; it is written into every run folder.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

RUN_DEFAULTS: dict[str, Any] = {
    "run": {"seed": 0, "device": "auto", "out": "runs"},
    "eval": {},
    "train": {},
    "analyses": {},
}


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
) -> dict:
    """Layer the configuration: plugin defaults < detector profile < file < overrides.

    ``training_defaults`` is the detector's published recipe (the ``train`` section);
    ``profile`` is a named scaled-down overlay (for example the ``mini`` profile) holding
    ``detector`` and ``train`` sections.
    """
    config = copy.deepcopy(RUN_DEFAULTS)
    config["detector"] = copy.deepcopy(detector_defaults or {})
    config["suite"] = copy.deepcopy(suite_defaults or {})
    config["train"] = merge(config["train"], copy.deepcopy(training_defaults or {}))
    if profile:
        config = merge(config, copy.deepcopy(profile))
    if file_config:
        config = merge(config, file_config)
    for item in overrides or []:
        config = merge(config, parse_override(item))
    return config
