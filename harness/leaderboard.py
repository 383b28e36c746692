"""The shared leaderboard: a folder of result records per benchmark and the pages built from them.

Layout under the root (default ``leaderboards/``)::

    <benchmark>/records/<record>.json     one sealed record each (harness.records)
    <benchmark>/assets/<run id>/*.png     figures copied from a run, hashed in its record
    <benchmark>/plots/*.png               charts drawn by ``build``
    <benchmark>/README.md, index.html     pages drawn by ``build``

``add`` writes under a per-benchmark lock and publishes a record with a hard link (never overwrites), so any number
of concurrent ``add`` calls lose nothing and leave no half-written file. ``build`` depends only on the records:
the same records give byte-identical pages.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from harness import records as rec
from harness.checkpoints import sha256_file
from harness.errors import HarnessError

# Column labels in the papers' tables for the suites' generator folder names, in the papers' order.
GENERATOR_LABELS: dict[str, dict[str, str]] = {
    "genimage": {
        "Midjourney": "Midjourney", "stable_diffusion_v_1_4": "SDv1.4", "stable_diffusion_v_1_5": "SDv1.5",
        "ADM": "ADM", "glide": "GLIDE", "wukong": "Wukong", "VQDM": "VQDM", "BigGAN": "BigGAN",
    },
    "drct2m": {
        "ldm-text2im-large-256": "LDM", "stable-diffusion-v1-4": "SDv1.4", "stable-diffusion-v1-5": "SDv1.5",
        "stable-diffusion-2-1": "SDv2", "stable-diffusion-xl-base-1.0": "SDXL",
        "stable-diffusion-xl-refiner-1.0": "SDXL-Refiner", "sd-turbo": "SD-Turbo", "sdxl-turbo": "SDXL-Turbo",
        "lcm-lora-sdv1-5": "LCM-SDv1.5", "lcm-lora-sdxl": "LCM-SDXL", "sd-controlnet-canny": "SDv1-Ctrl",
        "sd21-controlnet-canny": "SDv2-Ctrl", "controlnet-canny-sdxl-1.0": "SDXL-Ctrl",
        "stable-diffusion-inpainting": "SDv1-DR", "stable-diffusion-2-inpainting": "SDv2-DR",
        "stable-diffusion-xl-1.0-inpainting-0.1": "SDXL-DR",
    },
    "chameleon": {"chameleon": "Chameleon"},
    "mini": {"tconv": "tconv", "nearest": "nearest", "bilinear": "bilinear", "pixelshuffle": "pixelshuffle",
             "vqvae": "vqvae", "denoiser": "denoiser"},
}

# TDE statistics shown first when a record has them (the rest follow alphabetically).
TDE_PREFERRED = ("few_patch_bias", "gini", "effective_patches", "entropy", "top1_share", "top10_share",
                 "active_fraction", "mean", "std")

# -- store -------------------------------------------------------------------------------------------------------

def benchmark_dir(root: Path, benchmark: str) -> Path:
    if not isinstance(benchmark, str) or not re.match(rec.NAME_PATTERN, benchmark):
        raise HarnessError(f"'{benchmark}' is not a valid benchmark name (letters, digits, '_', '.', '+', '-')")
    return Path(root) / benchmark


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` held by this process until the block ends (released if it dies)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the hard-link publish still never overwrites a record
        yield
        return
    # flock on the folder itself: no lock file to leave behind or commit by mistake.
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, exclusive: bool) -> None:
    """Write through a temporary file in the same folder; ``exclusive`` refuses to replace an existing file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        if exclusive:
            os.link(tmp, path)  # atomic and fails if the name is taken
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def record_files(bench_dir: Path) -> list[Path]:
    folder = bench_dir / "records"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def benchmarks(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "records").is_dir())


def _check_root(root: Path) -> None:
    if Path(root).exists() and not Path(root).is_dir():
        raise HarnessError(f"leaderboard root {root} is a file, not a folder: pass --root DIR")


