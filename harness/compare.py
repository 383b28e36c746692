"""A finished run beside the published leaderboard rows of its benchmark, and what its number can mean.

A newcomer's first ``harness run`` ends with one row; alone it says nothing. Shown beside the rows on
``leaderboards/<benchmark>/`` (the mini rows are ``harness run`` results of every built-in detector; the paper
benchmarks hold the papers' reported rows), with a sentence on what a randomly initialised backbone can show,
it reads as what it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness import leaderboard
from harness import records as rec
from harness.errors import HarnessError

YOUR_RUN = "your run"

# The real thing: pretrained backbone, a real suite, a GPU. The suite root is the user's.
REAL_RUN = "harness run --detector {detector} --suite genimage --set suite.root=/path/to/GenImage --device cuda"


def leaderboard_roots() -> list[Path]:
    """``./leaderboards`` (where ``harness leaderboard`` writes by default), then a source checkout's."""
    checkout = Path(__file__).resolve().parent.parent / "leaderboards"
    roots = [Path.cwd() / "leaderboards", checkout]
    return list(dict.fromkeys(root.resolve() for root in roots if root.is_dir()))


def published_records(benchmark: str) -> tuple[Path | None, list[dict]]:
    """The good records of ``benchmark`` in the first leaderboard that has it; bad records are left out
    (``harness leaderboard validate`` names them)."""
    for root in leaderboard_roots():
        folder = root / benchmark
        if (folder / "records").is_dir():
            return folder, [entry.record for entry in leaderboard.load_entries(folder) if entry.record]
    return None, []


def run_record(run_dir: Path) -> dict:
    """The run's record as ``leaderboard add`` would file it, marked as the user's."""
    record = rec.build_record(Path(run_dir))
    record["kind"] = YOUR_RUN
    record["detector"] = {**record["detector"], "label": f"{record['detector']['name']} ({YOUR_RUN})"}
    return record


def random_init_note(results: dict[str, Any]) -> str | None:
    """One sentence when the run's backbone had no pretrained weights, else None."""
    provenance = results.get("detector_provenance") or {}
    if not provenance.get("random_init"):
        return None
    detector = results["detector"]
    profile = f" (profile '{results['profile']}')" if results.get("profile") else ""
    return (f"This {detector} ran on a randomly initialised backbone{profile}: it shows that the pipeline works "
            "end to end and how detectors rank on this suite's artefacts, not how well the method detects real "
            "generators, which rests on pretrained features and real data. The real run (pretrained backbone "
            "from the hub or a local file, see README 'Weights'): " + REAL_RUN.format(detector=detector))


def in_context(results: dict[str, Any]) -> str | None:
    """The text printed after a run: its row among the published ones, and the random-init note.

    None when the benchmark has no published leaderboard here or the run cannot be made a record.
    """
    benchmark = results.get("benchmark")
    folder, published = published_records(benchmark) if benchmark else (None, [])
    if folder is None:
        return None
    try:
        mine = run_record(Path(results["run_dir"]))
    except HarnessError as exc:
        return f"(not compared with {folder}: {exc})"
    table = leaderboard.accuracy_table(benchmark, leaderboard._sorted_records(published + [mine]))
    lines = [f"Your run beside the published {benchmark} leaderboard ({folder}; "
             f"{len(published)} records; rows marked '{YOUR_RUN}' are yours):", "",
             tabulate(table.rows, headers=table.headers, tablefmt="github"), ""]
    lines.extend(same_detector_notes(mine, published))
    note = random_init_note(results)
    if note:
        lines.extend(["", note])
    return "\n".join(lines)


def same_detector_notes(mine: dict, published: list[dict]) -> list[str]:
    """How far the run is from the published reproduced rows of the same detector, and why they may differ."""
    ours = mine["metrics"]["summary"].get("mAcc")
    notes = []
    for other in published:
        theirs = other["metrics"]["summary"].get("mAcc")
        if other["kind"] != "reproduced" or other["detector"]["name"] != mine["detector"]["name"] or None in (ours, theirs):
            continue
        revisions = (leaderboard._revision(other["provenance"].get("git_revision")),
                     leaderboard._revision(mine["provenance"].get("git_revision")))
        notes.append(
            f"Your {mine['detector']['name']}: mAcc {100 * ours:.1f}; the published row '{other['detector']['label']}': "
            f"{100 * theirs:.1f} ({100 * (ours - theirs):+.1f} points; harness revision {revisions[0]}, yours "
            f"{revisions[1]}). One training run on mini moves by a few points with the code revision, the thread "
            "count and the hardware (last-bit differences compound over training): compare rows made under one "
            "revision, or several seeds.")
    return notes
