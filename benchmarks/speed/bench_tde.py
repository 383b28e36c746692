"""Speed of batched TDE against the naive reference (one forward per masked image, batch 1).

Same model (placed as the harness places it: NHWC for convolutional detectors), same
images, same grid; the maps must agree within 1e-4. Each side is timed ``--repeats`` times
and its best time kept. Prints the times, the speed-up and the forwards per second, and
exits 1 when the speed-up is below the target (4x) or the maps differ. Not a test: timings
depend on the machine, and the batch-1 reference is very sensitive to the thread count and
to other load (give --threads; compare runs on a quiet machine).

    python benchmarks/speed/bench_tde.py                      # PPL, mini profile (tiny ViT)
    python benchmarks/speed/bench_tde.py --detector univfd --profile none --images 2 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from PIL import Image

from harness.config import merge
from harness.patchgrid import resolve_grid
from harness.registry import get_detector
from harness.plugins.analyses.tde import tde_batched, tde_naive, variant_batch_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="ppl", help="registered detector (default: ppl)")
    parser.add_argument("--profile", default="mini", help="detector profile, or 'none' (default: mini)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--grid", default="auto", help="m, or 'auto' for the detector's token grid")
    parser.add_argument("--batch-size", default="auto",
                        help="masked variants per batched forward (auto: 256 on CUDA, 32 on CPU, as the analysis)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per side; the best is kept (default: 3)")
    parser.add_argument("--target", type=float, default=4.0)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cls = get_detector(args.detector)
    profile = {} if args.profile == "none" else cls.profiles.get(args.profile, {}).get("detector", {})
    detector = cls(merge(cls.defaults, profile)).place(args.device).eval()
    m = resolve_grid(detector, args.grid)
    size = detector.input_policy(False).size
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(args.images)]
    x = torch.stack(detector.preprocess(images)).to(args.device)  # the detector's own input shape
    forwards = args.images * (m * m + 1)
    batch_size = variant_batch_size(args.batch_size, torch.device(args.device))

    with torch.no_grad():
        detector(x[:1])  # warm-up: lazy initialisation, allocator
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    sync()

    def best_time(compute):
        times = []
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            _, maps = compute()
            sync()
            times.append(time.perf_counter() - start)
        return min(times), maps

    naive_s, naive = best_time(lambda: tde_naive(detector, x, m))
    batched_s, batched = best_time(lambda: tde_batched(detector, x, m, batch_size=batch_size))
    # The model alone, batch 1 against full batches: the most any batching can gain here.
    full = x[:1].expand(batch_size, *x.shape[1:]).contiguous()
    with torch.no_grad():
        single_s, _ = best_time(lambda: (None, [detector(x[:1]) for _ in range(batch_size)]))
        full_s, _ = best_time(lambda: (None, detector(full)))

    diff = float((naive - batched).abs().max())
    ratio = naive_s / batched_s
    print(f"detector {args.detector} (profile {args.profile}), input {tuple(x.shape[1:])}, grid {m}x{m}, "
          f"{args.images} images = {forwards} forwards, device {args.device}, threads {torch.get_num_threads()}, "
          f"best of {max(1, args.repeats)}")
    print(f"naive   (batch 1):            {naive_s:8.3f} s  {forwards / naive_s:9.1f} forwards/s")
    print(f"batched (batch {batch_size:4d}):         {batched_s:8.3f} s  {forwards / batched_s:9.1f} forwards/s")
    print(f"model alone: batch 1 {batch_size / single_s:.1f} forwards/s, batch {batch_size} "
          f"{batch_size / full_s:.1f} forwards/s: batching alone can gain {single_s / full_s:.1f}x")
    print(f"speed-up {ratio:.1f}x (target {args.target:g}x); max |difference| {diff:.2e} (limit 1e-4)")
    ok = ratio >= args.target and diff <= 1e-4
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