def add_record(record: dict, root: Path, figures: list[Path] | tuple = (), *, build: bool = False) -> list[Path]:
    """Validate ``record``, copy ``figures`` beside it as assets, and publish it; with ``build`` also redraw the
    benchmark's pages. Returns the record's path (then the pages written).

    Everything happens under the benchmark's lock, the page build included (so the last page written lists every
    record filed before it), and nothing already filed is ever overwritten.
    """
    _check_root(root)
    bench_dir = benchmark_dir(root, record.get("benchmark") if isinstance(record, dict) else None)
    with _locked(bench_dir):
        problems = rec.check_record(record, benchmark_dir=bench_dir)
        if problems:
            raise HarnessError("record refused: " + "; ".join(problems))
        key = rec.duplicate_key(record)
        for existing in record_files(bench_dir):
            try:
                other = rec.load_record(existing)
            except HarnessError:
                continue  # a broken neighbour is validate's business, not a reason to refuse this one
            if isinstance(other, dict) and not rec.validate_schema(other) and rec.duplicate_key(other) == key:
                raise HarnessError(f"duplicate: {existing} already holds this result")
        if figures:
            record = _attach(record, bench_dir, figures)
        target = bench_dir / "records" / rec.record_filename(record)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_atomic(target, rec.dumps(record).encode("utf-8"), exclusive=True)
        except FileExistsError:
            raise HarnessError(f"duplicate: {target} already exists") from None
        return [target] + (build_benchmark(bench_dir) if build else [])


def _attach(record: dict, bench_dir: Path, figures) -> dict:
    """Copy ``figures`` under ``assets/<detector>-<run id>/`` and list them, with their sha256, in the record."""
    ident = (record.get("provenance") or {}).get("run_fingerprint") or record["integrity"]["content_hash"]
    folder = f"assets/{record['detector']['name']}-{ident[:12]}"
    assets = list(record.get("assets", []))
    for figure in sorted(Path(f) for f in figures):
        if not figure.is_file() or figure.is_symlink():
            raise HarnessError(f"figure {figure} is not a regular file")
        data = figure.read_bytes()
        name = re.sub(r"[^A-Za-z0-9_.+-]", "_", figure.name).lstrip("._-") or "figure.png"
        stem, suffix = os.path.splitext(name)
        for relative in (f"{folder}/{name}", f"{folder}/{stem}-{hashlib.sha256(data).hexdigest()[:12]}{suffix}"):
            target = rec.resolve_inside(bench_dir, relative)
            if target is None:
                raise HarnessError(f"figure {figure} would land outside the leaderboard")
            if any(a["path"] == relative for a in assets):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                _write_atomic(target, data, exclusive=True)
            except FileExistsError:
                if target.read_bytes() != data:
                    continue  # the name holds another picture: never overwrite it, take the hashed name
            break
        else:
            raise HarnessError(f"cannot find a free asset name for {figure}")
        assets.append({"path": relative, "sha256": sha256_file(target)})
    body = dict(record)
    body["assets"] = assets
    return rec.seal(body)


#: Figures larger than this (pixels per side, bytes) are refused: a page embeds them as they are.
MAX_FIGURE_SIDE = 8192
MAX_FIGURE_BYTES = 20 * 1024 * 1024


def run_figures(run_dir: Path, patterns: tuple[str, ...]) -> list[Path]:
    """PNG figures of a run folder matching any of ``patterns`` (globs relative to the run folder, which
    every match must stay inside), each a real PNG within :data:`MAX_FIGURE_SIDE` and :data:`MAX_FIGURE_BYTES`."""
    from PIL import Image

    base = Path(run_dir).resolve()
    found = set()
    for pattern in patterns:
        pure = PurePosixPath(pattern)
        if not pattern or pure.is_absolute() or ".." in pure.parts or "\\" in pattern or Path(pattern).is_absolute():
            raise HarnessError(f"--figure {pattern!r}: give a glob relative to the run folder, inside it "
                               "(no absolute path, no '..')")
        for path in base.glob(pattern):
            if path.suffix.lower() != ".png" or not path.is_file():
                continue
            real = path.resolve()
            if base not in real.parents:
                raise HarnessError(f"--figure {pattern!r}: {path} leads outside the run folder {run_dir}")
            found.add(path)
    for path in sorted(found):
        size = path.stat().st_size
        if size > MAX_FIGURE_BYTES:
            raise HarnessError(f"figure {path}: {size} bytes, over the limit of {MAX_FIGURE_BYTES}")
        try:
            with Image.open(path) as image:
                kind, (width, height) = image.format, image.size
        except Image.DecompressionBombError as exc:  # Pillow's own, larger limit
            raise HarnessError(f"figure {path}: over the limit of {MAX_FIGURE_SIDE} pixels per side ({exc})") from None
        except (OSError, ValueError) as exc:
            raise HarnessError(f"figure {path}: not a readable PNG ({exc})") from None
        if kind != "PNG":
            raise HarnessError(f"figure {path}: a {kind} file named .png; figures must be PNG")
        if max(width, height) > MAX_FIGURE_SIDE:
            raise HarnessError(f"figure {path}: {width}x{height} pixels, over the limit of {MAX_FIGURE_SIDE} "
                               "pixels per side")
    return sorted(found)


