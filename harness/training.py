"""The training engine shared by every trainable detector.

One loop for all detectors: the detector supplies ``training_step(batch)`` (its losses),
``configure_optimizer`` and ``checkpoint_state``; the engine does the rest — data order,
schedule, gradient accumulation, bf16 autocast on CUDA, gradient clipping, validation each
epoch, best and last checkpoints, early stopping, resume, and data parallelism under torchrun.

The ``[train]`` section (every key optional; the detector's recipe and profiles fill it):

==========================  ====================================================================
``epochs``                  number of epochs (1)
``batch_size``              images per micro-batch and process (32)
``grad_accum``              micro-batches per optimiser step (1)
``lr``, ``weight_decay``    read by the detector's ``configure_optimizer`` (AdamW by default)
``schedule``                ``cosine`` (default), ``step`` or ``constant``, per optimiser step
``warmup_steps``            linear warm-up steps (0)
``min_lr_ratio``            floor of the cosine, as a fraction of lr (0)
``step_epochs``, ``gamma``  for ``step``: multiply lr by gamma every step_epochs epochs (1, 0.1)
``clip_grad``               max global gradient norm; 0 or absent = off
``patience``                epochs without improvement before stopping; absent = never
``select``                  validation metric that picks the best checkpoint: ``auc`` (default),
                            ``balanced_acc``, ``acc`` or ``loss``
``workers``                 data-loader processes (0)
``max_steps_per_epoch``     cap on optimiser steps per epoch (none)
``amp``                     bf16 autocast on CUDA (true); CPU always runs fp32
``save_every_steps``        also write ``last`` every N optimiser steps (0 = once per epoch)
``stop_after_steps``        save ``last`` and stop after N optimiser steps (simulates a kill)
``resume``                  ``auto`` (default: resume from ``<run>/checkpoints/last.manifest.json``
                            when present), ``false``, or a run folder or manifest to resume from
``find_unused_parameters``  passed to DistributedDataParallel (false)
==========================  ====================================================================

Reproducibility: the data order of an epoch comes from ``(seed, epoch)`` and each item's crop
from ``(seed, epoch, index)``; the ``last`` checkpoint stores the optimiser, scheduler, RNG states,
the position inside the epoch and the epoch's running loss sums, so a run resumed after a kill ends
with the same weights and the same ``training.json`` as an uninterrupted one (on CPU; GPU kernels
may differ in the last bits).

The ``last`` checkpoint is one unit: ``last-<tag>.safetensors`` (weights) and ``last-<tag>.state.pt``
(optimiser, scheduler, RNG, progress) are written under a fresh tag, then ``last.manifest.json``,
naming both with their sha256, replaces the previous manifest in one atomic rename; only then are
the previous pair's files removed. A kill at any point leaves the manifest naming a complete pair,
and resume refuses a pair whose files do not match the manifest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from torch import nn
from tqdm import tqdm

from harness import distributed
from harness.checkpoints import save_checkpoint, sha256_file
from harness.data import PreprocessGuard, SampleDataset, batches, make_loader
from harness.errors import HarnessError
from harness.runs import autocast, seed_everything
from harness.suite import Sample

log = logging.getLogger(__name__)

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 32,
    "grad_accum": 1,
    "schedule": "cosine",
    "warmup_steps": 0,
    "min_lr_ratio": 0.0,
    "step_epochs": 1,
    "gamma": 0.1,
    "clip_grad": 0.0,
    "patience": None,
    "select": "auc",
    "workers": 0,
    "max_steps_per_epoch": None,
    "amp": True,
    "save_every_steps": 0,
    "stop_after_steps": None,
    "resume": "auto",
    "find_unused_parameters": False,
}
SELECT_METRICS = ("auc", "balanced_acc", "acc", "loss")
#: Types and ranges of the ``[train]`` settings (harness.config checks them before any work);
#: a key not listed here is typed by its default. The last six have no engine default: the
#: detectors' optimisers and ``train_head`` read them.
TRAIN_SETTINGS: dict[str, dict] = {
    "epochs": {"minimum": 1},
    "batch_size": {"minimum": 1},
    "grad_accum": {"minimum": 1},
    "schedule": {"enum": ["cosine", "step", "constant"]},
    "warmup_steps": {"minimum": 0},
    "min_lr_ratio": {"minimum": 0, "maximum": 1},
    "step_epochs": {"minimum": 1},
    "gamma": {"exclusiveMinimum": 0},
    "clip_grad": {"type": ["number", "null"], "minimum": 0},
    "patience": {"type": ["integer", "null"], "minimum": 0},
    "select": {"enum": list(SELECT_METRICS)},
    "workers": {"minimum": 0},
    "max_steps_per_epoch": {"type": ["integer", "null"], "minimum": 1},
    "save_every_steps": {"type": ["integer", "null"], "minimum": 0},
    "stop_after_steps": {"type": ["integer", "null"], "minimum": 1},
    "resume": {"type": ["string", "boolean"], "description": "auto, false, a run folder or its checkpoints/last.manifest.json"},
    "lr": {"type": "number", "minimum": 0},
    "weight_decay": {"type": "number", "minimum": 0},
    "betas": {"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
              "minItems": 2, "maxItems": 2, "description": "a list of two numbers in [0, 1)"},
    "min_lr": {"type": "number", "minimum": 0},
    "min_delta": {"type": "number", "minimum": 0},
    "feature_batch_size": {"type": "integer", "minimum": 1},
}


class TrainingStopped(Exception):
    """Raised after ``stop_after_steps``: ``last`` is written and a rerun resumes from it."""

    def __init__(self, step: int, last: Path):
        super().__init__(f"training stopped after {step} steps as asked; resume from {last}")
        self.step = step
        self.last = last


class _Step(nn.Module):
    """Routes DDP's forward to the detector's training step, so DDP sees every loss it must reduce."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.detector.training_step(batch)


