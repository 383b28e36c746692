"""Hugging Face datasets: a suite from a Hub dataset name or a local folder of parquet/arrow files.

The harness scores images from files, and a Hugging Face dataset keeps its images as bytes in
parquet/arrow rows. A scan therefore streams the rows once (``datasets`` with
``streaming=True``: one row in memory at a time, no arrow copy of the whole dataset) and writes
each image to a content-addressed store, ``<cache>/hf/<dataset>/<sha[:2]>/<sha256>.<ext>``,
atomically (a temporary file renamed into place) and only when it is not there yet. A file's
name is its content's hash, so it is never rewritten: the score cache (keyed on path, size
and modification time) stays valid across scans, and the last path parts that seeded subsets
hash (``Sample.portable_key``) are the same on every machine. The store is the suite's root, so
the manifest lists paths relative to it and its listing hash does not depend on where the cache
lies; the dataset's source (name, revision, local folder) is part of the suite's settings, and
so of the manifest's key. Local parquet/arrow files are watched: rewriting one walks the rows again.

Labels come from a column whose values are mapped by settings, with the fake values named
explicitly (``fake_values = [1]``, ``real_values = [0]``): nothing is guessed from 0/1. A row
whose label is missing or not one of those values, or whose image is missing, is recorded in
``ignored`` (shown by ``harness suite info``), never dropped silently. An image whose bytes do
not decode is listed (under a ``.bin`` name when its format is not recognised) and reported by
``harness suite verify``.

Offline: ``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE``) reads the local Hugging Face cache
only; a dataset that is not there gives one line, without network retries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from harness import hookimpl
from harness.errors import HarnessError
from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._layout import TreeSuite

#: Hugging Face split names -> the harness's splits (``suite.splits`` replaces this).
DEFAULT_SPLITS = {"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}
DATA_SUFFIXES = (".parquet", ".arrow")
#: File signatures -> extension, for images stored without a file name.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
               (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))
GENERATORS_FILE = "generators.json"  # metadata read from columns, per generator

log = logging.getLogger(__name__)


def offline() -> bool:
    """Whether the Hugging Face libraries are told to stay off the network."""
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def image_extension(data: bytes) -> str:
    """The extension the bytes' format has (``.bin`` when it is not an image format known here)."""
    for signature, ext in _SIGNATURES:
        if data.startswith(signature):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".bin"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "dataset"


