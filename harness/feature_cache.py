"""Frozen-backbone feature cache: features computed once per image, then reused.

A detector whose backbone is frozen (UnivFD: CLIP + a linear head) spends almost all of its
time in the backbone. This module stores the backbone's feature of every image once, keyed by

- the backbone weights (a hash of the frozen tensors, so random-init, hub and local-file
  backbones are told apart),
- the test input policy (geometry, size, padding, normalisation),
- the image transform (``transform_key``; a transform without a key is never cached),
- the precision the features were computed in (``eval.precision``: fp32 unless bf16 is asked for),

and, per image, by its path, size and modification time (an edited file is recomputed).
Training the head (:func:`train_head`) and scoring (:func:`score_cached`) then read the
cache; the backbone only runs for images it has not seen.

A detector opts in by providing (see :func:`uses_feature_cache`):

- ``features(x) -> [B, D]``: the frozen feature of a preprocessed batch (values in [0, 1]);
- ``head_logits(f) -> [B]``: the trainable head on features; ``forward(x)`` equals
  ``head_logits(features(x))``;
- ``head``: the module holding the trainable parameters;
- ``feature_identity() -> dict``: what identifies the frozen weights;
- ``config["cache_features"]`` true.

Storage: ``<cache_dir>/<key>/meta.json`` plus shards ``<id>.npy`` (float32 ``[n, D]``, read
memory-mapped) and ``<id>.json`` (the n image keys, written last: a shard without its
index was interrupted and is ignored). Shards get unique names, so concurrent writers
(several ranks, several runs) never collide.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from harness import distributed
from harness.errors import HarnessError
from harness.manifest import cache_root
from harness.suite import Sample

log = logging.getLogger(__name__)

#: Rows per shard file: progress survives an interruption at this granularity.
SHARD_ROWS = 4096


def default_cache_dir() -> Path:
    """``features/`` under the harness cache (``$HARNESS_CACHE_DIR``, else ``~/.cache/aigi-harness``)."""
    return cache_root() / "features"


def uses_feature_cache(detector) -> bool:
    """Whether the engines should go through the cache for this detector."""
    needed = ("features", "head_logits", "head", "feature_identity")
    return all(hasattr(detector, name) for name in needed) and bool(detector.config.get("cache_features", False))


def image_key(path: str) -> str | None:
    """Path, size and mtime of an image file; ``None`` when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def cache_key(detector, device: torch.device, transform_key: str | None,
              precision: str = "fp32") -> tuple[str, dict[str, Any]]:
    """The store's key; ``precision`` is an effective one (:func:`harness.scoring.effective_precision`)."""
    meta = {
        "schema": 1,
        "detector": getattr(detector, "name", type(detector).__name__),
        "backbone": detector.feature_identity(),
        "policy": detector.input_policy(False).to_dict(),
        "transform": transform_key,
        "precision": precision,
    }
    blob = json.dumps(meta, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20], meta


