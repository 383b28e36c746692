"""Batched scoring of samples with a stored, resumable per-image score cache.

:func:`score_samples` runs a detector over samples through a DataLoader (worker processes,
pinned memory on CUDA, the detector's own input policy), in fp32 unless bf16 is asked for, and returns
one row per scored sample. Every score is appended to the cache as soon as its batch is done,
so a killed run started again scores only what is missing, and an identical second run reads
everything back without calling the model. Under ``torchrun`` the missing images are sharded
across ranks without duplicates and the scores gathered on rank 0.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from harness import distributed
from harness.checkpoints import state_digest
from harness.data import PREPROCESS_FAILED, ImageTransform, PreprocessGuard, SampleDataset, batches, make_loader
from harness.errors import HarnessError
from harness.manifest import cache_root
from harness.runs import autocast
from harness.suite import Sample

if TYPE_CHECKING:  # pandas loads where it is used: 'harness list' imports this module
    import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = ["path", "generator", "split", "label", "logit"]
PRECISIONS = ("auto", "fp32", "bf16")


def default_cache_dir() -> Path:
    """``scores/`` under the harness cache (``$HARNESS_CACHE_DIR``, else ``~/.cache/aigi-harness``)."""
    return cache_root() / "scores"


def effective_precision(precision: str, device: torch.device) -> str:
    """What ``precision`` means on ``device``: ``fp32`` (the default, and what ``auto`` means:
    every official evaluation scores in fp32; bf16 moves NPR logits by up to 0.08 and ties SSP's
    scores) or, asked for with ``bf16``, bf16 autocast on CUDA and bf16 weights on CPU.

    On CPU, bf16 autocast is very slow for attention; casting a copy of the weights to
    bf16 is fast, so that is what ``bf16`` asks for there.
    """
    if precision not in PRECISIONS:
        raise HarnessError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    if precision != "bf16":
        return "fp32"
    return "bf16-autocast" if device.type == "cuda" else "bf16-weights"


def model_key(detector, *, precision: str, transform_key: str | None = None) -> dict[str, Any]:
    """Everything a score depends on apart from the image itself, and its hash (``key``)."""
    ingredients = {
        "detector": detector.name,
        "config": detector.config,
        "input_policy": detector.input_policy(False).to_dict(),
        # a detector with folded batch norms keeps the key of its unfolded weights
        "weights_state_sha256": getattr(detector, "unfolded_weights_digest", None) or state_digest(detector),
        "precision": precision,
        "transform": transform_key,
    }
    blob = json.dumps(ingredients, sort_keys=True, default=str).encode()
    ingredients["key"] = hashlib.sha256(blob).hexdigest()
    return ingredients


@dataclass(frozen=True)
class FileStamp:
    """A manifest entry as the cache keys it: the file's path, size and modification time."""

    path: str
    size: int
    mtime_ns: int


def stamp(path: str) -> FileStamp:
    st = os.stat(path)
    return FileStamp(path, st.st_size, st.st_mtime_ns)