def add_run(run_dir: Path, root: Path, benchmark: str | None = None, figure_patterns: tuple[str, ...] = (), *,
            force: bool = False, build: bool = False) -> list[Path]:
    """File the record of a finished run folder (metrics recomputed from its scores); see :func:`add_record`."""
    _check_root(root)
    record = rec.build_record(Path(run_dir), benchmark=benchmark, force=force)
    return add_record(record, root, run_figures(Path(run_dir), figure_patterns), build=build)


# -- validate ----------------------------------------------------------------------------------------------------

@dataclass
class Entry:
    path: Path
    record: dict | None
    problems: list[str] = field(default_factory=list)


def load_entries(bench_dir: Path) -> list[Entry]:
    """Every file under ``records/`` with its problems; ``record`` is set only for a good record."""
    entries, sound = [], []
    for path in record_files(bench_dir):
        if path.is_symlink() or not path.is_file():
            entries.append(Entry(path, None, ["not a regular file (links that may point outside the leaderboard "
                                              "are refused)"]))
            continue
        if path.suffix != ".json":
            entries.append(Entry(path, None, ["not a .json record"]))
            continue
        try:
            record = rec.load_record(path)
        except HarnessError as exc:
            entries.append(Entry(path, None, [str(exc).split(": ", 1)[-1]]))
            continue
        problems = rec.check_record(record, file_name=path.name, benchmark_dir=bench_dir)
        entry = Entry(path, record if not problems else None, problems)
        entries.append(entry)
        if not rec.validate_schema(record) and rec.content_hash(record) == record["integrity"]["content_hash"]:
            sound.append((entry, record))
    # Duplicates among the intact records; a correctly named file counts as the original.
    seen: dict[Any, Path] = {}
    for entry, record in sorted(sound, key=lambda item: (bool(item[0].problems), item[0].path.name)):
        for key in (("content", record["integrity"]["content_hash"]), rec.duplicate_key(record)):
            if key in seen:
                entry.problems.append(f"duplicate of {seen[key].name}")
                entry.record = None
                break
        else:
            seen[("content", record["integrity"]["content_hash"])] = entry.path
            seen[rec.duplicate_key(record)] = entry.path
    return entries


def validate(root: Path) -> list[tuple[Path, str]]:
    """Every problem in the leaderboard as (record path, message); empty when all records are good."""
    problems = []
    for bench_dir in benchmarks(root):
        for entry in load_entries(bench_dir):
            problems.extend((entry.path, message) for message in entry.problems)
    return problems


# -- build -------------------------------------------------------------------------------------------------------

# Decimals shown per benchmark: the papers print DRCT-2M and Chameleon accuracies with two.
DIGITS = {"drct2m": 2, "chameleon": 2}


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * value:.{digits}f}"


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Table:
    """One table for both pages: text cells for markdown, sort keys for the HTML."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    sort_keys: list[list[Any]]
    note: str = ""


def _generator_order(benchmark: str, recs: list[dict]) -> list[str]:
    known = list(GENERATOR_LABELS.get(benchmark, {}))
    seen = [g for r in recs for g in r["metrics"]["per_generator"]]
    present = set(seen)
    order = [g for g in known if g in present]
    for g in seen:
        if g not in order:
            order.append(g)
    return order


def _train_label(record: dict) -> str:
    proto = record["protocol"]
    if proto.get("train_label"):
        return proto["train_label"]
    gens = proto["train_generators"]
    labels = GENERATOR_LABELS.get(record["benchmark"], {})
    return ", ".join(labels.get(g, g) for g in gens) if gens else "–"


def _sorted_records(recs: list[dict]) -> list[dict]:
    """Detectors ordered by their best mAcc; each detector's reproduced rows first, its reported rows beside them."""
    def macc(r):
        value = r["metrics"]["summary"].get("mAcc")
        return value if value is not None else -1.0

    best: dict[str, float] = {}
    for r in recs:
        name = r["detector"]["name"].lower()
        best[name] = max(best.get(name, -1.0), macc(r))
    return sorted(recs, key=lambda r: (-best[r["detector"]["name"].lower()], r["detector"]["name"].lower(),
                                       r["kind"] != "reproduced", _train_label(r), -macc(r),
                                       r["detector"]["label"], r["integrity"]["content_hash"]))


