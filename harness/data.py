"""From samples to batches: decoding, the detector's input policy, skipped-file reporting.

A file that cannot be decoded, or that a transform or the detector's preprocessing fails on
(a 3000 x 3 strip through a JPEG augmentation, say), never crashes a worker: its item carries
the reason, the collate function drops it from the batch and hands it on in
``batch["skipped"]`` so that the loop can count and list it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from harness.errors import HarnessError
from harness.images import ImageDecodeError, load_image
from harness.suite import Sample

log = logging.getLogger(__name__)

#: How a skip caused by preprocessing (not by the file) starts: such skips are not cached,
#: since a fixed bug must not keep the image out.
PREPROCESS_FAILED = "preprocessing failed"

ImageTransform = Callable[[Image.Image], Image.Image]


class SampleDataset(Dataset):
    """Samples -> detector inputs.

    ``transform`` (optional) is applied to the decoded image before the input policy, the
    same way to real and fake images (corruption analyses use it). With ``with_pairs`` a
    fake's paired real image is decoded too and gets the same geometry (same random crop);
    with ``with_reconstructions`` so is a real's pair, its reconstruction (a fake: DRCT-2M's
    ``DR/`` folders). ``batch["pair"]`` then means the one or the other by ``batch["label"]``.
    In training, each item's randomness comes from ``seed``, ``epoch`` and its index, so a
    resumed run draws the same crops.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        detector,
        *,
        train: bool = False,
        transform: ImageTransform | None = None,
        with_pairs: bool = False,
        with_reconstructions: bool = False,
        seed: int = 0,
    ):
        self.samples = list(samples)
        self.detector = detector
        self.train = train
        self.transform = transform
        self.with_pairs = with_pairs
        self.with_reconstructions = with_reconstructions
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self, index: int) -> torch.Generator | None:
        if not self.train:
            return None
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        try:
            image = load_image(sample.path)
            images = [image]
            wanted = self.with_pairs if sample.label == 1 else self.with_reconstructions
            has_pair = bool(wanted and sample.pair)
            if has_pair:
                pair = load_image(sample.pair)
                if pair.size != image.size:
                    pair = pair.resize(image.size, Image.BICUBIC)
                images.append(pair)
            if self.transform is not None:
                images = [self.transform(img) for img in images]
            tensors = self.detector.preprocess(images, train=self.train, generator=self._generator(index))
        except ImageDecodeError as exc:
            return {"index": index, "error": exc.reason}
        except Exception as exc:  # noqa: BLE001 - one image's failure is reported, not fatal to the run
            log.warning("preprocessing %s failed", sample.path, exc_info=True)
            return {"index": index, "error": f"{PREPROCESS_FAILED}: {type(exc).__name__}: {exc}"}
        item = {"index": index, "x": tensors[0], "label": sample.label, "error": None}
        if self.with_pairs or self.with_reconstructions:
            item["pair"] = tensors[1] if has_pair else torch.zeros_like(tensors[0])
            item["has_pair"] = has_pair
        return item


class PreprocessGuard:
    """Stops a loop when preprocessing fails on most images: that is a bug in the detector's
    preprocessing or in a transform, to be fixed, not bad input to skip image by image."""

    def __init__(self, min_images: int = 16, max_share: float = 0.5):
        self.min_images, self.max_share = min_images, max_share
        self.seen, self.failed, self.first = 0, 0, ""

    def update(self, batch: dict[str, Any]) -> None:
        self.seen += len(batch["index"]) + len(batch["skipped"])
        for _, reason in batch["skipped"]:
            if reason.startswith(PREPROCESS_FAILED):
                self.failed += 1
                self.first = self.first or reason
        if self.seen >= self.min_images and self.failed > self.max_share * self.seen:
            raise HarnessError(f"{self.first} (and on {self.failed - 1} more of {self.seen} images so far): "
                               "preprocessing fails on most images, which is a bug, not bad files")


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the decodable items; pass the others on as ``skipped`` (index, reason)."""
    ok = [it for it in items if it["error"] is None]
    batch: dict[str, Any] = {"skipped": [(it["index"], it["error"]) for it in items if it["error"] is not None]}
    batch["index"] = torch.tensor([it["index"] for it in ok], dtype=torch.long)
    if ok:
        batch["x"] = torch.stack([it["x"] for it in ok])
        batch["label"] = torch.tensor([it["label"] for it in ok], dtype=torch.long)
        if "pair" in ok[0]:
            batch["pair"] = torch.stack([it["pair"] for it in ok])
            batch["has_pair"] = torch.tensor([it["has_pair"] for it in ok], dtype=torch.bool)
    return batch


def batches(loader: DataLoader) -> Iterator[dict[str, Any]]:
    """The batches of ``loader``. Without worker processes the batches are decoded and
    preprocessed in this process: on one intra-op thread, so that the small tensor ops of a
    detector's own preprocessing do not wake (and contend with) the thread pool of the forward.
    Worker processes run one thread each already."""
    if loader.num_workers > 0:
        yield from loader
        return
    it = iter(loader)
    while True:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            batch = next(it)
        except StopIteration:
            return
        finally:
            torch.set_num_threads(threads)
        yield batch


def make_loader(dataset: Dataset, *, batch_size: int, workers: int = 0, shuffle: bool = False,
                sampler=None, pin_memory: bool = False, generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=False,
        generator=generator,
    )
