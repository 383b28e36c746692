"""Fingerprints of published datasets: their counts per generator, split and class, and lists of
files known to be bad, each with its source, compared with a local copy by
``harness suite verify NAME --against NAME@VERSION``.

A fingerprint is a JSON file ``<suite>@<version>.json`` (the shipped ones live beside this
module; a lab's own are found first in the folders of ``$HARNESS_FINGERPRINTS``, and
``--against`` also takes a file path)::

    {"suite": "aigibench", "version": "2025", "source": "where the numbers come from",
     "counts": [{"generator": "SocialRF", "split": "test", "class": "fake", "count": 3000}, ...],
     "known_bad": [{"path": "ADM/imagenet_ai_0508_adm/val/ai/123.PNG", "reason": "truncated"}],
     "known_bad_source": "where the list comes from"}

``generator`` and ``class`` may be ``"*"`` (all of them); ``split`` may be a list of the
harness's splits, summed (a published train folder that the harness splits into train and
val by hash is ``["train", "val"]``). Counts are of distinct files, so a real photo the
suite lists under every generator is counted once. ``known_bad`` paths are relative to the
suite's root and matched against the end of each listed path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pandas as pd

from harness.errors import HarnessError

ENV = "HARNESS_FINGERPRINTS"
SHIPPED = Path(__file__).resolve().parent
SPLITS = ["train", "val", "test"]
CLASSES = {"real": 0, "fake": 1}

SCHEMA = {
    "type": "object",
    "required": ["suite", "version", "source", "counts"],
    "additionalProperties": False,
    "properties": {
        "suite": {"type": "string", "minLength": 1},
        "version": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1},
        "note": {"type": "string"},
        "counts": {"type": "array", "items": {
            "type": "object", "required": ["generator", "split", "class", "count"], "additionalProperties": False,
            "properties": {
                "generator": {"type": "string", "minLength": 1},
                "split": {"oneOf": [{"enum": SPLITS}, {"type": "array", "minItems": 1, "uniqueItems": True,
                                                       "items": {"enum": SPLITS}}]},
                "class": {"enum": ["real", "fake", "*"]},
                "count": {"type": "integer", "minimum": 0},
            }}},
        "known_bad": {"type": "array", "items": {
            "type": "object", "required": ["path", "reason"], "additionalProperties": False,
            "properties": {"path": {"type": "string", "minLength": 1}, "reason": {"type": "string"}}}},
        "known_bad_source": {"type": "string"},
    },
}


def search_dirs() -> list[Path]:
    return [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p] + [SHIPPED]


def available() -> dict[str, Path]:
    """``NAME@VERSION`` -> file, first folder wins."""
    found: dict[str, Path] = {}
    for folder in search_dirs():
        for path in sorted(folder.glob("*@*.json")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def load(spec: str) -> dict[str, Any]:
    """The fingerprint ``NAME@VERSION`` (or a JSON file path), checked against :data:`SCHEMA`."""
    path = Path(spec).expanduser()
    if not (spec.endswith(".json") and path.is_file()):
        known = available()
        if spec not in known:
            shown = ", ".join(sorted(known)) or "none"
            raise HarnessError(f"no fingerprint '{spec}' (NAME@VERSION, or a .json file); known: {shown}")
        path = known[spec]
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"fingerprint {path}: cannot read it as JSON ({exc})") from None
    try:
        jsonschema.validate(data, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise HarnessError(f"fingerprint {path}: {where}: {exc.message}") from None
    data["path"] = str(path)
    return data


@dataclass
class CountCheck:
    generator: str
    split: str
    cls: str
    published: int
    found: int

    @property
    def status(self) -> str:
        if self.found == self.published:
            return "ok"
        if self.found == 0:
            return "missing"
        if self.found < self.published:
            return f"short by {self.published - self.found}"
        return f"{self.found - self.published} more than published"

    @property
    def problem(self) -> bool:
        """Missing or short: the local copy lacks files the published one has."""
        return self.found < self.published


def compare(table: pd.DataFrame, root: Path | None, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The counts check of each fingerprint entry, and the known-bad files present in ``table``."""
    checks = []
    for entry in fingerprint["counts"]:
        splits = entry["split"] if isinstance(entry["split"], list) else [entry["split"]]
        rows = table["split"].isin(splits)
        if entry["generator"] != "*":
            rows &= table["generator"] == entry["generator"]
        if entry["class"] != "*":
            rows &= table["label"] == CLASSES[entry["class"]]
        checks.append(CountCheck(entry["generator"], "+".join(splits), entry["class"], entry["count"],
                                 int(table.loc[rows, "path"].nunique())))
    present = []
    bad = fingerprint.get("known_bad") or []
    if bad:
        by_name: dict[str, list[str]] = {}  # file name -> listed paths: a lookup, not a scan per entry
        for p in table["path"]:
            rel = _relative(p, root)
            by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
        for item in bad:
            wanted = PurePosixPath(item["path"]).as_posix().lstrip("/")
            candidates = by_name.get(wanted.rsplit("/", 1)[-1], [])
            if any(p == wanted or p.endswith("/" + wanted) for p in candidates):
                present.append((wanted, item["reason"]))
    return {"checks": checks, "known_bad_present": present}


def _relative(path: str, root: Path | None) -> str:
    p = Path(path)
    if root is not None:
        try:
            p = p.relative_to(root)
        except ValueError:
            pass
    return p.as_posix()