def _row_name(record: dict) -> str:
    scoring = record["protocol"].get("scoring")  # a run filed with --force on re-encoded, matched or bf16 scoring
    return record["detector"]["label"] + (f" [{scoring}]" if scoring else "")


def _short(value: Any, n: int = 12) -> str:
    return str(value)[:n] if value else "–"


def _revision(value: Any) -> str:
    """A short git revision that keeps the ``+dirty`` mark of a run from uncommitted code."""
    if not value:
        return "–"
    commit, dirty, _ = str(value).partition("+dirty")
    return commit[:12] + ("+dirty" if dirty else "")


def accuracy_table(benchmark: str, recs: list[dict]) -> Table:
    gens = _generator_order(benchmark, recs)
    labels = GENERATOR_LABELS.get(benchmark, {})
    show_train = len({_train_label(r) for r in recs}) > 1
    # One test set (Chameleon): show its fake / real accuracy as the paper does, instead of a spread.
    split = len(gens) == 1
    gen_headers = [labels.get(g, g) for g in gens]
    if split:
        gen_headers += [f"{gen_headers[0]} fake", f"{gen_headers[0]} real"]
    show_repro = any(r.get("reproduction") for r in recs)
    headers = ["Detector", "Kind"] + (["Trained on"] if show_train else []) + gen_headers + [
        "mAcc", "std", "worst", "mAcc 95% CI"] + (["Reproduction (reported mean)"] if show_repro else [])
    rows, keys = [], []
    for r in recs:
        per_gen, summary = r["metrics"]["per_generator"], r["metrics"]["summary"]
        accs = [per_gen.get(g, {}).get("acc") for g in gens]
        if split:
            accs += [per_gen.get(gens[0], {}).get("fake_acc"), per_gen.get(gens[0], {}).get("real_acc")]
        ci = summary.get("mAcc_ci95")
        worst = summary.get("worst_generator")
        d = DIGITS.get(benchmark, 1)
        row = [_row_name(r), r["kind"]] + ([_train_label(r)] if show_train else []) + [_pct(a, d) for a in accs] + [
            _pct(summary.get("mAcc"), d), _pct(summary.get("std"), d), labels.get(worst, worst) if worst else "–",
            f"{_pct(ci[0], d)}–{_pct(ci[1], d)}" if ci else "–"]
        key = [_row_name(r).lower(), r["kind"]] + ([_train_label(r)] if show_train else []) + accs + [
            summary.get("mAcc"), summary.get("std"), worst or "", ci[0] if ci else None]
        if show_repro:  # the status against each reported source, with that source's mean
            repro = "; ".join(f"{x['status']} ({x['metric']} {x.get('reported_mean')}, {x['source']})"
                              for x in r.get("reproduction") or []) or "–"
            row.append(repro)
            key.append(repro)
        rows.append(row)
        keys.append(key)
    return Table("Accuracy per generator (%)", headers, rows, keys,
                 "Accuracy at threshold 0.5 on each test generator; mAcc is their mean, std their spread. "
                 "Reported rows are typed from the cited paper; reproduced rows come from `harness run`.")


def _curve_table(recs: list[dict], curve_of, title: str, note: str, header, percent: bool = True) -> Table | None:
    """Rows: detectors; columns: the union of the curves' x values (in first-seen order within each curve name)."""
    with_curves = [(r, curves) for r in recs if (curves := curve_of(r))]
    if not with_curves:
        return None
    columns: list[tuple[str, Any]] = []
    for _, curves in with_curves:
        for name, curve in sorted(curves.items()):
            for x in curve["x"]:
                if (name, x) not in columns:
                    columns.append((name, x))
    columns.sort(key=lambda col: col[0])  # stable: each curve keeps its own x order
    fmt = _pct if percent else _num
    rows, keys = [], []
    for r, curves in with_curves:
        lookup = {(name, x): y for name, c in curves.items() for x, y in zip(c["x"], c["y"])}
        values = [lookup.get(col) for col in columns]
        rows.append([_row_name(r)] + [fmt(v) for v in values])
        keys.append([_row_name(r).lower()] + values)
    return Table(title, ["Detector"] + [header(name, x) for name, x in columns], rows, keys, note)


