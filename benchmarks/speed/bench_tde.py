"""Speed of batched TDE against the naive reference (one forward per masked image, batch 1).

Same model, same images, same grid; the maps must agree within 1e-4. Prints the time of
each, the speed-up and the forwards per second, and exits 1 when the speed-up is below the
target (4x) or the maps differ. Not a test: timings depend on the machine, and the batch-1
reference is very sensitive to the thread count and to other load (give --threads; compare
runs on a quiet machine).

    python benchmarks/speed/bench_tde.py                      # PPL, mini profile (tiny ViT)
    python benchmarks/speed/bench_tde.py --detector univfd --profile none --images 2 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from harness.config import merge
from harness.patchgrid import resolve_grid
from harness.plugins import get_detector
from plugins.analyses.tde import tde_batched, tde_naive, variant_batch_size


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
    parser.add_argument("--target", type=float, default=4.0)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cls = get_detector(args.detector)
    profile = {} if args.profile == "none" else cls.profiles.get(args.profile, {}).get("detector", {})
    detector = cls(merge(cls.defaults, profile)).to(args.device).eval()
    m = resolve_grid(detector, args.grid)
    size = detector.input_policy(False).size
    x = torch.rand(args.images, 3, size, size, generator=torch.Generator().manual_seed(0)).to(args.device)
    if args.detector == "patchcraft":  # two views per image
        x = torch.stack([x, x.flip(-1)], dim=1)
    forwards = args.images * (m * m + 1)
    batch_size = variant_batch_size(args.batch_size, torch.device(args.device))

    with torch.no_grad():
        detector(x[:1])  # warm-up: lazy initialisation, allocator
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    _, naive = tde_naive(detector, x, m)
    sync()
    naive_s = time.perf_counter() - start
    start = time.perf_counter()
    _, batched = tde_batched(detector, x, m, batch_size=batch_size)
    sync()
    batched_s = time.perf_counter() - start

    diff = float((naive - batched).abs().max())
    ratio = naive_s / batched_s
    print(f"detector {args.detector} (profile {args.profile}), input {tuple(x.shape[1:])}, grid {m}x{m}, "
          f"{args.images} images = {forwards} forwards, device {args.device}, threads {torch.get_num_threads()}")
    print(f"naive   (batch 1):            {naive_s:8.3f} s  {forwards / naive_s:9.1f} forwards/s")
    print(f"batched (batch {batch_size:4d}):         {batched_s:8.3f} s  {forwards / batched_s:9.1f} forwards/s")
    print(f"speed-up {ratio:.1f}x (target {args.target:g}x); max |difference| {diff:.2e} (limit 1e-4)")
    ok = ratio >= args.target and diff <= 1e-4
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