class HFDataset(TreeSuite):
    """A suite read from a Hugging Face dataset (``suite.dataset``) or local files (``suite.root``)."""

    name = "hf"
    description = "A Hugging Face dataset (Hub name or local parquet/arrow folder), columns mapped by settings"
    reference = "https://huggingface.co/docs/datasets"
    root_env = "HARNESS_HF_ROOT"
    layout = ("suite.dataset = \"owner/name\" (the Hub, or the local Hugging Face cache when HF_HUB_OFFLINE=1), "
              "or suite.root = a folder of parquet/arrow files named by split (train-*.parquet, test-*.parquet, "
              "or <split>/*.parquet), with an image column and a label column")
    # dataset / revision / subset: the Hub dataset, its revision and configuration ("name" in
    # load_dataset). root: a local folder (or file) of parquet/arrow files instead.
    # image_column: an Image feature or raw bytes. label_column with fake_values / real_values:
    # the label values (matched as text; a ClassLabel also by its class name) of each class.
    # generator_column: the generator of each row (default: every row is generator `generator`,
    # else the dataset's name). shared_reals: list every real image under each generator that
    # has fakes in its split (the reals are one pool, not one per generator).
    # split_column: a column naming each row's split; splits: dataset split (or split_column
    # value) -> harness split (train/val/test); other splits are recorded as not read.
    # metadata_columns: generator metadata read from columns, e.g. {released = "release_date"}.
    # streaming: stream the rows (default); false loads the dataset through the arrow cache.
    # store: where the extracted images go (default <cache>/hf).
    defaults = {
        "root": None, "dataset": None, "revision": None, "subset": None,
        "image_column": "image", "label_column": "label", "fake_values": None, "real_values": None,
        "generator_column": None, "generator": None, "shared_reals": False,
        "split_column": None, "splits": None, "metadata_columns": None,
        "streaming": True, "store": None,
    }

    # -- where things are -----------------------------------------------------------------

    def source(self) -> tuple[str, str]:
        """("hub", name) or ("local", absolute path)."""
        dataset = self.config.get("dataset")
        raw = self.config.get("root") or (os.environ.get(self.root_env) if self.root_env else None)
        # A local copy replaces the Hub name a preset suite (openfake, commfor) ships with.
        if dataset and raw and dataset != type(self).defaults.get("dataset"):
            raise HarnessError(f"suite '{self.name}': set suite.dataset (a Hub name) or suite.root (a local "
                               f"folder), not both (got {dataset!r} and {raw!r})")
        if dataset and not raw:
            return "hub", str(dataset)
        if not raw:
            raise HarnessError(f"suite '{self.name}' needs its data: pass --set suite.dataset=OWNER/NAME or "
                               f"--set suite.root=FOLDER. Expected: {self.layout}")
        path = Path(raw).expanduser().resolve()
        if not path.exists():
            raise HarnessError(f"suite '{self.name}': {path} does not exist. Expected: {self.layout}")
        return "local", str(path)

    def root_path(self) -> Path:
        """The image store of this dataset (the manifest lists paths relative to it)."""
        kind, where = self.source()
        base = self.config.get("store")
        if base:
            base = Path(base).expanduser()
        else:
            from harness.manifest import cache_root

            base = cache_root() / "hf"
        label = where if kind == "hub" else Path(where).name
        store = (base / _slug(f"{self.name}-{label}")).resolve()
        store.mkdir(parents=True, exist_ok=True)
        return store

    def data_files(self) -> list[Path]:
        """The local parquet/arrow files, sorted (empty for a Hub dataset)."""
        kind, where = self.source()
        if kind == "hub":
            return []
        path = Path(where)
        if path.is_file():
            return [path]
        return sorted(p for p in path.rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(path).parts))

    def watch_files(self) -> list[Path]:
        return self.data_files()

    # -- reading ---------------------------------------------------------------------------

    def _load(self):
        """The dataset's splits, as {split name: dataset} (iterable when streaming)."""
        import datasets

        kind, where = self.source()
        streaming = bool(self.config.get("streaming", True))
        try:
            if kind == "hub":
                if offline():
                    streaming = False  # streaming reads the Hub; offline only the prepared cache can answer
                loaded = datasets.load_dataset(where, self.config.get("subset"),
                                               revision=self.config.get("revision"), streaming=streaming)
            else:
                files = self.data_files()
                if not files:
                    raise HarnessError(f"suite '{self.name}': no .parquet or .arrow files under {where}. "
                                       f"Expected: {self.layout}")
                if Path(where).is_file():
                    builder = "parquet" if files[0].suffix == ".parquet" else "arrow"
                    loaded = datasets.load_dataset(builder, data_files={"test": str(files[0])}, streaming=streaming)
                else:
                    loaded = datasets.load_dataset(where, streaming=streaming)
        except HarnessError:
            raise
        except (ConnectionError, FileNotFoundError) as exc:
            if kind == "hub" and offline():
                raise HarnessError(f"suite '{self.name}': dataset '{where}' is not in the local Hugging Face "
                                   f"cache and HF_HUB_OFFLINE is set: download it once online "
                                   f"(python -c \"import datasets; datasets.load_dataset('{where}')\") "
                                   f"or pass --set suite.root=FOLDER of its parquet files") from None
            raise HarnessError(f"suite '{self.name}': cannot read dataset '{where}': "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        except ValueError as exc:
            raise HarnessError(f"suite '{self.name}': cannot read dataset '{where}': "
                               f"{str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            loaded = {"test": loaded}
        return dict(loaded)

    def _columns(self, split_name: str, data) -> tuple[Any, dict[str, Any]]:
        """The split with its image column left undecoded, and the label column's class names."""
        import datasets

        features = data.features or {}
        wanted = {"image": self.config.get("image_column"), "label": self.config.get("label_column"),
                  "generator": self.config.get("generator_column"), "split": self.config.get("split_column")}
        wanted.update({f"metadata {k}": v for k, v in (self.config.get("metadata_columns") or {}).items()})
        if features:
            missing = {role: col for role, col in wanted.items() if col and col not in features}
            if missing:
                shown = ", ".join(f"{role} column '{col}'" for role, col in missing.items())
                raise HarnessError(f"suite '{self.name}': split '{split_name}' has no {shown}; its columns are "
                                   f"{', '.join(features)} (set suite.image_column, suite.label_column, ...)")
        image_col = wanted["image"]
        if isinstance(features.get(image_col), datasets.Image):
            data = data.cast_column(image_col, datasets.Image(decode=False))
        label_feature = features.get(wanted["label"])
        names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else []
        return data, {"class_names": names}

    def _label_of(self, value, class_names: list[str]) -> int | None:
        fake = self.config.get("fake_values")
        real = self.config.get("real_values")
        if not fake or not real:
            raise HarnessError(f"suite '{self.name}': say which label values are fake and which are real, "
                               f"e.g. --set 'suite.fake_values=[1]' --set 'suite.real_values=[0]' "
                               f"(or [\"fake\"] / [\"real\"]); nothing is guessed")
        if value is None:
            return None
        texts = {str(value).strip().lower()}
        if class_names and isinstance(value, int) and 0 <= value < len(class_names):
            texts.add(class_names[value].lower())
        is_fake = bool(texts & {str(v).strip().lower() for v in fake})
        is_real = bool(texts & {str(v).strip().lower() for v in real})
        if is_fake == is_real:
            return None
        return FAKE if is_fake else REAL

    def _store(self, store: Path, data: bytes) -> Path:
        """Write ``data`` into the content-addressed store (once, atomically); its path."""
        digest = hashlib.sha256(data).hexdigest()
        path = store / digest[:2] / f"{digest}{image_extension(data)}"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return path

    def _image_bytes(self, value) -> bytes | None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"])
            path = value.get("path")
            kind, where = self.source()
            if path and kind == "local":
                # A row may name an image file beside the local copy, never one elsewhere (absolute, '..', cwd).
                base = Path(where) if Path(where).is_dir() else Path(where).parent
                target = (base / str(path)).resolve()
                if target.is_relative_to(base) and target.is_file():
                    return target.read_bytes()
        return None

    def scan(self) -> Iterator[Sample]:
        self.begin_scan()
        store = self.root_path()
        kind, where = self.source()
        split_map = {str(k).lower(): v for k, v in (self.config.get("splits") or DEFAULT_SPLITS).items()}
        bad_targets = sorted({v for v in split_map.values() if v not in ("train", "val", "test")})
        if bad_targets:
            raise HarnessError(f"suite '{self.name}': suite.splits maps to {bad_targets}; the harness's splits are "
                               f"train, val and test")
        default_generator = self.config.get("generator") or _slug(where if kind == "hub" else Path(where).name)
        gen_col, split_col = self.config.get("generator_column"), self.config.get("split_column")
        image_col, label_col = self.config.get("image_column"), self.config.get("label_column")
        meta_cols = dict(self.config.get("metadata_columns") or {})
        samples: list[Sample] = []
        shared: list[tuple[str, str]] = []  # (path, split) of the reals listed under every generator
        metadata: dict[str, dict[str, Any]] = {}
        first_seen: dict[str, tuple[int, str]] = {}  # stored file -> (label, row) of its first row
        listed: dict[tuple[str, str, str], str] = {}  # (file, generator, split) -> its first row
        for split_name, data in self._load().items():
            if not split_col and split_name.lower() not in split_map:
                self.ignore(f"{where}:{split_name}", f"dataset split not read: not in suite.splits "
                                                     f"({', '.join(split_map)})")
                continue
            data, info = self._columns(split_name, data)
            for row_number, row in enumerate(data):
                where_row = f"{where}:{split_name}[{row_number}]"
                split = split_map.get(split_name.lower())
                if split_col:
                    split = split_map.get(str(row.get(split_col) or "").lower())
                    if split is None:
                        self.ignore(where_row, f"split value {row.get(split_col)!r} is not in suite.splits")
                        continue
                label = self._label_of(row.get(label_col), info["class_names"])
                if label is None:
                    what = "missing" if row.get(label_col) is None else f"{row.get(label_col)!r}, not one of " \
                        f"fake_values {self.config['fake_values']} / real_values {self.config['real_values']}"
                    self.ignore(where_row, f"label {what}: row not listed")
                    continue
                data_bytes = self._image_bytes(row.get(image_col))
                if not data_bytes:
                    self.ignore(where_row, "image missing (no bytes and no readable file): row not listed")
                    continue
                path = str(self._store(store, data_bytes))
                first_label, first_row = first_seen.setdefault(path, (label, where_row))
                if first_label != label:
                    self.ignore(where_row, f"the same image bytes as {first_row}, labelled "
                                           f"{'fake' if label == FAKE else 'real'} here and "
                                           f"{'fake' if first_label == FAKE else 'real'} there: row not listed")
                    continue
                generator = str(row.get(gen_col) or "").strip() if gen_col else ""
                shared_real = label == REAL and bool(self.config.get("shared_reals"))
                key = (path, "" if shared_real else generator or default_generator, split)
                if key in listed:
                    self.ignore(where_row, f"the same image bytes as {listed[key]} (same split and generator): "
                                           f"listed once")
                    continue
                listed[key] = where_row
                if shared_real:
                    shared.append((path, split))
                    continue
                generator = generator or default_generator
                samples.append(Sample(path, label, generator, split))
                if label == FAKE:
                    for key, col in meta_cols.items():
                        value = row.get(col)
                        if value not in (None, ""):
                            metadata.setdefault(generator, {}).setdefault(key, str(value))
        if shared:
            fakes_in: dict[str, dict[str, None]] = {}  # split -> generators with fakes, in listed order
            for s in samples:
                fakes_in.setdefault(s.split, {})[s.generator] = None
            for path, split in shared:
                generators = list(fakes_in.get(split, {}))
                if not generators:
                    self.ignore(path, f"real image of split {split}, which has no fakes to list it with")
                samples += [Sample(path, REAL, g, split) for g in generators]
        self._write_metadata(store, metadata)
        leaks = {s.path for s in samples if s.split == "test"} & {s.path for s in samples if s.split != "test"}
        if leaks:
            log.warning("suite '%s': %d image(s) are in the test split and in a training split (identical bytes)",
                        self.name, len(leaks))
        yield from samples

    # -- generator metadata read from columns ----------------------------------------------

    def _metadata_path(self, store: Path) -> Path:
        # Beside the store, not in it (the manifest watches the store's folder times), and named by
        # the source: two local folders of the same name share a store but not their metadata.
        source = hashlib.sha256(json.dumps(self.source()).encode()).hexdigest()[:12]
        return store.with_name(f"{store.name}.{source}.{GENERATORS_FILE}")

    def _write_metadata(self, store: Path, metadata: dict) -> None:
        path = self._metadata_path(store)
        text = json.dumps(metadata, indent=1, sort_keys=True)
        if path.is_file() and path.read_text() == text:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def generator_info(self) -> dict[str, dict[str, Any]]:
        """Metadata per generator read from ``metadata_columns`` by the last scan."""
        try:
            return json.loads(self._metadata_path(self.root_path()).read_text())
        except (OSError, json.JSONDecodeError, HarnessError):
            return {}

    def generators(self) -> list[str]:
        return self.listed_generators()


@hookimpl
def register_suites(register):
    register(HFDataset)
