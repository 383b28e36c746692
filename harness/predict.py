"""Scoring unlabelled images (``harness predict``): collect the inputs, score them through the
score cache, and write one row per input file, scored or not.

A file that cannot be scored (not an image, truncated, empty, gone) keeps its row, with the
reason in ``error`` and empty scores: an output never silently has fewer rows than inputs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from pathlib import Path
from typing import Iterable, TextIO

import pandas as pd

from harness.errors import HarnessError
from harness.metrics import sigmoid
from harness.scoring import score_samples
from harness.suite import Sample

#: Output columns, in order.
COLUMNS = ["path", "p_fake", "logit", "error", "input_policy", "weights_sha256"]
FORMATS = ("csv", "jsonl")


def _walk(folder: Path) -> list[str]:
    """Every regular file under ``folder`` (recursively, symlinked files included), sorted.

    All files, not only image names: a stray non-image gets its own error row rather than
    vanishing from the output.
    """
    found = []
    stack = [folder]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    found.append(os.path.abspath(entry.path))
    return sorted(found)


def read_path_list(stream: TextIO) -> list[str]:
    """Paths from a list, one per line (blank lines ignored)."""
    return [line.strip() for line in stream if line.strip()]


def read_csv_paths(path: Path) -> list[str]:
    """The ``path`` column of a CSV file (relative paths are relative to the CSV's folder)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"cannot read the CSV input {path}: {exc}") from None
    if "path" not in frame.columns:
        raise HarnessError(f"CSV input {path} has no 'path' column (columns: {', '.join(frame.columns) or 'none'})")
    return [str((path.parent / p) if not os.path.isabs(p) else Path(p)) for p in frame["path"] if p.strip()]


def collect_inputs(inputs: Iterable[str], stdin: TextIO | None = None) -> list[str]:
    """Absolute paths to score, each once, in the order given (a folder's files sorted).

    An input is a file, a folder (walked recursively), a ``.csv`` file with a ``path``
    column, or ``-`` for a list of paths on ``stdin``. A named path that does not exist is
    kept: it gets an error row.
    """
    paths: list[str] = []
    for item in inputs:
        if item == "-":
            if stdin is None:
                raise HarnessError("'-' reads paths from standard input, but none is available")
            paths += [os.path.abspath(p) for p in read_path_list(stdin)]
        elif os.path.isdir(item):
            paths += _walk(Path(item))
        elif item.lower().endswith(".csv") and os.path.isfile(item):
            paths += [os.path.abspath(p) for p in read_csv_paths(Path(item))]
        else:
            paths.append(os.path.abspath(item))
    return list(dict.fromkeys(paths))


def predict(detector, paths: list[str], *, device, weights_sha256: str | None, batch_size: int = 64,
            workers: int = 0, cache_dir=None, precision: str = "auto") -> pd.DataFrame:
    """One row per path (:data:`COLUMNS`), in the order of ``paths``."""
    samples = [Sample(path, 0, "predict", "predict") for path in paths]  # labels are unknown and unused
    scored = score_samples(detector, samples, device=device, batch_size=batch_size, workers=workers,
                           cache_dir=cache_dir, precision=precision, desc="predict")
    logits = dict(zip(scored["path"], scored["logit"]))
    errors = dict(scored.attrs.get("skipped", []))
    policy = json.dumps(detector.input_policy(False).to_dict(), sort_keys=True)
    rows = []
    for path in paths:
        logit = logits.get(path)
        error = None if logit is not None else errors.get(path, "not scored")
        rows.append({"path": path, "p_fake": None if logit is None else float(sigmoid(logit)),
                     "logit": logit, "error": error, "input_policy": policy, "weights_sha256": weights_sha256})
    return pd.DataFrame(rows, columns=COLUMNS)


def output_format(out: str | None, requested: str | None) -> str:
    """``--format`` if given, else the output file's extension, else CSV."""
    if requested:
        if requested not in FORMATS:
            raise HarnessError(f"unknown output format '{requested}': use one of {', '.join(FORMATS)}")
        return requested
    if out and Path(out).suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    if out and Path(out).suffix.lower() not in ("", ".csv"):
        raise HarnessError(f"cannot tell the output format from '{out}': name it .csv or .jsonl, or pass --format")
    return "csv"


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "jsonl":
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return "".join(json.dumps(r) + "\n" for r in records)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


def write_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