def masking_tables(recs: list[dict]) -> list[Table]:
    def one(key):
        return lambda r: {key: r["masking"][key]} if (r.get("masking") or {}).get(key) else None

    tables = [
        _curve_table(recs, one("random_acc"), "Random patch masking: accuracy (%) by masked ratio",
                     "A random share of the grid patches is zeroed before scoring, several seeds averaged.",
                     lambda _, x: _num(x)),
        _curve_table(recs, one("recall_decline"), "Random patch masking: recall decline ratio by masked ratio",
                     "(recall on fakes unmasked - recall at ratio r) / recall unmasked, as in the PPL paper's "
                     "Fig. 6(b); lower is more robust.", lambda _, x: _num(x), percent=False),
        _curve_table(recs, one("single_patch_acc_drop"), "Single-patch masking: accuracy drop by square size",
                     "One square of growing size (fraction of the image side) zeroed at every position "
                     "(PPL paper, Fig. 3(b)).", lambda _, x: _num(x), percent=False),
    ]
    return [t for t in tables if t is not None]


def corruption_table(recs: list[dict]) -> Table | None:
    return _curve_table(recs, lambda r: r.get("corruptions"), "Corruption robustness: mean accuracy (%)",
                        "JPEG quality, Gaussian blur sigma and resize scale, applied alike to real and fake images; "
                        "'jpeg none' is the clean image.", lambda name, x: f"{name} {_num(x)}")


def calibration_table(recs: list[dict]) -> Table | None:
    """Pooled calibration of each record, and what a metadata-only baseline reaches on the same split."""
    def values_of(r: dict) -> list:
        # ``analyses`` is free-form in the schema: read the baseline only where it has the shape it is written in.
        analyses = r.get("analyses")
        baseline = analyses.get("metadata-baseline") if isinstance(analyses, dict) else None
        acc = baseline.get("acc") if isinstance(baseline, dict) else None
        summary = r["metrics"]["summary"]
        values = [summary.get(k) for k in ("ece", "ece_balanced", "nll", "brier")] + [acc]
        return [v if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in values]

    with_any = [r for r in recs if any(v is not None for v in values_of(r))]
    if not with_any:
        return None
    rows, sort_keys = [], []
    for r in with_any:
        values = values_of(r)
        rows.append([_row_name(r)] + [_num(v) for v in values[:4]] + [_pct(values[4])])
        sort_keys.append([_row_name(r).lower()] + values)
    return Table("Calibration (pooled test set) and shortcuts", ["Detector", "ECE", "ECE (class-balanced)", "NLL",
                 "Brier", "Solvable without pixels (%)"], rows, sort_keys,
                 "P(fake) = sigmoid(logit); ECE over 10 equal-width bins, the balanced variant weights each class "
                 "to one half; 'solvable without pixels' is the accuracy of the metadata-only baseline (format, "
                 "JPEG quality, size) trained on the train split.")


def tde_table(recs: list[dict]) -> Table | None:
    with_stats = [r for r in recs if (r.get("tde") or {}).get("stats")]
    if not with_stats:
        return None
    names = {k for r in with_stats for k in r["tde"]["stats"]}
    ordered = [k for k in TDE_PREFERRED if k in names] + sorted(names - set(TDE_PREFERRED))
    rows, keys = [], []
    for r in with_stats:
        values = [r["tde"]["stats"].get(k) for k in ordered]
        rows.append([_row_name(r), _num(r["tde"].get("grid"))] + [_num(v) for v in values])
        keys.append([_row_name(r).lower(), r["tde"].get("grid")] + values)
    return Table("Per-patch evidence (TDE) statistics, mean over fake images", ["Detector", "grid"] + ordered,
                 rows, keys, "TDE(i,j) = logit(image) - logit(image with patch (i,j) zeroed) (PPL paper, eq. 1) on an "
                 "m x m grid; docs/analyses.md defines each statistic.")


def provenance_table(recs: list[dict], names: dict[str, str]) -> Table:
    headers = ["Record", "Detector", "Kind", "Date / source", "Weights sha256", "Manifest", "Seed", "Git revision",
               "Hardware"]
    rows, keys = [], []
    for r in recs:
        prov = r.get("provenance") or {}
        if r["kind"] == "reported":
            when = f"{r['source'].get('short') or r['source']['citation']}, {r['source']['table']}"
        else:
            when = prov.get("date", "")
        weights = r["weights"]
        if weights.get("sha256"):
            w = weights["sha256"][:12] + (" (trained in run)" if weights.get("trained_in_run") else "")
        else:
            w = "trained in run" if weights.get("trained_in_run") else "–"
        hw = prov.get("hardware") or {}
        hardware = hw.get("gpu") or hw.get("processor") or "–"
        if hw.get("cpu_count"):
            hardware += f", {hw['cpu_count']} CPUs"
        row = [names[r["integrity"]["content_hash"]], _row_name(r), r["kind"], when, w,
               _short(r.get("manifest_hash")), _num(prov.get("seed")), _revision(prov.get("git_revision")),
               hardware if prov else "–"]
        rows.append(row)
        keys.append([str(c).lower() for c in row])
    return Table("Records", headers, rows, keys, "")


