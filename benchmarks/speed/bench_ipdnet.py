"""IPD-Net: cost of the inter-patch dependency matrix vs truncation layer and input size.

The dependency matrix has (HW)^2 entries for an H x W feature map, so its time and memory
should grow with the square of the number of cells (n^4 for an n-times larger side), while
the truncated ResNet in front of it grows with HW. For each truncation layer and input size
this script times, on random feature maps of the right shape:

- ``1x1 convs``: the two 1x1 convolutions to C/2 channels (linear in HW, shared by both forms);
- ``matrix``: the paper's (HW)x(HW) product of their outputs and the average pooling;
- ``factored``: the same pooled numbers computed as (mean_i q_i) . k_j, never forming the matrix;

and optionally (``--full``) the whole model's forward. Memory is the size of the float32
dependency tensor (computed) and, on CUDA, the measured peak allocation of the head. It
prints one table and the fitted growth exponent k of time ~ (HW)^k per layer and mode.
Randomly initialised weights: cost does not depend on them. Example::

    python benchmarks/speed/bench_ipdnet.py --sizes 128 256 384 512 --layers 2 3 4 --batch 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from tabulate import tabulate

from harness.plugins.detectors.ipdnet import STAGE_CHANNELS, DependencyHead, IPDNet, feature_side


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def head_peak_bytes(head: DependencyHead, feat: torch.Tensor) -> int | None:
    if feat.device.type != "cuda":
        return None
    torch.cuda.synchronize(feat.device)
    torch.cuda.reset_peak_memory_stats(feat.device)
    base = torch.cuda.memory_allocated(feat.device)
    head.pooled(feat)
    torch.cuda.synchronize(feat.device)
    return torch.cuda.max_memory_allocated(feat.device) - base


def growth_exponent(cells: list[int], seconds: list[float]) -> float:
    """Slope of log(time) against log(HW): 2 for quadratic, 1 for linear cost."""
    return float(np.polyfit(np.log(cells), np.log(seconds), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 384, 512], help="input sides (px)")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 3, 4], choices=[2, 3, 4])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--full", action="store_true", help="also time the whole model's forward")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    rows, fits = [], []
    for layer in args.layers:
        channels = STAGE_CHANNELS[layer]
        series: dict[str, list[float]] = {"matrix": [], "factored": []}
        cells_seen = []
        for size in args.sizes:
            side = feature_side(size, layer)
            cells = side * side
            feat = torch.randn(args.batch, channels, side, side, device=device)
            row = {"layer": layer, "input": size, "feature": f"{channels}x{side}x{side}", "HW": cells,
                   "matrix MiB": args.batch * cells * cells * 4 / 2**20}
            with torch.no_grad():
                head = DependencyHead(channels, cells, 1, 1, "matrix").to(device).eval()
                q = head.theta(feat).flatten(2)
                k = head.phi(feat).flatten(2)
                # The 1x1 convolutions are shared by both forms and linear in HW: timed apart.
                row["1x1 convs ms"] = timed(lambda: (head.theta(feat), head.phi(feat)), device, args.repeats) * 1e3
                parts = {
                    "matrix": lambda: torch.bmm(q.transpose(1, 2), k).transpose(1, 2).mean(-1),
                    "factored": lambda: torch.einsum("bc,bcj->bj", q.mean(-1), k),
                }
                for mode, fn in parts.items():
                    seconds = timed(fn, device, args.repeats)
                    series[mode].append(seconds)
                    row[f"{mode} ms"] = seconds * 1e3
                    head.mode = mode
                    peak = head_peak_bytes(head, feat)
                    if peak is not None:
                        row[f"{mode} head peak MiB"] = peak / 2**20
                if args.full:
                    model = IPDNet({"layer": layer, "size": size, "crop": size}).to(device).eval()
                    x = torch.rand(args.batch, 3, size, size, device=device)
                    full = timed(lambda: model(x), device, args.repeats)
                    row["full model ms"] = full * 1e3
                    row["matrix share"] = (row["matrix ms"] + row["1x1 convs ms"]) / row["full model ms"]
                    del model
            cells_seen.append(cells)
            rows.append(row)
        if len(cells_seen) > 1:
            for mode, seconds in series.items():
                k = growth_exponent(cells_seen, seconds)
                step = seconds[-1] / seconds[-2]
                cell_ratio = cells_seen[-1] / cells_seen[-2]
                fits.append({"layer": layer, "head": mode, "k in time ~ (HW)^k": k,
                             "last HW ratio": cell_ratio, "last time ratio": step})

    print(f"device {device}, batch {args.batch}, median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(tabulate(rows, headers="keys", floatfmt=".3g"))
    if fits:
        print("\nMeasured growth (a fit over the sizes; 2 = quadratic in the number of cells):")
        print(tabulate(fits, headers="keys", floatfmt=".3g"))


if __name__ == "__main__":
    main()