def train_config(config: dict) -> dict[str, Any]:
    """The ``[train]`` section over :data:`TRAIN_DEFAULTS`, checked."""
    from harness.config import check_section

    cfg = {**TRAIN_DEFAULTS, **(config.get("train") or {})}
    check_section("train", cfg, TRAIN_DEFAULTS, TRAIN_SETTINGS)
    return cfg


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's sample order for one epoch: a permutation drawn from (seed, epoch).

    Every rank gets the same number of indices (the permutation's tail is dropped to a
    multiple of the world size) so that all ranks take the same number of steps.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    usable = (n // world_size) * world_size
    return perm[:usable][rank::world_size]


def make_schedule(optimizer: torch.optim.Optimizer, cfg: dict, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(1, int(cfg["epochs"]) * steps_per_epoch)
    warmup = int(cfg["warmup_steps"])
    floor = float(cfg["min_lr_ratio"])
    kind = cfg["schedule"]
    step_len = max(1, int(cfg["step_epochs"]) * steps_per_epoch)
    gamma = float(cfg["gamma"])

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        if kind == "step":
            return gamma ** (step // step_len)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -- RNG state (stored as tensors and plain types so that weights_only loading reads it) ---------
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# -- validation -----------------------------------------------------------------------------
def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) and k != "index" else v)
            for k, v in batch.items()}


@torch.no_grad()
def validation_logits(detector, samples: Sequence[Sample], *, device: torch.device, batch_size: int,
                      workers: int = 0, amp: bool = True) -> tuple[np.ndarray, np.ndarray, list]:
    """Labels and logits of ``samples`` (sharded over ranks, gathered on every rank) and skips."""
    dataset = SampleDataset(samples, detector, train=False)
    loader = make_loader(dataset, batch_size=batch_size, workers=workers,
                         sampler=distributed.ShardSampler(len(samples)))
    was_training = detector.training
    detector.eval()
    rows, skipped = [], []
    try:
        for batch in batches(loader):
            skipped += [(samples[i].path, reason) for i, reason in batch["skipped"]]
            if "x" not in batch:
                continue
            with autocast(device, amp):
                logits = detector(batch["x"].to(device)).float().cpu()
            rows += zip(batch["index"].tolist(), batch["label"].tolist(), logits.tolist())
    finally:
        detector.train(was_training)
    everything = distributed.all_gather((rows, skipped))
    rows = sorted(r for part, _ in everything for r in part)
    skipped = [s for _, part in everything for s in part]
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    logits = np.array([r[2] for r in rows], dtype=np.float64)
    return labels, logits, skipped


