"""CPU precision modes for a CLIP image tower (a benchmark, not a test).

Why ``eval.precision = "bf16"`` on CPU casts a copy of the weights to bf16 instead of using
autocast: times one open_clip visual tower (random weights, nothing downloaded) in fp32,
under CPU bf16 autocast, and with bf16 weights and inputs.

    python benchmarks/speed/bench_precision.py [--model ViT-B-32] [--batch 8] [--iters 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import open_clip
import torch


def timed(fn, iters: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    visual = open_clip.create_model(args.model, pretrained=None).visual.eval()
    size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
    x = torch.rand(args.batch, 3, size, size)
    bf16 = copy.deepcopy(visual).to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    with torch.no_grad():
        ref = visual(x)
        t_fp32 = timed(lambda: visual(x), args.iters)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t_autocast = timed(lambda: visual(x), args.iters)
        t_weights = timed(lambda: bf16(xb), args.iters)
        err = (bf16(xb).float() - ref).abs().max().item() / ref.abs().max().item()
    print(f"{args.model} visual, batch {args.batch}, {torch.get_num_threads()} threads")
    for name, t in (("fp32", t_fp32), ("bf16 autocast", t_autocast), ("bf16 weights", t_weights)):
        print(f"  {name:14s} {t:7.3f} s/batch  {args.batch / t:7.1f} img/s  ({t_fp32 / t:.2f}x fp32)")
    print(f"  bf16 weights: max |feature error| / max |feature| = {err:.4f}")


if __name__ == "__main__":
    main()
