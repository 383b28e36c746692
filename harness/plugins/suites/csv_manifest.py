"""Any list of images: a CSV file with columns ``path,label[,generator][,split][,pair]``."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterator

from harness import hookimpl
from harness.errors import HarnessError
from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._layout import TreeSuite

LABELS = {"0": REAL, "1": FAKE, "real": REAL, "fake": FAKE, "0_real": REAL, "1_fake": FAKE, "nature": REAL, "ai": FAKE}
SPLITS = ("train", "val", "test")
_NAMES = {REAL: "real", FAKE: "fake"}


class CSVSuite(TreeSuite):
    name = "csv"
    description = "Images listed in a CSV file: path,label[,generator][,split][,pair]"
    root_env = "HARNESS_CSV_ROOT"
    layout = ("a CSV file with a header row and columns path,label[,generator][,split][,pair]; label 0/1, "
              "real/fake or nature/ai; relative paths are read from the CSV file's folder")
    # generator / split: values for rows that leave those columns out (generator defaults to
    # the CSV file's name without extension). allow_outside_root: read paths that lead outside the
    # CSV file's folder (absolute paths, '..', symlinks out); by default each is a reported skip.
    defaults = {"root": None, "generator": None, "split": "test", "allow_outside_root": False}
    settings = {"generator": {"type": ["string", "null"]}}

    def root_path(self) -> Path:
        raw = self.config.get("root") or (os.environ.get(self.root_env) if self.root_env else None)
        if not raw:
            raise HarnessError(f"suite 'csv' needs its CSV file: pass --set suite.root=FILE.csv or set "
                               f"{self.root_env}. Expected: {self.layout}")
        path = Path(raw).expanduser().resolve()
        if not path.is_file():
            raise HarnessError(f"suite 'csv': {path} is not a file. Expected: {self.layout}")
        return path

    def watch_files(self) -> list[Path]:
        return [self.root_path()]

    def generators(self) -> list[str]:
        return self.listed_generators()

    def scan(self) -> Iterator[Sample]:
        self.begin_scan()
        path = self.root_path()
        base = path.parent
        default_generator = self.config.get("generator") or path.stem
        default_split = self.config.get("split") or "test"
        confined = not self.config.get("allow_outside_root", False)
        samples, problems = [], []
        # path -> (line, label) of its first row; (path, generator, split) -> line of its first row
        first_label: dict[str, tuple[int, int]] = {}
        first_row: dict[tuple[str, str, str], int] = {}
        # path -> (line, split) of its first row: one image in a training split and in test is a leak
        first_split: dict[str, tuple[int, str]] = {}
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                columns = [c.strip().lower() for c in (reader.fieldnames or [])]
                if "path" not in columns or "label" not in columns:
                    raise HarnessError(f"suite 'csv': {path} has columns {columns or 'none'}; expected {self.layout}")
                reader.fieldnames = columns
                for line, row in enumerate(reader, start=2):
                    raw_path = (row.get("path") or "").strip()
                    label = LABELS.get((row.get("label") or "").strip().lower())
                    split = (row.get("split") or "").strip().lower() or default_split
                    if not raw_path:
                        problems.append(f"line {line}: empty path")
                        continue
                    if label is None:
                        problems.append(f"line {line}: label '{row.get('label')}' is not one of {', '.join(LABELS)}")
                        continue
                    if split not in SPLITS:
                        problems.append(f"line {line}: split '{split}' is not one of {', '.join(SPLITS)}")
                        continue
                    pair = (row.get("pair") or "").strip()
                    image = str((base / raw_path).resolve())
                    pair_path = str((base / pair).resolve()) if pair else None
                    outside = [p for p in (image, pair_path) if p and confined and not _inside(base, p)]
                    if outside:
                        self.ignore(outside[0], f"line {line}: outside the CSV file's folder {base}; set "
                                                "suite.allow_outside_root=true to read it")
                        continue
                    generator = (row.get("generator") or "").strip() or default_generator
                    seen_line, seen_label = first_label.setdefault(image, (line, label))
                    if seen_label != label:
                        problems.append(f"line {line}: {image} is listed as {_NAMES[label]} here but as "
                                        f"{_NAMES[seen_label]} on line {seen_line}")
                        continue
                    split_line, seen_split = first_split.setdefault(image, (line, split))
                    if seen_split != split and "test" in (seen_split, split):
                        problems.append(f"line {line}: {image} is listed in split {split} here but in "
                                        f"{seen_split} on line {split_line}: test images must not be trained on")
                        continue
                    repeat = first_row.setdefault((image, generator, split), line)
                    if repeat != line:
                        self.ignore(image, f"line {line} repeats line {repeat} (same path, label, generator "
                                           f"and split): listed once")
                        continue
                    samples.append(Sample(image, label, generator, split, pair_path))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise HarnessError(f"suite 'csv': cannot read {path}: {exc}") from None
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise HarnessError(f"suite 'csv': {path} has {len(problems)} bad row(s): {shown}")
        yield from samples


def _inside(base: Path, path: str) -> bool:
    """Whether the resolved ``path`` lies under the folder ``base`` (already resolved)."""
    return Path(path).is_relative_to(base)


@hookimpl
def register_suites(register):
    register(CSVSuite)