def validation_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float | None]:
    """AUC, accuracy (logit >= 0 is fake), balanced accuracy and BCE loss; None where undefined."""
    if labels.size == 0:
        return {"n": 0, "auc": None, "acc": None, "balanced_acc": None, "loss": None}
    pred = (logits >= 0).astype(int)
    both = len(set(labels.tolist())) == 2
    loss = float(np.mean(np.logaddexp(0.0, logits) - labels * logits))  # BCE with logits
    return {
        "n": int(labels.size),
        "auc": float(roc_auc_score(labels, logits)) if both else None,
        "acc": float(accuracy_score(labels, pred)),
        "balanced_acc": float(balanced_accuracy_score(labels, pred)) if both else None,
        "loss": loss,
    }


def _score(metrics: dict, select: str) -> float | None:
    """Higher is better; falls back to accuracy when the chosen metric is undefined."""
    value = metrics.get(select)
    if value is None:
        value = metrics.get("acc")
        return None if value is None else float(value)
    return -float(value) if select == "loss" else float(value)


# -- the loop -------------------------------------------------------------------------------
def _detector_meta(detector, train_samples: Sequence[Sample]) -> dict[str, Any]:
    return {
        "detector": getattr(detector, "name", type(detector).__name__),
        "train_generators": sorted({s.generator for s in train_samples}),
        "backbone": getattr(detector, "provenance", None),
    }


LAST_MANIFEST = "last.manifest.json"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _write_manifest(path: Path, manifest: dict) -> None:
    """The commit point of a ``last`` checkpoint: one atomic rename over the previous manifest."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _remove_stale(ckpt_dir: Path, keep: str) -> None:
    """Files of earlier ``last`` pairs and of saves killed half-way; the manifest no longer names them."""
    for path in ckpt_dir.glob("last-*"):
        if not path.name.startswith(keep + "."):
            path.unlink(missing_ok=True)
    for path in ckpt_dir.glob(f".{LAST_MANIFEST}.*.tmp"):
        path.unlink(missing_ok=True)


def publish_last(ckpt_dir: Path, weights: dict[str, torch.Tensor], config: dict, meta: dict,
                 state: dict[str, Any]) -> Path:
    """Write the weights and the training state as one unit; returns the manifest naming both."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tag = f"last-{int(meta['step']):08d}-{uuid.uuid4().hex[:8]}"
    weights_path = save_checkpoint(ckpt_dir / f"{tag}.safetensors", weights, config, {**meta, "tag": tag})
    state_path = ckpt_dir / f"{tag}.state.pt"
    tmp = ckpt_dir / f"{tag}.state.tmp"
    torch.save({**state, "tag": tag}, tmp)
    tmp.replace(state_path)
    for path in (weights_path, state_path):
        _fsync(path)
    manifest = {"schema": 1, "tag": tag, "epoch": meta["epoch"], "step": meta["step"],
                "weights": {"file": weights_path.name, "sha256": sha256_file(weights_path)},
                "state": {"file": state_path.name, "sha256": sha256_file(state_path)}}
    _write_manifest(ckpt_dir / LAST_MANIFEST, manifest)
    _remove_stale(ckpt_dir, keep=tag)
    return ckpt_dir / LAST_MANIFEST


