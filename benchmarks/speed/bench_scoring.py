"""Scoring speed of the harness on the mini suite (a benchmark, not a test).

Prints three ratios (targets of issue 4):

1. harness scoring throughput / bare model forward over the same images already decoded
   and preprocessed in memory (target >= 0.85: the data pipeline is not the bottleneck);
2. first run / second run of the same evaluation (target >= 50: the second run reads
   the stored scores and never calls the model);
3. peak memory of a scoring process at 1/4, 1/2 and all of the test images (target: flat).

    python benchmarks/speed/bench_scoring.py [--preset tiny|default] [--detector npr] [--workers 1]

The model is a built-in detector at its ``mini`` profile (default ``npr``), randomly
initialised: speed does not depend on the weights. Results go to stdout; the numbers
measured on the reference machine are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

from harness.images import load_image
from harness.manifest import load_samples
from harness.registry import get_detector, get_suite
from harness.runs import autocast, select_device
from harness.scoring import effective_precision, score_samples


def build_detector(name: str):
    cls = get_detector(name)
    torch.manual_seed(0)
    return cls(cls.profiles.get("mini", {}).get("detector", {})).eval()


def test_samples(preset: str, limit: int | None):
    suite = get_suite("mini")({"preset": preset})
    samples = [s for s in load_samples(suite) if s.split == "test"]
    return samples[:limit] if limit else samples


def bare_forward(detector, samples, *, device, batch_size: int, precision: str) -> float:
    """Images per second of the model alone over pre-decoded, preprocessed tensors."""
    tensors = torch.stack([detector.preprocess([load_image(s.path)])[0] for s in samples])
    batches = list(tensors.split(batch_size))
    detector.to(device)
    amp = effective_precision(precision, device) == "bf16-autocast"
    with torch.no_grad(), autocast(device, enabled=amp):
        detector(batches[0].to(device))  # warm-up (allocator, lazy init)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            detector(batch.to(device, non_blocking=True)).float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return len(samples) / elapsed


def timed_scoring(detector, samples, *, device, batch_size, workers, cache_dir, precision) -> tuple[float, dict]:
    start = time.perf_counter()
    df = score_samples(detector, samples, device=device, batch_size=batch_size, workers=workers,
                       cache_dir=cache_dir, precision=precision, desc="bench")
    return time.perf_counter() - start, df.attrs


def memory_probe(args) -> None:
    """Run in a fresh process: score ``--limit`` images, print peak RSS in MiB (JSON)."""
    device = select_device(args.device)
    detector = build_detector(args.detector)
    samples = test_samples(args.preset, args.limit)
    with tempfile.TemporaryDirectory() as cache:
        score_samples(detector, samples, device=device, batch_size=args.batch_size, workers=0, cache_dir=cache,
                      precision=args.precision, desc="probe")
    print(json.dumps({"n": len(samples), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="mini suite preset (default: default)")
    parser.add_argument("--detector", default="npr", help="built-in detector at its mini profile (default: npr)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the harness run")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32"])
    parser.add_argument("--limit", type=int, help="use the first N test images only")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args)
        return

    device = select_device(args.device)
    detector = build_detector(args.detector)
    samples = test_samples(args.preset, args.limit)
    n = len(samples)
    print(f"mini/{args.preset}: {n} test images; detector {args.detector} (mini profile), device {device}, "
          f"batch {args.batch_size}, workers {args.workers}, torch threads {torch.get_num_threads()}")

    bare = max(bare_forward(detector, samples, device=device, batch_size=args.batch_size, precision=args.precision)
               for _ in range(args.repeats))
    firsts, seconds = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            first, attrs = timed_scoring(detector, samples, device=device, batch_size=args.batch_size,
                                         workers=args.workers, cache_dir=cache, precision=args.precision)
            assert attrs["scored"] == n, attrs
            second, attrs = timed_scoring(detector, samples, device=device, batch_size=args.batch_size,
                                          workers=args.workers, cache_dir=cache, precision=args.precision)
            assert attrs["scored"] == 0 and attrs["cached"] == n, attrs
        firsts.append(first)
        seconds.append(second)
    first, second = min(firsts), min(seconds)
    harness = n / first
    print(f"bare forward over decoded tensors: {bare:9.1f} img/s")
    print(f"harness scoring, first run:        {harness:9.1f} img/s ({first:.2f} s)")
    print(f"harness scoring, second run:       {n / second:9.1f} img/s ({second:.3f} s, stored scores)")
    print(f"RATIO harness / bare forward = {harness / bare:.3f}  (target >= 0.85)")
    print(f"RATIO first / second run     = {first / second:.1f}  (target >= 50)")

    rows = []
    for fraction in (4, 2, 1):
        cmd = [sys.executable, __file__, "--memory-probe", "--preset", args.preset, "--detector", args.detector,
               "--device", args.device, "--batch-size", str(args.batch_size), "--precision", args.precision,
               "--limit", str(max(1, n // fraction))]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ}).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print("peak RSS of a scoring process: " + ", ".join(f"{r['n']} images -> {r['peak_rss_mib']:.0f} MiB" for r in rows))
    print(f"RATIO peak memory all / quarter = {rows[-1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.3f}  (target ~1)")


if __name__ == "__main__":
    main()
