"""Careless and hostile leaderboard use: every case is refused in one line or escaped, never a traceback,
never a quietly wrong table (issue 15)."""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path

import pytest
from test_records import make_run, reported_record

from harness import leaderboard as lb
from harness import records as rec
from harness.cli import main


def _add(root: Path, run: Path, *extra: str) -> int:
    return main(["leaderboard", "--root", str(root), "add", str(run), "--figure", "none", *extra])


def test_add_build_draws_the_pages_while_holding_the_benchmark_lock(tmp_path, monkeypatch, capsys):
    import fcntl

    built, original = [], lb.build_benchmark

    def build_and_check_lock(bench_dir):
        fd = os.open(bench_dir, os.O_RDONLY)
        try:  # another open file description: fails while `add` holds the lock
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        built.append(bench_dir)
        return original(bench_dir)

    monkeypatch.setattr(lb, "build_benchmark", build_and_check_lock)
    assert _add(tmp_path / "lb", make_run(tmp_path / "run"), "--build") == 0
    assert built == [tmp_path / "lb" / "mini"]
    assert "wrote " in capsys.readouterr().out


def test_a_hand_edited_results_json_is_refused(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    results["metrics"]["per_generator"]["vqvae"]["acc"] = 0.99
    (run / "results.json").write_text(json.dumps(results))
    assert _add(tmp_path / "lb", run) == 2
    err = capsys.readouterr().err
    assert "disagrees with the scores in scores.csv" in err and "per_generator.vqvae.acc" in err
    assert len(err.strip().splitlines()) == 1
    (run / "scores.csv").unlink()
    assert _add(tmp_path / "lb", run) == 2
    assert "no scores.csv" in capsys.readouterr().err
    assert not (tmp_path / "lb" / "mini" / "records").exists()


def test_a_run_of_another_suite_or_benchmark_is_not_filed_under_mini(tmp_path, capsys):
    other_suite = make_run(tmp_path / "folder-run", suite="folder")
    assert _add(tmp_path / "lb", other_suite, "--benchmark", "mini") == 2
    assert "does not follow benchmark 'mini'" in capsys.readouterr().err
    run = make_run(tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    results["benchmark"] = "my-protocol"
    (run / "results.json").write_text(json.dumps(results))
    assert _add(tmp_path / "lb", run, "--benchmark", "elsewhere") == 2
    assert "was run on benchmark 'my-protocol'" in capsys.readouterr().err
    assert _add(tmp_path / "lb", run) == 0  # under its own name it is fine


def test_a_generator_without_one_class_needs_force(tmp_path, capsys):
    run = make_run(tmp_path / "run", lost_class={"vqvae": 0})  # every real of vqvae unreadable
    assert _add(tmp_path / "lb", run) == 2
    err = capsys.readouterr().err
    assert "vqvae: no scored real images" in err and "--force" in err
    assert _add(tmp_path / "lb", run, "--force") == 0


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (Pillow reads the size from it without decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_figures_stay_inside_the_run_folder_and_within_the_size_limit(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "a.png").write_bytes((run / "analyses" / "tde" / "tde_mean_heatmaps.png").read_bytes())
    root = tmp_path / "lb"
    for pattern in ("../x/*.png", str(outside / "a.png"), "/etc/x.png"):
        assert main(["leaderboard", "--root", str(root), "add", str(run), "--figure", pattern]) == 2
        assert "relative to the run folder" in capsys.readouterr().err
    (run / "link.png").symlink_to(outside / "a.png")
    assert main(["leaderboard", "--root", str(root), "add", str(run), "--figure", "*.png"]) == 2
    assert "leads outside the run folder" in capsys.readouterr().err
    (run / "link.png").unlink()
    (run / "huge.png").write_bytes(_png_header(30000, 30000))
    assert main(["leaderboard", "--root", str(root), "add", str(run), "--figure", "huge.png"]) == 2
    assert f"over the limit of {lb.MAX_FIGURE_SIDE} pixels" in capsys.readouterr().err
    (run / "huge.png").write_bytes(b"GIF89a not a png")
    assert main(["leaderboard", "--root", str(root), "add", str(run), "--figure", "huge.png"]) == 2
    assert "not a readable PNG" in capsys.readouterr().err
    assert not (root / "mini" / "records").exists()


HOSTILE = ["<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "[click me](javascript:alert(1))",
           "two\nlines | and a pipe"]


def test_readme_and_page_escape_hostile_labels(tmp_path):
    root = tmp_path / "lb"
    for i, label in enumerate(HOSTILE):
        body = {k: v for k, v in reported_record("X", 0.9 - i / 100).items() if k != "integrity"}
        body["detector"] = {"name": f"evil{i}", "label": label}
        body["source"] = {"citation": f"paper {label}", "table": "Table 1"}
        lb.add_record(rec.seal(body), root)
    lb.build(root)
    readme = (root / "mini" / "README.md").read_text()
    page = (root / "mini" / "index.html").read_text()
    for raw in ("<script>alert", "<img", "two\nlines"):
        assert raw not in readme, raw
    assert not re.search(r"(?<!\\)\]\(javascript:", readme)  # an unescaped ']' would make it a link
    assert "<script>alert" not in page and "<img src=x" not in page
    # Every accuracy-table row is one line with as many cells as the header.
    lines = readme.split("## Accuracy per generator (%)")[1].split("\n\n")[2].splitlines()
    cells = {line.replace("\\|", "").count("|") for line in lines}
    assert len(lines) == 2 + len(HOSTILE) and len(cells) == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in readme and "\\[click me\\]" in readme


def test_a_deeply_nested_or_huge_record_file_is_reported_not_a_crash(tmp_path, capsys):
    root = tmp_path / "lb"
    assert _add(root, make_run(tmp_path / "run")) == 0
    records = root / "mini" / "records"
    (records / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (records / "deep2.json").write_text("[" * 80 + "]" * 80)  # parses, but nests past the limit
    (records / "big.json").write_text(" " * (rec.MAX_RECORD_BYTES + 1) + "{}")
    assert main(["leaderboard", "--root", str(root), "validate"]) == 1
    err = capsys.readouterr().err
    assert err.count("nest deeper than") == 2 and "over the limit" in err
    assert main(["leaderboard", "--root", str(root), "build"]) == 1  # built without them, and says so
    assert "deep.json" in (root / "mini" / "README.md").read_text()
    assert _add(root, make_run(tmp_path / "run2", seed=2)) == 0
    deep_results = make_run(tmp_path / "run3", seed=3)
    (deep_results / "results.json").write_text("[" * 100_000 + "]" * 100_000)
    assert _add(root, deep_results) == 2
    assert "nest deeper than" in capsys.readouterr().err


def test_a_root_that_is_a_file_is_one_line(tmp_path, capsys):
    root = tmp_path / "file"
    root.write_text("")
    for action in (["add", str(make_run(tmp_path / "run"))], ["validate"], ["build"]):
        assert main(["leaderboard", "--root", str(root), *action]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a file, not a folder" in err[0]


def test_scores_that_are_not_scores_are_refused(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    scores = (run / "scores.csv").read_text().splitlines()
    scores[3] = scores[3].rsplit(",", 1)[0] + ",not-a-number"
    (run / "scores.csv").write_text("\n".join(scores) + "\n")
    assert _add(tmp_path / "lb", run) == 2
    assert "without a finite logit or a 0/1 label (first: line 4)" in capsys.readouterr().err


@pytest.mark.parametrize("baseline", ["x", {"acc": "abc"}, [1, 2]])
def test_a_free_form_analyses_section_does_not_break_the_page_build(tmp_path, baseline):
    root = tmp_path / "lb"
    body = {k: v for k, v in reported_record("X", 0.9).items() if k != "integrity"}
    body["analyses"] = {"metadata-baseline": baseline}
    lb.add_record(rec.seal(body), root)
    assert lb.validate(root) == []
    lb.build(root)  # no crash: the odd value is shown as missing
    assert "## Accuracy per generator" in (root / "mini" / "README.md").read_text()


def test_a_run_of_another_protocol_or_altered_scoring_is_refused_and_force_labels_it(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    mini = {"suite": "mini", "train_suite": "mini", "train_generators": ["tconv"], "profile": "mini",
            "test_generators": ["tconv", "nearest", "bilinear", "pixelshuffle", "vqvae", "denoiser"], "weights": None,
            "train_released_before": None, "test_released_after": None}
    (run / "results.json").write_text(json.dumps({**results, "protocol": {**mini, "train_generators": "all"}}))
    assert _add(tmp_path / "lb", run) == 2
    assert "protocol.train_generators = 'all' (the benchmark's is ['tconv'])" in capsys.readouterr().err
    altered = {**results, "protocol": mini, "shortcut_controls": {"reencode": "jpeg:10", "match": False},
               "precision": "bf16-weights"}
    (run / "results.json").write_text(json.dumps(altered))
    assert _add(tmp_path / "lb", run) == 2
    assert "eval.reencode = 'jpeg:10', precision bf16-weights" in capsys.readouterr().err
    assert _add(tmp_path / "lb", run, "--force", "--build") == 0
    (record,) = [rec.load_record(p) for p in lb.record_files(tmp_path / "lb" / "mini")]
    assert record["protocol"]["scoring"] == "eval.reencode = 'jpeg:10', precision bf16-weights"
    readme = (tmp_path / "lb" / "mini" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| npr"))
    assert "reencode" in row and "jpeg:10" in row and "bf16-weights" in row


def test_an_older_run_without_newer_metrics_is_not_taken_for_an_edited_one(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    for values in [*results["metrics"]["per_generator"].values(), results["metrics"]["summary"]]:
        for key in ("ece", "ece_balanced", "nll", "brier"):
            values.pop(key, None)
    (run / "results.json").write_text(json.dumps(results))
    assert _add(tmp_path / "lb", run) == 0, capsys.readouterr().err


def test_generator_names_in_scores_are_read_as_written(tmp_path):
    (tmp_path / "scores.csv").write_text("path,generator,split,label,logit\na.png,NA,test,0,-1.0\nb.png,007,test,1,2.0\n")
    frame = rec._scores(tmp_path)
    assert list(frame["generator"]) == ["NA", "007"]