# -- plots -------------------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcdefaults()
    return plt


def _save(fig, path: Path) -> Path:
    # No software/version stamp: the same records must give the same bytes on any matplotlib.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    _plt().close(fig)
    return path


def plot_accuracy(benchmark: str, recs: list[dict], path: Path) -> Path:
    plt = _plt()
    gens = _generator_order(benchmark, recs)
    labels = GENERATOR_LABELS.get(benchmark, {})
    grid = [[(r["metrics"]["per_generator"].get(g, {}).get("acc")) for g in gens] + [
        r["metrics"]["summary"].get("mAcc")] for r in recs]
    values = [[math.nan if v is None else 100 * v for v in row] for row in grid]
    names = [f"{_row_name(r)} ({r['kind']})" + (f" [{_train_label(r)}]" if len(
        {_train_label(x) for x in recs}) > 1 else "") for r in recs]
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * (len(gens) + 1) + 0.08 * max(len(n) for n in names),
                                    1.2 + 0.32 * len(recs)))
    image = ax.imshow(values, cmap="RdYlGn", vmin=50, vmax=100, aspect="auto")
    ax.set_xticks(range(len(gens) + 1), [labels.get(g, g) for g in gens] + ["mAcc"], rotation=45, ha="right")
    ax.set_yticks(range(len(recs)), names)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if math.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(f"{benchmark}: accuracy per test generator")
    fig.tight_layout()
    return _save(fig, path)


def plot_masking(recs: list[dict], path: Path) -> Path | None:
    """Every detector on one chart per masking curve (accuracy, recall decline, single-patch drop)."""
    names = [n for n in ("random_acc", "recall_decline", "single_patch_acc_drop")
             if any((r.get("masking") or {}).get(n) for r in recs)]
    if not names:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names) + 0.6, 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        for r in recs:
            curve = (r.get("masking") or {}).get(name)
            if not curve:
                continue
            points = [(x, y) for x, y in zip(curve["x"], curve["y"]) if y is not None]
            scale = 100 if name == "random_acc" else 1
            ax.plot([p[0] for p in points], [scale * p[1] for p in points], marker="o", markersize=3,
                    label=_row_name(r))
            ax.set_xlabel(curve["x_label"])
            ax.set_ylabel(curve["y_label"] + (" (%)" if scale == 100 else ""))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Patch masking, all detectors")
    fig.tight_layout()
    return _save(fig, path)


