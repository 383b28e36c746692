"""UnivFD: train the head and evaluate from the frozen-feature cache vs through the backbone.

Both sides run the same work: ``--epochs`` epochs of head training on ``--images`` real + as
many fake images (a quarter of that again for validation) and one scoring pass over as many
test images.

- *through the backbone*: ``cache_features=false``; the training engine decodes, augments and
  runs CLIP on every image of every epoch, and scoring runs CLIP once more (no score cache);
- *from the cache*: the features of every image already stored (computing them once is timed
  separately, "fill"); training the head and scoring read them.

The backbone is randomly initialised (``pretrained=none``: no hub here); its cost does not
depend on its weights. Prints the times and the ratio. Example::

    python benchmarks/speed/bench_feature_cache.py --backbone open_clip:ViT-B-32 --images 128 --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from tabulate import tabulate

from harness.feature_cache import cached_features, score_cached, train_head
from harness.scoring import score_samples
from harness.suite import Sample
from harness.training import train
from harness.plugins.detectors.univfd import UnivFD


def write_images(folder: Path, n: int, size: int, seed: int, split: str) -> list[Sample]:
    """``n`` textured real images and ``n`` smoothed fakes of them (PNG)."""
    rng = np.random.default_rng(seed)
    (folder / "real").mkdir(parents=True, exist_ok=True)
    (folder / "fake").mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        coarse = rng.uniform(0, 255, (size // 16 + 1, size // 16 + 1, 3))
        smooth = np.kron(coarse, np.ones((16, 16, 1)))[:size, :size]
        real = Image.fromarray(np.clip(smooth + rng.normal(0, 18, smooth.shape), 0, 255).astype(np.uint8))
        rp, fp = folder / "real" / f"{i:05d}.png", folder / "fake" / f"{i:05d}.png"
        real.save(rp)
        real.filter(ImageFilter.GaussianBlur(1.0)).save(fp)
        samples += [Sample(str(rp), 0, "blur", split), Sample(str(fp), 1, "blur", split, pair=str(rp))]
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="open_clip:ViT-B-32", help="harness backbone spec (default %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="image and crop size (default %(default)s)")
    parser.add_argument("--images", type=int, default=128, help="real training images; as many fakes (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="head-training epochs on both sides (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="bench-feature-cache-") as tmp:
        root = Path(tmp)
        n = args.images
        train_s = write_images(root / "train", n, args.size, 0, "train")
        val_s = write_images(root / "val", max(2, n // 4), args.size, 1, "val")
        test_s = write_images(root / "test", n, args.size, 2, "test")
        config = {
            "backbone": args.backbone, "pretrained": "none", "crop_size": args.size,
            "resize_to": round(args.size * 256 / 224), "feature_cache_dir": str(root / "features"),
        }
        # Same epochs on both sides: no early stop, no learning-rate drops.
        run_cfg = {"run": {"seed": 0}, "train": {**UnivFD.training, "epochs": args.epochs, "batch_size": args.batch_size,
                                                 "workers": args.workers, "patience": None, "schedule": "constant",
                                                 "select": "acc"}}
        device = torch.device(args.device)

        slow = UnivFD({**config, "cache_features": False})
        t0 = time.perf_counter()
        train(slow, train_s, val_s, config=run_cfg, run_dir=root / "slow", device=device)
        t1 = time.perf_counter()
        score_samples(slow, test_s, device=device, batch_size=args.batch_size, workers=args.workers, cache_dir=None)
        t2 = time.perf_counter()
        backbone_train, backbone_eval = t1 - t0, t2 - t1

        fast = UnivFD(config)
        fast.backbone.load_state_dict(slow.backbone.state_dict())
        t3 = time.perf_counter()
        for samples in (train_s, val_s, test_s):
            cached_features(fast, samples, device=device, batch_size=args.batch_size, workers=args.workers)
        t4 = time.perf_counter()
        train_head(fast, train_s, val_s, config=run_cfg, run_dir=root / "fast", device=device)
        t5 = time.perf_counter()
        df = score_cached(fast, test_s, device=device, batch_size=args.batch_size, workers=args.workers)
        t6 = time.perf_counter()
        assert df.attrs["scored"] == 0, "the cached scoring pass ran the backbone"
        fill, cache_train, cache_eval = t4 - t3, t5 - t4, t6 - t5

    through = backbone_train + backbone_eval
    cached = cache_train + cache_eval
    rows = [
        ["through the backbone", backbone_train, backbone_eval, through],
        ["from the cache", cache_train, cache_eval, cached],
        ["cache fill (once)", None, None, fill],
    ]
    print(f"backbone {args.backbone} at {args.size}px, {2 * n} train / {2 * max(2, n // 4)} val / {2 * n} test images, "
          f"{args.epochs} epochs, device {args.device}, {torch.get_num_threads()} threads")
    print(tabulate(rows, headers=["", "train (s)", "evaluate (s)", "total (s)"], floatfmt=".3f"))
    print(f"speed-up train + evaluate, warm cache: {through / cached:.1f}x")
    print(f"speed-up including the one-time cache fill: {through / (cached + fill):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
