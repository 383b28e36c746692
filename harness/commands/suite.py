"""``harness suite info|verify|build``: what a suite holds, which files are unreadable, build ``mini``."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

from harness import config as cfg
from harness.errors import HarnessError

if TYPE_CHECKING:  # pandas and the manifest load only when a command runs (harness --help stays fast)
    import pandas as pd

    from harness.manifest import Manifest

SHOW = 20  # file lists longer than this are cut, with a count of the rest


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("suite", help="inspect, verify or build a dataset suite")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(sub) -> None:
        sub.add_argument("name", metavar="NAME", help="suite name (harness list suites)")
        sub.add_argument("--config", metavar="FILE.toml", help="TOML file whose [suite] table is used")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="suite setting, e.g. --set suite.root=/data/GenImage (repeatable)")

    info = actions.add_parser("info", help="counts per generator, split and class; format and size mix; "
                                           "unreadable files")
    common(info)
    info.add_argument("--refresh", action="store_true", help="walk the tree again even if the manifest looks current")
    info.add_argument("--checksums", action="store_true", help="add SHA-256 of every file to the manifest")
    # default None: harness.shortcuts.DEFAULT_PER_GROUP, read when the command runs (the module imports pandas)
    info.add_argument("--per-group", type=int, default=None, metavar="N",
                      help="file headers read per generator, split and class for the shortcut checks (a stable "
                           "choice; default 1000; 0: all)")
    info.set_defaults(func=run_info)

    check = actions.add_parser("verify", help="decode every file (in parallel) and list the unreadable ones")
    common(check)
    check.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                       help="decoding processes (default: min(8, CPU cores))")
    check.add_argument("--against", metavar="NAME@VERSION",
                       help="instead of decoding, compare the counts per generator, split and class with a "
                            "published fingerprint (or a .json file) and list its known-bad files that are present")
    check.set_defaults(func=run_verify)

    build = actions.add_parser("build", help="build the embedded mini suite (also done on first use)")
    common(build)
    build.add_argument("--force", action="store_true", help="delete a previous build and build again")
    build.set_defaults(func=run_build)


def make_suite(args):
    from harness.registry import get_suite

    suite_cls = get_suite(args.name)
    file_config = cfg.load_toml(args.config) if args.config else None
    resolved = cfg.resolve(suite_defaults=suite_cls.defaults, file_config=file_config, overrides=args.overrides,
                           settings={"suite": cfg.declared_settings(suite_cls)})
    return suite_cls(resolved["suite"])


def _cut(items: list, show: int = SHOW) -> tuple[list, str]:
    rest = len(items) - show
    return items[:show], (f"  ... and {rest} more" if rest > 0 else "")


def _class_name(label: int) -> str:
    return "fake" if label == 1 else "real"


def counts_table(table: pd.DataFrame, generators: list[str]) -> pd.DataFrame:
    """Images per generator and split, real and fake side by side."""
    counts = table.groupby(["generator", "split", "label"]).size().unstack("label", fill_value=0)
    counts = counts.rename(columns={0: "real", 1: "fake"}).reindex(columns=["real", "fake"], fill_value=0)
    counts["paired fakes"] = table[(table["label"] == 1) & (table["pair"] != "")].groupby(
        ["generator", "split"]).size().reindex(counts.index, fill_value=0)
    order = {g: i for i, g in enumerate(generators)}
    split_order = {"train": 0, "val": 1, "test": 2}
    counts = counts.reset_index()
    counts = counts.sort_values(["generator", "split"], key=lambda col: col.map(
        order if col.name == "generator" else split_order).fillna(len(order)))
    return counts.reset_index(drop=True)


def format_mix(table: pd.DataFrame) -> pd.DataFrame:
    """Per class and format: file count, share of the class, median and mean size in KiB."""
    import pandas as pd

    rows = []
    for label, group in table.groupby("label"):
        for fmt, sub in group.groupby("format"):
            sizes = sub["size"][sub["size"] >= 0] / 1024
            rows.append({"class": _class_name(label), "format": fmt, "files": len(sub),
                         "share": len(sub) / len(group),
                         "median KiB": sizes.median() if len(sizes) else float("nan"),
                         "mean KiB": sizes.mean() if len(sizes) else float("nan")})
    return pd.DataFrame(rows)


def shortcut_warnings(table: pd.DataFrame) -> list[str]:
    """Warn when file format or file size alone separates the classes (GenImage's JPEG reals vs PNG fakes)."""
    warnings = []
    if set(table["label"]) != {0, 1}:
        return warnings
    share = table.groupby("label")["format"].value_counts(normalize=True).unstack(fill_value=0.0)
    real_top, fake_top = share.loc[0].idxmax(), share.loc[1].idxmax()
    if real_top != fake_top and share.loc[0, real_top] > 0.5 and share.loc[1, fake_top] > 0.5:
        warnings.append(
            f"format shortcut: {share.loc[0, real_top]:.0%} of reals are {real_top} but {share.loc[1, fake_top]:.0%} "
            f"of fakes are {fake_top}; a detector can learn the file format instead of real vs fake "
            f"(re-encode both classes the same way, or report results per format)")
    sizes = table[table["size"] > 0].groupby("label")["size"].median()
    if len(sizes) == 2 and max(sizes) > 3 * min(sizes):
        warnings.append(f"size shortcut: median file size is {sizes[0] / 1024:.0f} KiB for reals and "
                        f"{sizes[1] / 1024:.0f} KiB for fakes")
    return warnings


def print_shortcuts(manifest: Manifest, generators: list[str], per_group: int | None) -> None:
    """Per generator and class: format, JPEG quality, dimensions, size; a warning per generator
    that one of them separates; and the metadata-only baseline's accuracy."""
    from harness.plugins.analyses.metadata_baseline import solvability
    from harness.shortcuts import DEFAULT_PER_GROUP, class_table, metadata_table, select, separability_warnings

    per_group = DEFAULT_PER_GROUP if per_group is None else per_group
    samples = select(manifest.samples, per_group)
    meta = metadata_table(samples, progress=sys.stderr.isatty())
    readable = meta[meta["error"].isna()]
    if readable.empty:
        print("shortcut checks: no readable file headers")
        return
    limit = f"up to {per_group} files per generator, split and class" if per_group else "every file"
    print(f"per generator and class, from file headers ({limit}; JPEG quality estimated from the "
          "quantisation tables):")
    print(tabulate(class_table(meta, generators), headers="keys", tablefmt="simple", showindex=False, floatfmt=".1f"))
    for line in separability_warnings(meta):
        print(f"warning: {line}")
    if len(readable) < len(meta):
        print(f"{len(meta) - len(readable)} file headers could not be read (see 'unreadable files' below)")
    print()
    solvable = solvability(meta, generators)
    print("solvable without pixels: accuracy of a metadata-only baseline (format, JPEG quality, width, height, "
          "file size; random forest):")
    print(tabulate(solvable, headers="keys", tablefmt="simple", showindex=False, floatfmt=".3f", missingval="-"))
    print()


def _print_header(suite, manifest: Manifest) -> None:
    print(f"suite: {suite.name}" + (f" - {suite.description}" if suite.description else ""))
    print(f"root: {manifest.root}")
    how = "walked the tree" if manifest.scanned else "read from cache, tree unchanged"
    print(f"manifest: {manifest.path} ({how}); {len(manifest.table)} images; hash {manifest.hash[:16]}")


def run_info(args) -> int:
    from harness.manifest import load_manifest

    suite = make_suite(args)
    manifest = load_manifest(suite, refresh=args.refresh, checksums=args.checksums)
    table = manifest.table
    _print_header(suite, manifest)
    print()
    print(tabulate(counts_table(table, suite.generators()), headers="keys", tablefmt="simple", showindex=False))
    facts = suite.generator_info()
    if facts:
        print()
        print("generators (family, release date; protocols can split on the date):")
        print(tabulate([{"generator": g, **f} for g, f in facts.items()], headers="keys", tablefmt="simple",
                       missingval="-"))
    print()
    print("format and size mix per class:")
    print(tabulate(format_mix(table), headers="keys", tablefmt="simple", showindex=False, floatfmt=".2f"))
    for line in shortcut_warnings(table):
        print(f"warning: {line}")
    print()
    print_shortcuts(manifest, suite.generators(), args.per_group)  # None: the module's default
    problems = [(p, "zero-byte file") for p in table.loc[table["size"] == 0, "path"]]
    problems += [(p, "listed but missing") for p in table.loc[table["size"] < 0, "path"]]
    last = manifest.last_verify()
    if last is not None:
        known = {p for p, _ in problems}
        problems += [(p, reason) for p, reason in last["unreadable"] if p not in known]
        source = f"from the last 'harness suite verify' of this listing ({last['checked']} files decoded)"
    else:
        source = f"file sizes only; run 'harness suite verify {suite.name}' to decode every file"
    print(f"unreadable files: {len(problems)} ({source})")
    shown, more = _cut(sorted(problems))
    for path, reason in shown:
        print(f"  {path}: {reason}")
    if more:
        print(more)
    if manifest.ignored:
        print(f"not listed (no image file name, or a folder outside the layout): {len(manifest.ignored)}")
        shown, more = _cut(manifest.ignored)
        for path, reason in shown:
            print(f"  {path}: {reason}")
        if more:
            print(more)
    return 0


def run_verify(args) -> int:
    from harness.manifest import load_manifest, verify

    suite = make_suite(args)
    if args.against:
        return _verify_against(suite, args.against)
    manifest = load_manifest(suite)
    _print_header(suite, manifest)
    record = verify(manifest, workers=max(0, args.workers), progress=sys.stderr.isatty())
    print(f"decoded {record['checked']} files: {len(record['unreadable'])} unreadable")
    shown, more = _cut(record["unreadable"], show=200)
    for path, reason in shown:
        print(f"  {path}: {reason}")
    if more:
        print(more)
    if record["format_mismatch"]:
        print(f"files whose content is not the format their name says: {len(record['format_mismatch'])}")
        shown, more = _cut(record["format_mismatch"])
        for path, named, found in shown:
            print(f"  {path}: named {named}, holds {found}")
        if more:
            print(more)
    return 1 if record["unreadable"] else 0


def _verify_against(suite, spec: str) -> int:
    """Published counts vs the local copy; 1 when a subset is missing or short."""
    from harness.plugins.suites import fingerprints

    fingerprint = fingerprints.load(spec)
    if fingerprint["suite"] != suite.name:
        raise HarnessError(f"fingerprint {spec} describes suite '{fingerprint['suite']}', not '{suite.name}'")
    from harness.manifest import load_manifest

    manifest = load_manifest(suite)
    _print_header(suite, manifest)
    result = fingerprints.compare(manifest.table, manifest.root, fingerprint)
    print(f"against {fingerprint['suite']}@{fingerprint['version']} ({fingerprint['path']})")
    print(f"source: {fingerprint['source']}")
    if fingerprint.get("note"):
        print(f"note: {fingerprint['note']}")
    rows = [{"generator": c.generator, "split": c.split, "class": c.cls, "published": c.published,
             "found": c.found, "status": c.status} for c in result["checks"]]
    print(tabulate(rows, headers="keys", tablefmt="simple", showindex=False))
    problems = [c for c in result["checks"] if c.problem]
    present = result["known_bad_present"]
    if fingerprint.get("known_bad"):
        source = f" ({fingerprint['known_bad_source']})" if fingerprint.get("known_bad_source") else ""
        print(f"known-bad files present: {len(present)} of {len(fingerprint['known_bad'])} listed{source}")
        shown, more = _cut(present)
        for path, reason in shown:
            print(f"  {path}: {reason}")
        if more:
            print(more)
    if problems:
        print(f"{len(problems)} subset(s) missing or short: "
              + ", ".join(f"{c.generator} {c.split} {c.cls}" for c in problems))
    else:
        print("every published count is there")
    return 1 if problems else 0


def _disk_usage(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``, counting hard-linked files once."""
    seen, files, total = set(), 0, 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.stat(os.path.join(dirpath, name))
            files += 1
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return files, total


def run_build(args) -> int:
    from harness.manifest import load_manifest
    from harness.plugins.suites.mini import MARKER, MiniSuite

    if args.name != "mini":
        raise HarnessError(f"only the mini suite is built by the harness; '{args.name}' is read from disk "
                           f"(harness suite info {args.name})")
    suite = make_suite(args)
    if not isinstance(suite, MiniSuite):
        raise HarnessError("the registered 'mini' suite is not the built-in one; it cannot be built here")
    raw = suite.config.get("root") or os.environ.get(suite.root_env or "")
    target = Path(raw).expanduser().resolve() if raw else suite.default_root()
    if (target / MARKER).is_file():
        if not args.force:
            print(f"mini suite already built at {target} (--force builds it again)")
        else:
            shutil.rmtree(target)
    started = time.perf_counter()
    root = suite.root_path()
    seconds = time.perf_counter() - started
    files, size = _disk_usage(root)
    manifest = load_manifest(suite)
    print(f"mini suite at {root}: {files} files, {size / 2**20:.1f} MiB on disk (shared reals counted once)"
          + (f"; built in {seconds:.0f} s" if seconds > 1 else ""))
    print(tabulate(counts_table(manifest.table, suite.generators()), headers="keys", tablefmt="simple",
                   showindex=False))
    return 0