class ScoreCache:
    """Append-only score store of one model key: ``<root>/<key[:20]>/scores-*.jsonl``.

    Each process appends to its own file and flushes after each batch, so a kill loses at
    most the batch in flight. An entry counts only while the file it names still has the same
    size and modification time. The cache only ever saves work: a line that is not a valid
    entry (torn by a kill, edited) is skipped, counted and warned about, and that image is
    scored again; a cache that cannot be read or written (missing, read-only, a file in the
    way, a full disk) is a warning and scoring goes on without it.
    """

    def __init__(self, root: str | Path, ingredients: dict[str, Any]):
        self.dir = Path(root) / ingredients["key"][:20]
        self.ingredients = ingredients
        self._fh = None
        #: Set when a write failed: the rest of this run scores without storing.
        self.disabled = False

    def read(self) -> dict[str, tuple]:
        """Stored entries by path: ``(size, mtime_ns, logit, error)`` (tuples: millions fit)."""
        entries: dict[str, tuple] = {}
        bad = 0
        try:
            if not self.dir.is_dir():
                return entries
            parts = sorted(self.dir.glob("scores-*.jsonl"))
            for part in parts:
                with part.open("r", encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        entry = _cache_entry(line)
                        if entry is None:
                            bad += 1
                        else:
                            entries[entry[0]] = entry[1:]
        except OSError as exc:
            log.warning("cannot read the score cache %s (%s): every image is scored", self.dir, exc.strerror or exc)
            return {}
        if bad:
            log.warning("score cache %s: %d malformed line(s) skipped; those images are scored again", self.dir, bad)
        return entries

    @staticmethod
    def lookup(entries: dict[str, tuple], st: FileStamp) -> dict[str, Any] | None:
        entry = entries.get(st.path)
        if entry is None or entry[0] != st.size or entry[1] != st.mtime_ns:
            return None
        return {"logit": entry[2], "error": entry[3]}

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records or self.disabled:
            return
        try:
            if self._fh is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                meta = self.dir / "key.json"
                if not meta.exists():
                    tmp = meta.with_suffix(f".{uuid.uuid4().hex}.tmp")
                    tmp.write_text(json.dumps(self.ingredients, indent=2, sort_keys=True, default=str))
                    tmp.replace(meta)
                name = f"scores-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
                self._fh = (self.dir / name).open("a", encoding="utf-8")
            self._fh.write("".join(json.dumps(r) + "\n" for r in records))
            self._fh.flush()
        except OSError as exc:
            log.warning("cannot write the score cache %s (%s): scoring goes on without storing scores",
                        self.dir, exc.strerror or exc)
            self.disabled = True
            self.close()

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:  # the flush of a full disk: what was written before is kept
                pass
            self._fh = None


def _cache_entry(line: str) -> tuple | None:
    """``(path, size, mtime_ns, logit, error)`` from one cache line, or None when it is not a valid entry."""
    try:
        e = json.loads(line)
        path, size, mtime, logit, error = e["path"], e["size"], e["mtime_ns"], e["logit"], e["error"]
    except (ValueError, TypeError, KeyError):
        return None
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (size, mtime))
    try:  # a huge JSON integer overflows a float: not a logit the harness wrote
        number = logit is None or (isinstance(logit, (int, float)) and not isinstance(logit, bool)
                                   and math.isfinite(float(logit)))
    except OverflowError:
        return None
    if not (isinstance(path, str) and ints and number and (error is None or isinstance(error, str))):
        return None
    if logit is None and error is None:
        return None
    return path, size, mtime, logit, error


def _forward_model(detector, precision: str):
    if precision == "bf16-weights":
        return copy.deepcopy(detector).to(torch.bfloat16)
    return detector


def _run_model(
    detector,
    todo: list[tuple[Sample, FileStamp]],
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    workers: int,
    transform: ImageTransform | None,
    cache: ScoreCache | None,
    desc: str,
) -> list[dict[str, Any]]:
    """Score this rank's shard of ``todo``; return (and store) one record per image."""
    dataset = SampleDataset([sample for sample, _ in todo], detector, transform=transform)
    sampler = distributed.ShardSampler(len(dataset))
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, sampler=sampler,
                         pin_memory=device.type == "cuda")
    model = _forward_model(detector, precision)
    input_dtype = torch.bfloat16 if precision == "bf16-weights" else None
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(sampler), desc=desc or "scoring", unit="img", disable=not distributed.is_main_process())
    try:
        with torch.no_grad(), autocast(device, enabled=precision == "bf16-autocast"):
            guard = PreprocessGuard()
            for batch in batches(loader):
                guard.update(batch)
                new = []
                for index, reason in batch["skipped"]:
                    new.append({**_stamp_dict(todo[index][1]), "logit": None, "error": reason})
                if len(batch["index"]):
                    x = batch["x"].to(device, non_blocking=True)
                    if input_dtype is not None:
                        x = x.to(input_dtype)
                    logits = model(x)
                    if logits.shape != (x.shape[0],):
                        raise HarnessError(
                            f"detector '{detector.name}' returned logits of shape {tuple(logits.shape)} "
                            f"for a batch of {x.shape[0]}: forward must return one logit per image, shape [B]"
                        )
                    for index, logit in zip(batch["index"].tolist(), logits.float().cpu().tolist()):
                        if np.isfinite(logit):
                            new.append({**_stamp_dict(todo[index][1]), "logit": logit, "error": None})
                        else:
                            new.append({**_stamp_dict(todo[index][1]), "logit": None,
                                        "error": f"detector returned a non-finite logit ({logit})"})
                if cache is not None:
                    cache.append([r for r in new if not (r["error"] or "").startswith(PREPROCESS_FAILED)])
                records.extend(new)
                bar.update(len(batch["index"]) + len(batch["skipped"]))
    finally:
        bar.close()
        if cache is not None:
            cache.close()
    return records


def _stamp_dict(st: FileStamp) -> dict[str, Any]:
    return {"path": st.path, "size": st.size, "mtime_ns": st.mtime_ns}