class FeatureStore:
    """One cache key's folder: look features up by image key, append new shards.

    The cache only saves work: a shard that cannot be read or does not fit its index is warned
    about and ignored (its images are computed again), and a folder that cannot be written
    (read-only, a file in the way, a full disk) is a warning, after which features are computed
    without being stored.
    """

    def __init__(self, folder: str | Path, meta: dict[str, Any]):
        self.folder = Path(folder)
        self._index: dict[str, tuple[str, int]] = {}
        self._arrays: dict[str, np.ndarray] = {}
        #: False once a write failed: the rest of this run computes without storing.
        self.writable = True
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            meta_path = self.folder / "meta.json"
            if not meta_path.exists():
                tmp = meta_path.with_suffix(f".{uuid.uuid4().hex}.tmp")
                tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
                tmp.replace(meta_path)
        except OSError as exc:
            self._unwritable(exc)
        self.reload()

    def _unwritable(self, exc: OSError) -> None:
        log.warning("cannot write the feature cache %s (%s): features are computed without being stored",
                    self.folder, exc.strerror or exc)
        self.writable = False

    def reload(self) -> None:
        try:
            indexes = sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []
        except OSError as exc:
            log.warning("cannot read the feature cache %s (%s): every feature is computed", self.folder, exc)
            return
        for index_path in indexes:
            if index_path.name == "meta.json":
                continue
            shard = index_path.stem
            if shard in self._arrays:
                continue
            npy = self.folder / f"{shard}.npy"
            try:
                keys = json.loads(index_path.read_text())
                array = np.load(npy, mmap_mode="r")
            except (OSError, ValueError) as exc:
                log.warning("feature cache shard %s is unreadable and ignored: %s", npy, exc)
                continue
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                log.warning("feature cache index %s is not a list of image keys; its shard is ignored", index_path)
                continue
            if array.ndim != 2 or array.shape[0] != len(keys):
                log.warning("feature cache shard %s has %s rows for %d keys; ignored", npy, array.shape, len(keys))
                continue
            self._arrays[shard] = array
            for row, key in enumerate(keys):
                self._index[key] = (shard, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str) -> np.ndarray:
        shard, row = self._index[key]
        return self._arrays[shard][row]

    def add(self, keys: list[str], features: np.ndarray) -> None:
        if not keys or not self.writable:
            return
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.shape[0] != len(keys):
            raise ValueError("one feature row per key")
        shard = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}"
        npy = self.folder / f"{shard}.npy"
        tmp = self.folder / f"{shard}.tmp.npy"
        index_tmp = self.folder / f"{shard}.tmp"
        try:
            np.save(tmp, features)
            tmp.replace(npy)
            index_tmp.write_text(json.dumps(keys))
            index_tmp.replace(self.folder / f"{shard}.json")  # the index last: it marks the shard complete
        except OSError as exc:
            for leftover in (tmp, npy, index_tmp):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
            self._unwritable(exc)
            return
        self._arrays[shard] = np.load(npy, mmap_mode="r")
        for row, key in enumerate(keys):
            self._index[key] = (shard, row)


@dataclass
class FeatureTable:
    """Features of a list of samples, in their order; rows of skipped samples are NaN."""

    features: np.ndarray  # [N, D] float32
    valid: np.ndarray  # [N] bool
    skipped: list[tuple[str, str]] = field(default_factory=list)
    hits: int = 0
    computed: int = 0
    key: str | None = None  # the cache folder's name; None when nothing was cached


def open_store(detector, device, cache_dir: str | Path | None, transform_key: str | None = None,
               precision: str = "fp32") -> FeatureStore:
    """The store of this detector, precision and transform under ``cache_dir`` (default:
    the detector's ``feature_cache_dir`` setting, else :func:`default_cache_dir`)."""
    key, meta = cache_key(detector, device, transform_key, precision)
    root = cache_dir or detector.config.get("feature_cache_dir") or default_cache_dir()
    return FeatureStore(Path(root) / key, meta)


@torch.no_grad()
def _compute(detector, samples: list[Sample], *, device, batch_size: int, workers: int,
             transform, desc: str, precision: str) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    from harness.data import SampleDataset, make_loader
    from harness.runs import autocast
    from harness.scoring import _forward_model

    dataset = SampleDataset(samples, detector, train=False, transform=transform)
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, pin_memory=torch.device(device).type == "cuda")
    rows: list[np.ndarray] = []
    indices: list[np.ndarray] = []
    skipped: list[tuple[int, str]] = []
    model = _forward_model(detector, precision)  # a bf16 copy for CPU bf16, else the detector itself
    for batch in tqdm(loader, desc=desc or "features", leave=False, disable=len(loader) < 2):
        skipped.extend(batch["skipped"])
        if "x" not in batch:
            continue
        x = batch["x"].to(device, non_blocking=True)
        with autocast(torch.device(device), enabled=precision == "bf16-autocast"):
            feats = model.features(x.to(torch.bfloat16) if precision == "bf16-weights" else x)
        rows.append(feats.float().cpu().numpy())
        indices.append(batch["index"].numpy())
    if rows:
        return np.concatenate(indices), np.concatenate(rows), skipped
    return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), skipped