def plot_tde(recs: list[dict], path: Path) -> Path | None:
    """Box plots per detector of per-image TDE statistics (whiskers: 10th and 90th percentiles)."""
    with_dist = [r for r in recs if (r.get("tde") or {}).get("distribution")]
    if not with_dist:
        return None
    stats = sorted({k for r in with_dist for k in r["tde"]["distribution"]},
                   key=lambda k: (TDE_PREFERRED.index(k) if k in TDE_PREFERRED else len(TDE_PREFERRED), k))
    plt = _plt()
    fig, axes = plt.subplots(1, len(stats), figsize=(0.6 + max(3.2, 0.55 * len(with_dist) + 1.2) * len(stats), 4.2),
                             squeeze=False)
    for ax, stat in zip(axes[0], stats):
        boxes = []
        for r in with_dist:
            dist = r["tde"]["distribution"].get(stat)
            if not dist:
                continue
            q = dist["quantiles"]
            boxes.append({"whislo": q[1], "q1": q[2], "med": q[3], "q3": q[4], "whishi": q[5], "fliers": [q[0], q[6]],
                          "label": f"{_row_name(r)}\n(n={dist['n']})"})
        ax.bxp(boxes, showfliers=True)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.set_title(stat, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("TDE distribution per detector (fake images; box 25-75 %, whiskers 10-90 %, dots min/max)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_corruptions(recs: list[dict], path: Path) -> Path | None:
    with_curves = [r for r in recs if r.get("corruptions")]
    if not with_curves:
        return None
    kinds = sorted({k for r in with_curves for k in r["corruptions"]})
    plt = _plt()
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds) + 0.6, 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        ticks: list[Any] = []
        for r in with_curves:
            for x in (r["corruptions"].get(kind) or {}).get("x", []):
                if x not in ticks:
                    ticks.append(x)
        numeric = all(isinstance(x, (int, float)) for x in ticks)
        # A level that is not a number (JPEG's "none") puts the whole axis on evenly spaced categories.
        position = {x: (x if numeric else i) for i, x in enumerate(ticks)}
        for r in with_curves:
            curve = r["corruptions"].get(kind)
            if not curve:
                continue
            points = [(position[x], 100 * y) for x, y in zip(curve["x"], curve["y"]) if y is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=_row_name(r))
            ax.set_xlabel(curve["x_label"])
        if not numeric:
            ax.set_xticks(range(len(ticks)), [_num(x) for x in ticks])
        ax.set_title(kind)
        ax.set_ylabel("mean accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Corruption robustness, all detectors")
    fig.tight_layout()
    return _save(fig, path)


# -- pages -------------------------------------------------------------------------------------------------------

def _markdown_table(table: Table) -> str:
    from tabulate import tabulate

    return tabulate(table.rows, headers=table.headers, tablefmt="github", disable_numparse=True)


# Markdown syntax characters; '_' only where it could open or close emphasis (GFM ignores it inside words).
_MD_SPECIAL = re.compile(r"([\\`*\[\]|~]|(?<!\w)_|_(?!\w))")


def _md_cell(text: str) -> str:
    """Text as literal markdown: no line break (it would split a table row), no emphasis, code or link
    syntax, no raw HTML (``<script>``, ``<img onerror>``); the text still reads the same on the page."""
    flat = re.sub(r"[\r\n\t\v\f\u2028\u2029]+", " ", str(text))
    return html.escape(_MD_SPECIAL.sub(r"\\\1", flat), quote=False)


def render_markdown(benchmark: str, tables: list[Table], plots: dict[str, str], assets: list[tuple[str, str]],
                    problems: list[tuple[str, str]]) -> str:
    md = _md_cell
    lines = [f"# Leaderboard: {md(benchmark)}", "",
             "Built by `harness leaderboard build` from the records in [records/](records/); "
             "do not edit by hand. A sortable version with the plots is in [index.html](index.html).", ""]
    for table in tables:
        lines += [f"## {md(table.title)}", ""]
        if table.note:
            lines += [table.note, ""]
        safe = Table(table.title, [md(h) for h in table.headers],
                     [[md(c) for c in row] for row in table.rows], table.sort_keys)
        lines += [_markdown_table(safe), ""]
    # Link targets are the asset paths the schema allows (letters, digits, '_.+-') and the plots' names.
    if plots:
        lines += ["## Plots", ""]
        lines += [f"- [{md(title)}]({path})" for title, path in plots.items()]
        lines.append("")
    if assets:
        lines += ["## Figures from the runs", ""]
        lines += [f"- [{md(title)}]({path})" for title, path in assets]
        lines.append("")
    if problems:
        lines += ["## Records left out", ""]
        lines += [f"- {md(name)}: {md(message)}" for name, message in problems]
        lines.append("")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#1b1b1b}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
.wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f3f5f7;cursor:pointer;user-select:none}
th:first-child,td:first-child,td.text{text-align:left}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.reported td{color:#555;font-style:italic}
p.note{color:#555;font-size:.85rem}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{font-size:.85rem;color:#555}
""".strip()

# Click a header to sort by that column (numbers by value, missing values last); click again to reverse.
_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y), cmp;
        if (!isNaN(nx) && !isNaN(ny)) { cmp = nx - ny; } else { cmp = x < y ? -1 : x > y ? 1 : 0; }
        return asc ? cmp : -cmp;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
""".strip()


def _sort_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return str(value)


_TEXT_CELL = ' class="text"'


def _html_table(table: Table, kinds: list[str] | None = None) -> str:
    e = html.escape
    out = [f"<h2>{e(table.title)}</h2>"]
    if table.note:
        # The notes are written for markdown: `code` spans become <code>.
        note = re.sub(r"`([^`]+)`", r"<code>\1</code>", e(table.note))
        out.append(f'<p class="note">{note}</p>')
    out.append('<div class="wrap"><table class="sortable"><thead><tr>')
    out.append("".join(f'<th scope="col">{e(h)}</th>' for h in table.headers))
    out.append("</tr></thead><tbody>")
    for index, (row, keys) in enumerate(zip(table.rows, table.sort_keys)):
        cls = f' class="{e(kinds[index])}"' if kinds else ""
        cells = "".join(
            f'<td data-sort="{e(_sort_value(k))}"{_TEXT_CELL if isinstance(k, str) else ""}>{e(c)}</td>'
            for c, k in zip(row, keys))
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def render_html(benchmark: str, tables: list[tuple[Table, list[str] | None]], plots: dict[str, str],
                assets: list[tuple[str, str]], problems: list[tuple[str, str]]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>aigi-harness leaderboard: {e(benchmark)}</title>",
             f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
             f"<h1>Leaderboard: {e(benchmark)}</h1>",
             '<p class="note">Built by <code>harness leaderboard build</code> from the JSON records in '
             '<a href="records/">records/</a>. Click a column header to sort. Reported rows (in italics) are '
             "typed from the cited paper; reproduced rows come from <code>harness run</code>.</p>"]
    parts += [_html_table(table, kinds) for table, kinds in tables]
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [f'<figure><img src="{e(path)}" alt="{e(title)}"><figcaption>{e(title)}</figcaption></figure>'
                  for title, path in plots.items()]
    if assets:
        parts.append("<h2>Figures from the runs</h2>")
        parts += [f'<figure><img src="{e(path)}" alt="{e(title)}"><figcaption>{e(title)}'
                  f"</figcaption></figure>" for title, path in assets]
    if problems:
        parts.append("<h2>Records left out</h2><ul>")
        parts += [f"<li><code>{e(name)}</code>: {e(message)}</li>" for name, message in problems]
        parts.append("</ul>")
    parts += [f"<script>\n{_JS}\n</script>", "</body>", "</html>", ""]
    return "\n".join(parts)


def build_benchmark(bench_dir: Path) -> list[Path]:
    """Draw one benchmark's README.md, index.html and plots from its valid records; returns the files written."""
    entries = load_entries(bench_dir)
    recs = _sorted_records([e.record for e in entries if e.record is not None])
    problems = [(e.path.name, "; ".join(e.problems)) for e in entries if e.problems]
    benchmark = bench_dir.name
    names = {e.record["integrity"]["content_hash"]: e.path.name for e in entries if e.record is not None}
    plots_dir = bench_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    drawn: dict[str, Path | None] = {}
    if recs:
        drawn["Accuracy per generator, all records"] = plot_accuracy(benchmark, recs, plots_dir / "accuracy.png")
    reproduced = [r for r in recs if r["kind"] == "reproduced"]
    drawn["Masking curves, all detectors"] = plot_masking(reproduced, plots_dir / "masking.png")
    drawn["TDE distribution per detector"] = plot_tde(reproduced, plots_dir / "tde.png")
    drawn["Corruption curves"] = plot_corruptions(reproduced, plots_dir / "corruptions.png")
    plots = {title: f"plots/{path.name}" for title, path in drawn.items() if path is not None}
    written = [path for path in drawn.values() if path is not None]
    for stale in plots_dir.glob("*.png"):
        if stale not in written:
            stale.unlink()
    assets = [(f"{_row_name(r)}: {Path(a['path']).stem}", a["path"]) for r in recs for a in r.get("assets", [])]

    tables: list[tuple[Table, list[str] | None]] = []
    if recs:
        tables.append((accuracy_table(benchmark, recs), [r["kind"] for r in recs]))
        extra = masking_tables(reproduced) + [corruption_table(reproduced), tde_table(reproduced),
                                              calibration_table(recs)]
        tables += [(table, None) for table in extra if table is not None]
        tables.append((provenance_table(recs, names), [r["kind"] for r in recs]))
    readme = bench_dir / "README.md"
    index = bench_dir / "index.html"
    _write_atomic(readme, render_markdown(benchmark, [t for t, _ in tables], plots, assets, problems).encode(),
                  exclusive=False)
    _write_atomic(index, render_html(benchmark, tables, plots, assets, problems).encode(), exclusive=False)
    return [readme, index, *written]


def build(root: Path) -> list[Path]:
    _check_root(root)
    written = []
    for bench_dir in benchmarks(root):
        with _locked(bench_dir):
            written += build_benchmark(bench_dir)
    return written