def score_samples(
    detector,
    samples: Sequence[Sample],
    *,
    device: torch.device | str,
    batch_size: int = 64,
    workers: int = 0,
    cache_dir: str | Path | None = None,
    transform: ImageTransform | None = None,
    transform_key: str | None = None,
    precision: str = "fp32",
    desc: str = "",
) -> pd.DataFrame:
    """Score ``samples``; one row per sample that has a score, in the samples' order.

    Columns: path, generator, split, label, logit. ``df.attrs``: ``skipped`` (list of
    ``(path, reason)`` for files that could not be scored), ``scored`` (files processed in
    this call, all ranks together: scored, or found unreadable), ``cached`` (samples
    answered from the cache) and ``cache_key``. ``transform`` (applied to decoded images before the input policy)
    needs a ``transform_key`` naming it when a cache is used. Every rank of a torchrun
    job must call this with the same arguments; every rank gets the same frame.
    """
    device = torch.device(device)
    if transform is not None and transform_key is None and cache_dir is not None:
        raise HarnessError("a transform needs a transform_key when scores are cached, or cached scores would mix")
    precision = effective_precision(precision, device)
    from harness.feature_cache import score_cached, uses_feature_cache

    if uses_feature_cache(detector):  # frozen backbone (UnivFD): head on cached features
        return score_cached(detector, samples, device=device, batch_size=batch_size, workers=workers,
                            transform=transform, transform_key=transform_key, precision=precision, desc=desc)
    was_training = detector.training
    detector.place(device).eval()
    try:
        frame = _score(detector, list(samples), device=device, batch_size=batch_size, workers=workers,
                       cache_dir=cache_dir, transform=transform, transform_key=transform_key,
                       precision=precision, desc=desc)
    finally:
        detector.train(was_training)
    return frame


def _score(detector, samples, *, device, batch_size, workers, cache_dir, transform, transform_key, precision, desc):
    import pandas as pd

    main = distributed.is_main_process()
    ingredients = model_key(detector, precision=precision, transform_key=transform_key) if cache_dir else None
    cache = ScoreCache(cache_dir, ingredients) if cache_dir else None

    # Rank 0 decides what is missing; every rank then scores its stride of that list.
    known: dict[str, dict[str, Any]] = {}
    stat_errors: dict[str, str] = {}
    todo: dict[str, tuple[Sample, FileStamp]] = {}
    if main:
        entries = cache.read() if cache else {}
        for sample in samples:
            if sample.path in known or sample.path in stat_errors or sample.path in todo:
                continue  # the same file listed twice (a real shared by two generators) is scored once
            try:
                st = stamp(sample.path)
            except OSError as exc:
                stat_errors[sample.path] = f"cannot stat: {exc.strerror}"
                continue
            entry = cache.lookup(entries, st) if cache else None
            if entry is not None:
                known[sample.path] = entry
            else:
                todo[sample.path] = (sample, st)
        del entries
        log.info("%s: %d images to score, %d answered from the cache", desc or "scoring", len(todo), len(known))
    todo = distributed.broadcast(list(todo.values()) if main else None)

    new_records = []
    if todo:
        new_records = _run_model(detector, todo, device=device, precision=precision, batch_size=batch_size,
                                 workers=workers, transform=transform, cache=cache, desc=desc)
    gathered = distributed.gather_to_main(new_records)

    frame = None
    if main:
        fresh = {r["path"]: r for part in gathered for r in part}
        missing = [sample for sample, _ in todo if sample.path not in fresh]
        if missing:  # a shard lost images: never silently drop them from the metrics
            raise HarnessError(f"{len(missing)} images were not scored by any rank, e.g. {missing[0].path}")
        results = {**known, **fresh}
        rows, skipped, cached = [], [], 0
        for sample in samples:
            if sample.path in stat_errors:
                skipped.append((sample.path, stat_errors[sample.path]))
                continue
            entry = results[sample.path]
            cached += sample.path in known
            if entry["logit"] is None:
                skipped.append((sample.path, entry["error"]))
            else:
                rows.append((sample.path, sample.generator, sample.split, int(sample.label), float(entry["logit"])))
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame.attrs.update(skipped=skipped, scored=len(fresh), cached=cached,
                           cache_key=ingredients["key"] if ingredients else None)
        if skipped:
            log.warning("%s: %d files skipped, e.g. %s: %s", desc or "scoring", len(skipped), *skipped[0])
    frame = distributed.broadcast(frame)
    return frame