def cached_features(
    detector,
    samples: Sequence[Sample],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    cache_dir: str | Path | None = None,
    transform: Callable | None = None,
    transform_key: str | None = None,
    precision: str = "fp32",
    desc: str = "",
) -> FeatureTable:
    """The frozen features of ``samples``: read from the cache, the missing ones computed and stored.

    With a ``transform`` but no ``transform_key`` nothing is read or stored (the cache cannot
    know what the transform did). Files that cannot be decoded are reported in ``skipped``.
    """
    samples = list(samples)
    device = torch.device(device)
    detector.eval()
    use_cache = transform is None or transform_key is not None
    store = open_store(detector, device, cache_dir, transform_key, precision) if use_cache else None
    keys = [image_key(s.path) for s in samples]
    todo = [i for i, k in enumerate(keys) if store is None or k is None or k not in store]
    # The same file listed twice is computed once.
    seen: dict[str | None, int] = {}
    unique_todo = []
    for i in todo:
        if keys[i] is not None and keys[i] in seen:
            continue
        seen[keys[i]] = i
        unique_todo.append(i)

    computed_rows: dict[int, np.ndarray] = {}
    reasons: dict[int, str] = {}
    for start in range(0, len(unique_todo), SHARD_ROWS):
        chunk = unique_todo[start : start + SHARD_ROWS]
        idx, feats, skipped = _compute(
            detector, [samples[i] for i in chunk], device=device, batch_size=batch_size,
            workers=workers, transform=transform, desc=desc, precision=precision,
        )
        for local, reason in skipped:
            reasons[chunk[local]] = reason
        finite = np.isfinite(feats).all(axis=1) if len(feats) else np.zeros(0, dtype=bool)
        for local, row, ok in zip(idx.tolist(), feats, finite):
            if ok:
                computed_rows[chunk[local]] = row
            else:  # reported like an undecodable file, never stored
                reasons[chunk[local]] = "the backbone returned a non-finite feature"
        if store is not None:
            stored = [(keys[chunk[local]], feats[j]) for j, local in enumerate(idx.tolist())
                      if keys[chunk[local]] and finite[j]]
            if stored:
                store.add([k for k, _ in stored], np.stack([f for _, f in stored]))

    dim = None
    if computed_rows:
        dim = next(iter(computed_rows.values())).shape[0]
    elif store is not None:  # None when no sample of this list is stored (an empty val split, say)
        first = next((store.get(k) for k in keys if k is not None and k in store), None)
        dim = None if first is None else first.shape[0]
    n = len(samples)
    out = np.full((n, dim or 0), np.nan, dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    hits = 0
    skipped_out: list[tuple[str, str]] = []
    for i, key in enumerate(keys):
        source = seen.get(key, i) if key is not None else i
        if source in computed_rows:
            out[i] = computed_rows[source]
            valid[i] = True
        elif store is not None and key is not None and key in store:
            out[i] = store.get(key)
            valid[i] = True
            hits += 1
        else:
            skipped_out.append((samples[i].path, reasons.get(source, "not decodable")))
    return FeatureTable(features=out, valid=valid, skipped=skipped_out, hits=hits, computed=len(computed_rows),
                        key=store.folder.name if store is not None else None)


@torch.no_grad()
def _head_logits(detector, features: np.ndarray, device, batch_size: int = 8192) -> np.ndarray:
    out = []
    for start in range(0, len(features), batch_size):
        f = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size])).to(device)
        out.append(detector.head_logits(f).float().reshape(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def score_cached(
    detector,
    samples: Sequence[Sample],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    feature_cache_dir: str | Path | None = None,
    transform: Callable | None = None,
    transform_key: str | None = None,
    precision: str = "fp32",
    desc: str = "",
) -> pd.DataFrame:
    """What :func:`harness.scoring.score_samples` returns, computed through the feature cache.

    ``feature_cache_dir`` defaults to the detector's ``feature_cache_dir`` setting, else
    :func:`default_cache_dir`. Columns path, generator, split, label, logit;
    ``df.attrs["skipped"]`` lists (path, reason), ``df.attrs["feature_cache"]`` the hits.
    Under torchrun every rank computes the whole list (the features are shared through the
    cache folder); the frames are identical.
    """
    samples = list(samples)
    device = torch.device(device)
    was_training = detector.training
    detector.to(device).eval()
    try:
        table = cached_features(
            detector, samples, device=device, batch_size=batch_size, workers=workers,
            cache_dir=feature_cache_dir, transform=transform,
            transform_key=transform_key, precision=precision, desc=desc,
        )
    finally:
        detector.train(was_training)
    logits = _head_logits(detector, table.features[table.valid], device)
    finite = np.isfinite(logits)
    kept = [s for s, ok in zip(samples, table.valid) if ok]
    skipped = list(table.skipped) + [(s.path, "the head returned a non-finite logit")
                                     for s, ok in zip(kept, finite) if not ok]
    kept, logits = [s for s, ok in zip(kept, finite) if ok], logits[finite]
    df = pd.DataFrame({
        "path": [s.path for s in kept],
        "generator": [s.generator for s in kept],
        "split": [s.split for s in kept],
        "label": np.array([s.label for s in kept], dtype=np.int64),
        "logit": logits.astype(np.float64),
    })
    # The attributes score_samples sets, with the feature cache in place of the score cache.
    df.attrs.update(skipped=skipped, scored=table.computed, cached=table.hits,
                    cache_key=table.key, feature_cache={"hits": table.hits, "computed": table.computed})
    return df


def _labels(samples: Sequence[Sample], valid: np.ndarray) -> np.ndarray:
    return np.array([s.label for s, ok in zip(samples, valid) if ok], dtype=np.float32)


def train_head(
    detector,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    *,
    config: dict[str, Any],
    run_dir: str | Path,
    device: torch.device | str = "cpu",
) -> Path:
    """Train only the detector's head on cached frozen features; the best head by validation
    accuracy is saved as a harness checkpoint (``<run_dir>/checkpoints/best.safetensors``).

    The ``[train]`` section gives epochs, batch_size, lr, weight_decay (through the
    detector's ``configure_optimizer``), ``patience`` (epochs without a validation gain of
    ``min_delta`` before the learning rate is divided by 10, UnivFD's schedule) and
    ``min_lr`` (training stops when the learning rate would fall below it). Features are
    those of the test input policy: random-crop and blur/JPEG augmentations need the
    backbone and are not applied on this path (``detector.cache_features=false`` trains
    through the backbone with them).
    """
    from harness.checkpoints import save_checkpoint

    train_cfg = config.get("train", {})
    seed = int(config.get("run", {}).get("seed", 0))
    device = torch.device(device)
    run_dir = Path(run_dir)
    epochs = int(train_cfg.get("epochs", 100))
    batch_size = int(train_cfg.get("batch_size", 256))
    patience = train_cfg.get("patience", 5)
    patience = None if patience is None else int(patience)  # None: never lower the learning rate
    min_lr = float(train_cfg.get("min_lr", 1e-6))
    min_delta = float(train_cfg.get("min_delta", 1e-3))
    workers = int(train_cfg.get("workers", 0))
    feature_batch = int(train_cfg.get("feature_batch_size", config.get("eval", {}).get("batch_size", 64)))
    from harness.scoring import effective_precision

    precision = effective_precision(str(config.get("eval", {}).get("precision", "fp32")), device)

    detector.to(device)
    tables = {}
    for split, samples in (("train", train_samples), ("val", val_samples)):
        tables[split] = cached_features(detector, samples, device=device, batch_size=feature_batch,
                                        workers=workers, precision=precision, desc=f"features ({split})")
        if tables[split].skipped:
            log.warning("%d %s images could not be decoded and are left out: first %s",
                        len(tables[split].skipped), split, tables[split].skipped[0])
    x_train = torch.from_numpy(tables["train"].features[tables["train"].valid]).to(device)
    y_train = torch.from_numpy(_labels(train_samples, tables["train"].valid)).to(device)
    x_val = torch.from_numpy(tables["val"].features[tables["val"].valid]).to(device)
    y_val = torch.from_numpy(_labels(val_samples, tables["val"].valid)).to(device)
    if len(x_train) == 0:
        raise HarnessError("no decodable training images: cannot train the head")
    if len(torch.unique(y_train)) < 2:
        raise HarnessError("the training images hold only one class: the head needs real and fake images")

    params = detector.parameters_to_train()
    optimizer = detector.configure_optimizer(params, train_cfg)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.functional.binary_cross_entropy_with_logits

    def evaluate(x, y) -> tuple[float, float]:
        detector.eval()
        with torch.no_grad():
            logits = torch.cat([detector.head_logits(x[i : i + 8192]).float().reshape(-1)
                                for i in range(0, len(x), 8192)])
        return float(loss_fn(logits, y)), float(((logits > 0).float() == y).float().mean())

    best = {"acc": -1.0, "loss": float("inf"), "epoch": -1, "state": None}
    history = []
    bad_epochs = 0
    for epoch in range(epochs):
        detector.head.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = loss_fn(detector.head_logits(x_train[idx]).float().reshape(-1), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        # Without validation images the last epoch is kept; the training loss stands in for the record.
        val_loss, val_acc = evaluate(x_val, y_val) if len(x_val) else (total / count, float("nan"))
        lr = optimizer.param_groups[0]["lr"]
        history.append({"epoch": epoch + 1, "train_loss": total / count, "val_loss": val_loss, "val_acc": val_acc, "lr": lr})
        improved = (not len(x_val)) or val_acc > best["acc"] + min_delta or (
            abs(val_acc - best["acc"]) <= min_delta and val_loss < best["loss"])
        if improved:
            bad_epochs = 0
            best.update(acc=val_acc, loss=val_loss, epoch=epoch,
                        state={k: v.detach().clone() for k, v in detector.head.state_dict().items()})
        else:
            bad_epochs += 1
            if patience is not None and bad_epochs >= patience:
                if lr / 10 < min_lr:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = group["lr"] / 10
                bad_epochs = 0
    detector.head.load_state_dict(best["state"])
    ckpt = run_dir / "checkpoints" / "best.safetensors"
    meta = {
        "detector": getattr(detector, "name", None),
        "train_generators": sorted({s.generator for s in train_samples}),
        "backbone": getattr(detector, "provenance", None),
        "trained_on": "cached frozen features (test input policy, no augmentation)",
        "feature_cache": {split: {"hits": t.hits, "computed": t.computed, "skipped": len(t.skipped)}
                          for split, t in tables.items()},
    }
    if distributed.is_main_process():
        save_checkpoint(ckpt, detector.checkpoint_state(), detector.config,
                        {**meta, "epoch": best["epoch"] + 1, "val": {"acc": best["acc"], "loss": best["loss"]},
                         "kind": "best"})
        summary = {**meta, "epochs_run": len(history), "best_epoch": best["epoch"] + 1,
                   "best_checkpoint": str(ckpt), "history": history,
                   "skipped": [{"path": p, "reason": r} for t in tables.values() for p, r in t.skipped]}
        (run_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    distributed.barrier()
    log.info("head trained on cached features: best epoch %d, val acc %.4f -> %s", best["epoch"] + 1, best["acc"], ckpt)
    return ckpt