def _find_resume(run_dir: Path, resume) -> Path | None:
    """The manifest of the ``last`` checkpoint to resume from, or None to start afresh."""
    if resume in (False, "false", "no", None, ""):
        return None
    ckpt_dir = run_dir / "checkpoints"
    if resume in (True, "auto", "true"):
        manifest = ckpt_dir / LAST_MANIFEST
        if manifest.is_file():
            return manifest
        if (ckpt_dir / "last.safetensors").is_file() or (ckpt_dir / "last_state.pt").is_file():
            raise HarnessError(f"cannot resume {run_dir}: its last checkpoint has no {LAST_MANIFEST} (an older "
                               "harness, or a kill mid-save), so its weights and state cannot be checked to belong "
                               "together; pass --set train.resume=false to train it again from the start")
        return None
    path = Path(resume)
    for candidate in (path, path / LAST_MANIFEST, path / "checkpoints" / LAST_MANIFEST):
        if candidate.is_file() and candidate.name == LAST_MANIFEST:
            return candidate
    raise HarnessError(f"train.resume: {path} is not a run folder with checkpoints/{LAST_MANIFEST} "
                       "nor such a manifest")


def load_last(manifest_path: Path) -> tuple[Path, dict[str, Any]]:
    """The weights file and the training state a manifest names, checked to be the pair it wrote."""
    def refuse(why: str) -> HarnessError:
        return HarnessError(f"cannot resume from {manifest_path}: {why}; pass --set train.resume=false to "
                            "train again from the start")

    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        tag = manifest["tag"]
        files = {part: (manifest_path.parent / manifest[part]["file"], manifest[part]["sha256"])
                 for part in ("weights", "state")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise refuse(f"the manifest is unreadable ({exc})") from None
    for part, (path, digest) in files.items():
        if path.parent != manifest_path.parent or not path.is_file():
            raise refuse(f"its {part} file {path.name} is missing")
        if sha256_file(path) != digest:
            raise refuse(f"its {part} file {path.name} is not the one the manifest names (sha256 differs)")
    try:
        state = torch.load(files["state"][0], map_location="cpu", weights_only=True)
    except Exception as exc:  # a checked file that still fails to load: say what torch said
        raise refuse(f"the state file cannot be read ({exc})") from None
    if not isinstance(state, dict) or state.get("tag") != tag:
        raise refuse("the state file belongs to another checkpoint")
    return files["weights"][0], state


def train(
    detector,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    *,
    config: dict,
    run_dir: str | Path,
    device: torch.device | str,
) -> Path:
    """Train ``detector`` in place; returns the path of the best checkpoint (safetensors + JSON).

    Writes ``<run_dir>/checkpoints/best.safetensors`` (+ ``.json``), the ``last`` checkpoint
    (weights + optimiser, scheduler, RNG, position, named by ``last.manifest.json``) and ``<run_dir>/training.json`` (per-epoch history,
    skipped files, what the detector's step reported). Under torchrun each process trains on its
    shard and gradients are averaged (DistributedDataParallel); rank 0 writes the files.
    """
    if not getattr(detector, "trainable", True):
        raise HarnessError(f"detector '{detector.name}' is not trainable; pass --weights")
    train_samples, val_samples = list(train_samples), list(val_samples)
    if not train_samples:
        raise HarnessError("no training samples: check the suite's train split and the protocol's train generators")
    from harness.feature_cache import train_head, uses_feature_cache

    if uses_feature_cache(detector):  # frozen backbone (UnivFD): train the head on cached features
        return train_head(detector, train_samples, val_samples, config=config, run_dir=run_dir, device=device)
    cfg = train_config(config)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    device = torch.device(device)
    info = distributed.init_from_env(device)
    device = distributed.rank_device(device)
    rank, world = distributed.get_rank(), distributed.get_world_size()
    seed = int(config.get("run", {}).get("seed", 0))
    seed_everything(seed + rank)  # ranks draw different augmentations

    batch_size, accum = int(cfg["batch_size"]), int(cfg["grad_accum"])
    micro_per_epoch = math.ceil(len(train_samples) // world / batch_size)
    if micro_per_epoch == 0:
        raise HarnessError(f"{len(train_samples)} training samples are too few for {world} processes")
    steps_per_epoch = math.ceil(micro_per_epoch / accum)
    if cfg["max_steps_per_epoch"]:
        steps_per_epoch = min(steps_per_epoch, int(cfg["max_steps_per_epoch"]))

    detector.place(device)
    detector.train()
    params = list(detector.parameters_to_train())
    if not params:
        raise HarnessError(f"detector '{detector.name}' has no trainable parameters")
    optimizer = detector.configure_optimizer(params, cfg)
    scheduler = make_schedule(optimizer, cfg, steps_per_epoch)
    stepper: nn.Module = _Step(detector)
    if info.distributed:
        stepper = nn.parallel.DistributedDataParallel(
            stepper, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(cfg["find_unused_parameters"]),
        )
    if (config.get("run") or {}).get("compile"):
        stepper.compile()  # the whole training step, loss included; the detector itself stays eager

    state = {"epoch": 0, "micro": 0, "step": 0, "best": None, "bad_epochs": 0, "stopped_early": False,
             "history": [], "skipped": []}
    resume_from = _find_resume(run_dir, cfg["resume"])
    if resume_from is not None:
        state = _resume(detector, optimizer, scheduler, resume_from, device, rank)
        log.info("resumed from %s at epoch %d, step %d", resume_from, state["epoch"] + 1, state["step"])

    dataset = SampleDataset(train_samples, detector, train=True, with_pairs=bool(detector.needs_pairs),
                            with_reconstructions=bool(detector.needs_reconstructions), seed=seed)
    meta = _detector_meta(detector, train_samples)
    clip = float(cfg["clip_grad"] or 0.0)
    stop_after = int(cfg["stop_after_steps"]) if cfg["stop_after_steps"] else None
    save_every = int(cfg["save_every_steps"] or 0)

    def save_last(epoch: int, micro: int, sums: dict, counts: dict) -> Path:
        # sums/counts: the epoch's running losses, so a resumed epoch averages over all its steps.
        state.update(epoch=epoch, micro=micro, epoch_losses=distributed.all_gather((sums, counts)))
        rng = distributed.all_gather(_rng_state())  # every rank's, so each resumes its own stream
        if distributed.is_main_process():
            publish_last(ckpt_dir, detector.checkpoint_state(), detector.config,
                         {**meta, "epoch": epoch, "step": state["step"], "kind": "last"},
                         {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "rng": rng, "progress": dict(state)})
        distributed.barrier()
        return ckpt_dir / LAST_MANIFEST

    best_path = ckpt_dir / "best.safetensors"
    epochs = int(cfg["epochs"])
    # A run that already stopped early stays stopped when it is resumed.
    first_epoch = epochs if state["stopped_early"] else state["epoch"]
    for epoch in range(first_epoch, epochs):
        dataset.set_epoch(epoch)
        order = epoch_order(len(train_samples), seed, epoch, rank, world)
        start_micro = state["micro"] if epoch == state["epoch"] else 0
        # A private generator keeps the loader from drawing on the global RNG (which resume restores).
        loader = make_loader(dataset, batch_size=batch_size, workers=int(cfg["workers"]),
                             sampler=order[start_micro * batch_size:],
                             generator=torch.Generator().manual_seed(seed + epoch),
                             pin_memory=device.type == "cuda")
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        losses = state.get("epoch_losses") or []
        if start_micro and losses:  # resumed mid-epoch: carry on the sums of the steps before the kill
            own = losses[rank] if rank < len(losses) else losses[0]
            sums, counts = dict(own[0]), dict(own[1])
        steps_done = start_micro // accum
        micro = start_micro
        optimizer.zero_grad(set_to_none=True)
        bar = tqdm(batches(loader), desc=f"train epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not distributed.is_main_process(), initial=start_micro, total=micro_per_epoch)
        guard = PreprocessGuard()
        for batch in bar:
            guard.update(batch)
            state["skipped"] += [(dataset.samples[i].path, reason) for i, reason in batch["skipped"]]
            has_data = "x" in batch
            if info.distributed:  # every rank must take part in each reduction
                has_data = bool(distributed.all_reduce_mean([float(has_data)])[0] == 1.0)
            micro += 1
            last_micro = micro == micro_per_epoch
            if has_data:
                batch = _to_device(batch, device)
                sync = micro % accum == 0 or last_micro
                ctx = stepper.no_sync() if (info.distributed and not sync) else contextlib.nullcontext()
                with ctx, autocast(device, bool(cfg["amp"])):
                    out = stepper(batch)
                    loss = out["loss"]
                    if not torch.isfinite(loss):
                        raise HarnessError(f"training loss is {loss.item()} at epoch {epoch + 1}, step {state['step']}: "
                                           "lower train.lr or check the data")
                with ctx:
                    (loss.float() / accum).backward()
                for key, value in out.items():
                    value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                    sums[key] = sums.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
            if micro % accum == 0 or last_micro:
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                steps_done += 1
                if distributed.is_main_process() and "loss" in sums:
                    bar.set_postfix(loss=f"{sums['loss'] / counts['loss']:.4f}")
                if save_every and state["step"] % save_every == 0:
                    save_last(epoch, micro, sums, counts)
                if stop_after and state["step"] >= stop_after:
                    raise TrainingStopped(state["step"], save_last(epoch, micro, sums, counts))
                if steps_done >= steps_per_epoch:
                    break
        bar.close()

        labels, logits, val_skipped = validation_logits(
            detector, val_samples, device=device, batch_size=batch_size, workers=int(cfg["workers"]), amp=bool(cfg["amp"]))
        metrics = validation_metrics(labels, logits)
        # Counts (keys n_*) are summed over the epoch, losses averaged.
        reported = {k: (sums[k] if k.startswith("n_") else sums[k] / counts[k]) for k in sums}
        if info.distributed:
            keys = sorted(reported)
            means = distributed.all_reduce_mean([reported[k] for k in keys]).tolist()
            reported = {k: (m * world if k.startswith("n_") else m) for k, m in zip(keys, means)}
        entry = {"epoch": epoch + 1, "step": state["step"], "lr": scheduler.get_last_lr()[0],
                 "train": reported, "val": metrics}
        state["history"].append(entry)
        if val_skipped and epoch == state["epoch"]:
            state["skipped"] += [tuple(s) for s in val_skipped]
        score = _score(metrics, cfg["select"])
        improved = state["best"] is None or (score is not None and score > state["best"]) or not val_samples
        if improved:
            state["best"], state["bad_epochs"] = score, 0
            if distributed.is_main_process():
                save_checkpoint(best_path, detector.checkpoint_state(), detector.config,
                                {**meta, "epoch": epoch + 1, "step": state["step"], "val": metrics, "kind": "best"})
        else:
            state["bad_epochs"] += 1
        log.info("epoch %d/%d: train %s; val %s%s", epoch + 1, epochs,
                 {k: round(v, 4) for k, v in reported.items()}, metrics, " (best)" if improved else "")
        patience = cfg["patience"]
        state["stopped_early"] = patience is not None and state["bad_epochs"] >= int(patience)
        save_last(epoch + 1, 0, {}, {})
        if state["stopped_early"]:
            log.info("early stop: no improvement of val %s for %d epochs", cfg["select"], state["bad_epochs"])
            break

    if distributed.is_main_process():
        summary = {**meta, "epochs_run": len(state["history"]), "steps": state["step"],
                   "stopped_early": state["stopped_early"], "best_checkpoint": str(best_path),
                   "history": state["history"],
                   "skipped": [{"path": p, "reason": r} for p, r in dict.fromkeys(state["skipped"])]}
        (run_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
        if state["skipped"]:
            log.warning("%d training/validation files could not be decoded and were skipped (training.json)",
                        len(state["skipped"]))
    distributed.barrier()
    return best_path


def _resume(detector, optimizer, scheduler, manifest: Path, device: torch.device, rank: int) -> dict[str, Any]:
    weights, saved = load_last(manifest)
    detector.load_weights(weights)
    detector.to(device)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng = saved["rng"]
    _set_rng_state(rng[rank] if rank < len(rng) else rng[0])
    progress = dict(saved["progress"])
    progress["skipped"] = [tuple(s) for s in progress.get("skipped", [])]
    return progress
