"""Manifest build time against a bare ``os.scandir`` + ``stat`` of the same files (a benchmark, not a test).

    python benchmarks/speed/bench_manifest.py [--files 50000] [--repeats 3] [--tree DIR]

Generates (once, under ``--tree``) a folder-suite tree of ``--files`` small PNG-named files in
5 generators x {0_real, 1_fake}, then times, best of ``--repeats``:

- bare: a recursive ``os.scandir`` with one ``stat`` per file (the least any manifest build must do);
- build: ``load_manifest(suite, refresh=True)`` of the ``folder`` suite: the walk, every file's size
  and format, the listing hash, and writing the cache (``.csv.gz`` + header);
- read: ``load_manifest(suite)`` again, answered from the cache (folder times compared).

Prints the ratio build / bare (target <= 3).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time


def make_tree(root: str, files: int) -> None:
    marker = os.path.join(root, f".complete-{files}")
    if os.path.exists(marker):
        return
    per_folder = files // 10
    for g in range(5):
        for cls in ("0_real", "1_fake"):
            folder = os.path.join(root, f"gen{g}", "train", cls)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_folder):
                with open(os.path.join(folder, f"{i:06d}.png"), "wb") as fh:
                    fh.write(b"x" * (i % 7))
    open(marker, "w").close()


def bare_scan(root: str) -> int:
    count, stack = 0, [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(entry.path)
                else:
                    entry.stat()
                    count += 1
    return count


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", default=os.path.join(tempfile.gettempdir(), "aigi-bench-manifest-tree"))
    args = parser.parse_args()
    make_tree(args.tree, args.files)
    cache = tempfile.mkdtemp(prefix="aigi-bench-manifest-cache-")
    os.environ["HARNESS_CACHE_DIR"] = cache
    try:
        from harness.manifest import load_manifest
        from harness.registry import get_suite

        suite = get_suite("folder")({"root": args.tree})
        assert bare_scan(args.tree) == args.files // 10 * 10
        load_manifest(suite, refresh=True)  # warm the page cache and the imports
        bare = best(lambda: bare_scan(args.tree), args.repeats)
        build = best(lambda: load_manifest(suite, refresh=True), args.repeats)
        time.sleep(2.1)  # a manifest written within 2 s of a folder change is walked again (SETTLE_SECONDS)
        load_manifest(suite, refresh=True)
        time.sleep(0.1)
        read = best(lambda: load_manifest(suite), args.repeats)
        manifest = load_manifest(suite)
        print(f"files: {len(manifest.table)}; best of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
        print(f"bare scandir + stat: {bare:.3f} s")
        print(f"manifest build (walk, sizes, hash, cache write): {build:.3f} s")
        print(f"manifest read back from the cache: {read:.3f} s (walked again: {manifest.scanned})")
        print(f"build / bare: {build / bare:.2f}x (target <= 3)")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
