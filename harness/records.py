"""Leaderboard result records: a versioned JSON schema, its validator, and records built from run folders.

A record is one JSON file under ``leaderboards/<benchmark>/records/``. It holds who was evaluated (detector,
plugin version, configuration hash, weights sha256 or the training configuration), on what (suite, manifest hash,
benchmark protocol), the numbers (per-generator metrics, mAcc, std, worst generator, CI, TDE statistics, masking and
corruption summaries), where (harness version, git revision, seed, hardware, date) and whether it was reproduced
here or typed in from a paper (``kind``). ``integrity.content_hash`` is the sha256 of everything else, so an edited
record no longer validates. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema

from harness.checkpoints import sha256_file
from harness.errors import HarnessError

SCHEMA_ID = "aigi-harness/leaderboard-record"
SCHEMA_VERSION = 1
KINDS = ("reproduced", "reported")

# Names that end up in file names and folder names: no separators, no "..", no leading dot.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,79}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
ASSET_PATTERN = r"^assets/[A-Za-z0-9][A-Za-z0-9_.+-]*/[A-Za-z0-9][A-Za-z0-9_.+-]*\.(png|csv|md|json)$"

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_FRACTION = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_CURVE = {
    "type": "object",
    "required": ["x", "y"],
    "properties": {
        "x": {"type": "array", "items": {"type": ["number", "string"]}, "minItems": 1},
        "y": {"type": "array", "items": _NUMBER_OR_NULL, "minItems": 1},
        "x_label": {"type": "string"},
        "y_label": {"type": "string"},
    },
    "additionalProperties": False,
}

# JSON Schema, draft 2020-12, checked by the ``jsonschema`` package (numbers must also be finite).
RECORD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"{SCHEMA_ID}/v{SCHEMA_VERSION}",
    "title": "aigi-harness leaderboard record",
    "type": "object",
    "required": ["schema", "schema_version", "kind", "benchmark", "suite", "detector", "weights", "protocol",
                 "metrics", "integrity"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "schema_version": {"const": SCHEMA_VERSION},
        "kind": {"enum": list(KINDS)},
        "benchmark": {"type": "string", "pattern": NAME_PATTERN},
        "suite": {"type": "string", "pattern": NAME_PATTERN},
        "manifest_hash": {"type": ["string", "null"]},
        "detector": {
            "type": "object",
            "required": ["name", "label"],
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN},
                "label": {"type": "string", "minLength": 1},
                "plugin": {"type": ["string", "null"]},
                "plugin_version": {"type": ["string", "null"]},
                "distribution": {"type": ["string", "null"]},
                "config_hash": {"type": ["string", "null"]},
                "config": {"type": ["object", "null"]},
            },
            "additionalProperties": False,
        },
        "weights": {
            "type": "object",
            "required": ["sha256", "trained_in_run"],
            "properties": {
                "sha256": {"type": ["string", "null"], "pattern": SHA256_PATTERN},
                "trained_in_run": {"type": ["boolean", "null"]},
                "file": {"type": ["string", "null"]},
                "training_config": {"type": ["object", "null"]},
            },
            "additionalProperties": False,
        },
        "protocol": {
            "type": "object",
            "required": ["train_generators", "test_generators"],
            "properties": {
                "name": {"type": ["string", "null"]},
                "profile": {"type": ["string", "null"]},
                "train_generators": {"type": "array", "items": {"type": "string"}},
                "train_label": {"type": "string"},
                "test_generators": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                # how the images were scored where it is not as published in fp32 (filed with --force)
                "scoring": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "metrics": {
            "type": "object",
            "required": ["per_generator", "summary"],
            "properties": {
                "per_generator": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {
                        "type": "object",
                        "required": ["acc"],
                        "properties": {"acc": _FRACTION, "real_acc": _FRACTION, "fake_acc": _FRACTION},
                        "additionalProperties": _NUMBER_OR_NULL,
                    },
                },
                "summary": {
                    "type": "object",
                    "required": ["mAcc", "std"],
                    "properties": {
                        "mAcc": _FRACTION,
                        "std": {"type": ["number", "null"], "minimum": 0},
                        "worst_generator": {"type": ["string", "null"]},
                        "worst_acc": _FRACTION,
                        "mAcc_ci95": {
                            "type": ["array", "null"], "items": _FRACTION, "minItems": 2, "maxItems": 2,
                        },
                    },
                    "additionalProperties": _NUMBER_OR_NULL,
                },
            },
            "additionalProperties": False,
        },
        "tde": {
            "type": ["object", "null"],
            "properties": {
                "grid": {"type": ["integer", "null"], "minimum": 1},
                "stats": {"type": "object", "additionalProperties": _NUMBER_OR_NULL},
                "few_patch_bias_per_generator": {"type": "object", "additionalProperties": _NUMBER_OR_NULL},
                "distribution": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["n", "quantiles"],
                        "properties": {
                            "n": {"type": "integer", "minimum": 1},
                            "quantiles": {"type": "array", "items": {"type": "number"}, "minItems": 7,
                                          "maxItems": 7},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
        "masking": {
            "type": ["object", "null"],
            "properties": {
                "stats": {"type": "object", "additionalProperties": _NUMBER_OR_NULL},
                "random_acc": _CURVE,
                "recall_decline": _CURVE,
                "single_patch_acc_drop": _CURVE,
                "targeted_recall": {"type": "object", "additionalProperties": _CURVE},
            },
            "additionalProperties": False,
        },
        "corruptions": {
            "type": ["object", "null"],
            "additionalProperties": _CURVE,
        },
        "analyses": {"type": ["object", "null"]},
        # A reproduction protocol's reported numbers beside the reproduced ones (harness.weights.compare_reported).
        "reproduction": {
            "type": "array",
            "items": {"type": "object", "required": ["source", "metric", "status"],
                      "properties": {"source": {"type": "string"}, "metric": {"type": "string"},
                                     "status": {"type": "string"}}},
        },
        "provenance": {
            "type": ["object", "null"],
            "required": ["harness_version", "git_revision", "seed", "hardware", "date", "run_fingerprint"],
            "properties": {
                "harness_version": {"type": ["string", "null"]},
                "git_revision": {"type": ["string", "null"]},
                "seed": {"type": ["integer", "null"]},
                "hardware": {"type": ["object", "null"]},
                "device": {"type": ["string", "null"]},
                "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}"},
                "python": {"type": ["string", "null"]},
                "packages": {"type": ["object", "null"]},
                "run_fingerprint": {"type": "string", "pattern": SHA256_PATTERN},
                "skipped_files": {"type": "integer", "minimum": 0},
            },
            "additionalProperties": False,
        },
        "source": {
            "type": ["object", "null"],
            "required": ["citation", "table"],
            "properties": {
                "citation": {"type": "string", "minLength": 1},
                "short": {"type": "string", "minLength": 1},
                "table": {"type": "string", "minLength": 1},
                "document": {"type": "string"},
                "note": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "assets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "sha256"],
                "properties": {"path": {"type": "string", "pattern": ASSET_PATTERN},
                               "sha256": {"type": "string", "pattern": SHA256_PATTERN}},
                "additionalProperties": False,
            },
        },
        "integrity": {
            "type": "object",
            "required": ["algorithm", "content_hash"],
            "properties": {"algorithm": {"const": "sha256"},
                           "content_hash": {"type": "string", "pattern": SHA256_PATTERN}},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
    # A reproduced record carries its provenance; a reported one names its source instead.
    "allOf": [
        {"if": {"properties": {"kind": {"const": "reproduced"}}},
         "then": {"required": ["provenance"], "properties": {"provenance": {"type": "object"}}}},
        {"if": {"properties": {"kind": {"const": "reported"}}},
         "then": {"required": ["source"], "properties": {"source": {"type": "object"}}}},
    ],
}


# -- the schema validator ---------------------------------------------------------------------------------------

def _finite_number(checker, value: Any) -> bool:
    # bool is an int subclass in Python; JSON keeps them apart. NaN and inf are not JSON numbers.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_RecordValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("number", _finite_number),
)


def validate_schema(instance: Any, schema: dict | None = None) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (default: the record schema), as '$.json.path: message' lines."""
    validator = _RecordValidator(RECORD_SCHEMA if schema is None else schema)
    return sorted(f"{error.json_path}: {error.message}" for error in validator.iter_errors(instance))


# -- hashing, naming ---------------------------------------------------------------------------------------------

def canonical_json(value: Any) -> bytes:
    """The bytes that hashes are taken over: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def content_hash(record: dict) -> str:
    """sha256 over the record without its ``integrity`` block."""
    body = {k: v for k, v in record.items() if k != "integrity"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def seal(record: dict) -> dict:
    """Return a copy of ``record`` with its integrity hash set."""
    sealed = {k: v for k, v in copy.deepcopy(record).items() if k != "integrity"}
    sealed["integrity"] = {"algorithm": "sha256", "content_hash": content_hash(sealed)}
    return sealed


def dumps(record: dict) -> str:
    """The on-disk text of a record (stable: same record, same bytes)."""
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def record_filename(record: dict) -> str:
    """``<detector>-<YYYYMMDD>-<hash12>.json`` (reproduced) or ``<detector>-reported-<hash12>.json``.

    The content hash makes two contributors' records of the same detector on the same day differ.
    """
    name = record["detector"]["name"]
    short = record["integrity"]["content_hash"][:12]
    if record["kind"] == "reported":
        return f"{name}-reported-{short}.json"
    day = record["provenance"]["date"][:10].replace("-", "")
    return f"{name}-{day}-{short}.json"


def duplicate_key(record: dict) -> tuple:
    """Two records with the same key describe the same result (the same run, or the same paper cell)."""
    if record["kind"] == "reported":
        train = tuple(record["protocol"]["train_generators"])
        return ("reported", record["benchmark"], record["detector"]["label"], record["source"]["citation"],
                record["source"]["table"], train)
    return ("reproduced", record["benchmark"], record["provenance"]["run_fingerprint"])


def check_record(record: Any, *, file_name: str | None = None, benchmark_dir: Path | None = None) -> list[str]:
    """Schema, integrity hash, file name and asset checks; returns the problems (empty when the record is good)."""
    errors = validate_schema(record)
    if errors:
        return errors
    expected = content_hash(record)
    if record["integrity"]["content_hash"] != expected:
        errors.append("content hash does not match the record's content (the record was edited after sealing)")
        return errors
    if file_name is not None and file_name != record_filename(record):
        errors.append(f"file name should be {record_filename(record)} for this content")
    if benchmark_dir is not None:
        if benchmark_dir.name != record["benchmark"]:
            errors.append(f"record of benchmark '{record['benchmark']}' is filed under '{benchmark_dir.name}'")
        for asset in record.get("assets", []):
            target = resolve_inside(benchmark_dir, asset["path"])
            if target is None:
                errors.append(f"asset {asset['path']} points outside the leaderboard")
            elif not target.is_file():
                errors.append(f"asset {asset['path']} is missing")
            elif sha256_file(target) != asset["sha256"]:
                errors.append(f"asset {asset['path']} was changed (sha256 differs)")
    return errors


def resolve_inside(base: Path, relative: str) -> Path | None:
    """``base / relative`` if it stays inside ``base`` (no absolute path, no '..', no symlink out), else None."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or "\\" in relative or not pure.parts:
        return None
    base = base.resolve()
    target = (base / pure).resolve()
    if target != base and base not in target.parents:
        return None
    return target


#: Limits on a record file: far above any real record (a few tens of kB, nesting depth under 10), far below
#: what would make parsing, validating or hashing it slow or recurse past Python's stack.
MAX_RECORD_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 64


def nesting_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar: 0); counting stops past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_json_file(path: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file within :data:`MAX_RECORD_BYTES` and :data:`MAX_JSON_DEPTH`; strict JSON only
    (no NaN). Anything else is one HarnessError naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_RECORD_BYTES:
            raise HarnessError(f"{path}: not a readable {what}: {size} bytes, over the limit of "
                               f"{MAX_RECORD_BYTES} bytes")
        value = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except RecursionError:  # the C parser gave up first
        depth = MAX_JSON_DEPTH + 1
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise HarnessError(f"{path}: not a readable {what}: {exc}") from None
    else:
        depth = nesting_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise HarnessError(f"{path}: not a readable {what}: lists and objects nest deeper than "
                           f"{MAX_JSON_DEPTH} levels")
    return value


def load_record(path: Path) -> Any:
    """Parse a record file; unreadable, oversized or too deeply nested JSON is a HarnessError naming the file."""
    return read_json_file(path, "JSON record")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


# -- building a record from a run folder ---------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise HarnessError(f"{path.parent} is not a finished run folder: {path.name} is missing")
    data = read_json_file(path, "run file")
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a JSON object")
    return data


def _finite(value: Any) -> Any:
    """Numbers as JSON can hold them: NaN/inf (an undefined metric) become null; nested containers cleaned."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _numbers_only(metrics: dict) -> dict:
    """The numeric entries of a metrics dict (counts become floats, NaN becomes null)."""
    return {str(k): (None if v is None else _number(float(v))) for k, v in metrics.items()
            if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}


#: Protocol fields a run must share with the benchmark it is filed under (as ``Protocol.to_dict`` writes them).
PROTOCOL_FIELDS = ("suite", "train_suite", "train_generators", "test_generators", "profile", "weights",
                   "train_released_before", "test_released_after")


def check_protocol(results: dict, benchmark: str, where: Path, *, force: bool = False) -> str | None:
    """A run is filed only under the benchmark it was run on: the same suite, training and test generators,
    profile and checkpoint as the benchmark file, images scored as published (no ``eval.reencode`` or
    ``eval.match``) and in fp32; ``force`` files a subset or bf16 run anyway (the record says so)."""
    from harness.protocols import Protocol, protocol_layer

    ran = results.get("benchmark")
    name, layer, path = protocol_layer(benchmark)
    problems = []
    if path is None:  # no protocol file of that name: only the run's own benchmark name fits
        if ran != benchmark:
            raise HarnessError(f"{where} was run on benchmark '{ran}', not '{benchmark}': file it under '{ran}'")
    else:
        protocol = Protocol.from_config(layer["protocol"], name=name, path=path).to_dict()
        if results.get("suite") != protocol["suite"]:
            problems.append(f"suite '{results.get('suite')}' (the benchmark's is '{protocol['suite']}')")
        if protocol["test_generators"] != "all" and \
                list(results.get("test_generators") or []) != protocol["test_generators"]:
            problems.append(f"test generators {results.get('test_generators')} (the benchmark's are "
                            f"{protocol['test_generators']})")
        ran_protocol = results.get("protocol")
        if isinstance(ran_protocol, dict):  # results.json of any run since protocols were recorded
            problems += [f"protocol.{key} = {ran_protocol.get(key)!r} (the benchmark's is {protocol[key]!r})"
                         for key in PROTOCOL_FIELDS if key in ran_protocol and ran_protocol.get(key) != protocol[key]]
    if problems:
        raise HarnessError(f"{where} does not follow benchmark '{benchmark}': it has " + " and ".join(problems))
    controls = results.get("shortcut_controls") or {}
    altered = [f"eval.reencode = {controls['reencode']!r}"] if controls.get("reencode") else []
    altered += ["eval.match = true"] if controls.get("match") else []
    altered += [f"precision {results['precision']}"] if results.get("precision", "fp32") != "fp32" else []
    if altered and not force:
        raise HarnessError(f"{where} was scored with {', '.join(altered)}: the benchmark scores the published images "
                           "in fp32; pass --force to file it anyway (the record keeps the setting)")
    return ", ".join(altered) or None


def _scores(run_dir: Path):
    import pandas as pd

    path = run_dir / "scores.csv"
    if not path.is_file():
        raise HarnessError(f"{run_dir} has no scores.csv: the metrics cannot be recomputed, so it is not filed")
    try:
        # Generator names as written: "NA" or "007" must not become NaN or 7.0.
        frame = pd.read_csv(path, dtype={"generator": str, "split": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{path}: cannot read it: {exc}") from None
    missing = {"generator", "split", "label", "logit"} - set(frame.columns)
    if missing:
        raise HarnessError(f"{path}: columns {', '.join(sorted(missing))} are missing")
    frame["generator"] = frame["generator"].astype(str)
    frame["logit"] = pd.to_numeric(frame["logit"], errors="coerce")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = frame["logit"].isna() | ~frame["logit"].abs().lt(float("inf")) | ~labels.isin([0, 1])
    if bad.any():
        raise HarnessError(f"{path}: {int(bad.sum())} row(s) without a finite logit or a 0/1 label "
                           f"(first: line {int(bad.to_numpy().argmax()) + 2}): not scores the harness wrote")
    frame["label"] = labels.astype(int)
    return frame


def _differences(stored: Any, recomputed: Any, where: str) -> list[str]:
    if isinstance(recomputed, dict):
        if not isinstance(stored, dict):
            return [f"{where}: {stored!r} in results.json, a table from scores.csv"]
        # Every stored value must be recomputed; a metric this harness adds and an older run lacks is no edit.
        return [d for key in sorted(stored, key=str)
                for d in _differences(stored.get(key), recomputed.get(key), f"{where}.{key}")]
    if isinstance(recomputed, (list, tuple)):
        stored = stored if isinstance(stored, (list, tuple)) else []
        if len(stored) != len(recomputed):
            return [f"{where}: {stored!r} != {list(recomputed)!r}"]
        return [d for i, (a, b) in enumerate(zip(stored, recomputed)) for d in _differences(a, b, f"{where}[{i}]")]
    if _number(recomputed) is not None or _number(stored) is not None:
        a, b = _number(stored), _number(recomputed)
        if a is None or b is None or not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            return [f"{where}: {stored!r} in results.json, {recomputed!r} from scores.csv"]
        return []
    return [] if stored == recomputed else [f"{where}: {stored!r} in results.json, {recomputed!r} from scores.csv"]


def recompute_metrics(run_dir: Path, config: dict, results: dict, *, force: bool = False) -> dict:
    """The run's metrics computed again from its ``scores.csv``; refuses a results.json that disagrees
    (edited by hand) and, unless ``force``, a generator with no scored image of one class."""
    from harness.metrics import evaluate, missing_classes

    scores = _scores(run_dir)
    test = scores[scores["split"] == "test"]
    val = scores[scores["split"] == "val"]
    generators = [str(g) for g in results.get("test_generators") or []]
    lost = missing_classes(test, generators)
    if lost and not force:
        listed = "; ".join(f"{gen}: no scored {' or '.join(classes)} images" for gen, classes in lost.items())
        raise HarnessError(f"{run_dir}: {listed}: its accuracy would be one class's alone (see plan_warnings in "
                           "results.json); pass --force to file it anyway")
    ev = config.get("eval") or {}
    try:
        n_boot, seed = int(ev.get("bootstrap", 1000)), int(results.get("seed") or 0)
    except (TypeError, ValueError):
        raise HarnessError(f"{run_dir}: eval.bootstrap {ev.get('bootstrap')!r} or seed {results.get('seed')!r} "
                           "is not an integer") from None
    measured = _finite(evaluate(test, val if len(val) else None, generators=generators, n_boot=n_boot, seed=seed))
    stored = results.get("metrics") or {}
    differences = [d for part in ("per_generator", "summary")
                   for d in _differences(stored.get(part), measured[part], part)]
    if differences:
        raise HarnessError(f"{run_dir}: results.json disagrees with the scores in scores.csv ("
                           + "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3
                                                           else "") + "): it was edited; not filed")
    return measured


def build_record(run_dir: Path, benchmark: str | None = None, *, force: bool = False) -> dict:
    """A sealed ``reproduced`` record from a finished run folder (config.json, environment.json, results.json,
    scores.csv); its metrics are recomputed from scores.csv and must match results.json."""
    import harness

    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json")
    env = _read_json(run_dir / "environment.json")
    results = _read_json(run_dir / "results.json")
    if results.get("schema") != 1:
        raise HarnessError(f"{run_dir / 'results.json'}: unsupported results schema {results.get('schema')!r} "
                           "(this harness reads schema 1)")
    if not (results.get("metrics") or {}).get("per_generator"):
        raise HarnessError(f"{run_dir / 'results.json'} has no per-generator metrics: the run did not evaluate")
    scoring = check_protocol(results, benchmark or results.get("benchmark") or results.get("suite"), run_dir,
                             force=force)
    metrics = recompute_metrics(run_dir, config, results, force=force)
    per_gen_in = metrics.get("per_generator") or {}
    if not per_gen_in:
        raise HarnessError(f"{run_dir / 'results.json'} has no per-generator metrics: the run did not evaluate")
    per_generator = {str(gen): _numbers_only(values) for gen, values in per_gen_in.items()}
    missing = [gen for gen, values in per_generator.items() if "acc" not in values]
    if missing:
        raise HarnessError(f"{run_dir / 'results.json'}: no accuracy for generator(s) {', '.join(missing)}")
    summary_in = metrics.get("summary") or {}
    summary = _numbers_only(summary_in)
    summary["worst_generator"] = summary_in.get("worst_generator")
    ci = summary_in.get("mAcc_ci95")
    summary["mAcc_ci95"] = _finite(list(ci)) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
    for key in ("mAcc", "std"):
        summary.setdefault(key, None)

    detector_name = results.get("detector") or config.get("run", {}).get("detector")
    if not detector_name:
        raise HarnessError(f"{run_dir}: neither results.json nor config.json names the detector")
    env_plugins = env.get("plugins") or {}
    plugin_name = detector_name if detector_name in env_plugins else _owning_plugin(detector_name)
    plugin = env_plugins.get(plugin_name) or {}
    weights_in = results.get("weights") or {}
    trained = weights_in.get("trained_in_run")
    weights = {
        "sha256": weights_in.get("sha256"),
        "trained_in_run": trained,
        "file": Path(weights_in["path"]).name if weights_in.get("path") else None,
        "training_config": config.get("train") if trained else None,
    }
    bench = benchmark or results.get("benchmark") or results.get("suite")
    suite = results.get("suite") or config.get("run", {}).get("suite")
    analyses = _finite(results.get("analyses") or {})
    from harness.runs import config_hash

    record = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "kind": "reproduced",
        "benchmark": bench,
        "suite": suite,
        "manifest_hash": results.get("manifest_hash"),
        "detector": {
            "name": detector_name,
            "label": detector_name,
            "plugin": plugin_name if plugin else None,
            "plugin_version": plugin.get("version"),
            "distribution": plugin.get("distribution"),
            "config_hash": config_hash(config),
            "config": _finite(config.get("detector")),
        },
        "weights": weights,
        "protocol": {
            "name": results.get("benchmark"),
            "profile": (config.get("run") or {}).get("profile"),
            "train_generators": [str(g) for g in results.get("train_generators") or []],
            "test_generators": list(per_generator),
            **({"scoring": scoring} if scoring else {}),
        },
        "metrics": {"per_generator": per_generator, "summary": summary},
        "tde": tde_section(analyses.get("tde"), run_dir / "analyses" / "tde" / "per_image.csv"),
        "masking": masking_section(analyses.get("masking")),
        "corruptions": corruption_section(analyses.get("corruptions")),
        "analyses": analyses,
        "provenance": {
            "harness_version": (env.get("packages") or {}).get("aigi-harness") or harness.__version__,
            "git_revision": env.get("git_revision"),
            "seed": results.get("seed", env.get("seed")),
            "hardware": env.get("hardware"),
            "device": env.get("device"),
            "date": env.get("started") or "",
            "python": env.get("python"),
            "packages": env.get("packages"),
            # The same run added twice is a duplicate however the harness that reads it has changed.
            "run_fingerprint": hashlib.sha256(
                canonical_json(_finite({"config": config, "environment": env, "results": results}))
            ).hexdigest(),
            "skipped_files": len(results.get("skipped") or []),
        },
        "assets": [],
    }
    if results.get("reproduction"):
        record["reproduction"] = _finite(results["reproduction"])
    problems = [p for p in validate_schema(seal(record)) if not p.startswith("$.assets")]
    if problems:
        raise HarnessError(f"{run_dir}: cannot build a valid record: " + "; ".join(problems[:5]))
    return seal(record)


def _owning_plugin(detector_name: str) -> str | None:
    """The entry point that registers ``detector_name`` (one plugin may register several detectors)."""
    from harness.registry import get_plugins

    plugins = get_plugins()
    if detector_name not in plugins.registry["detector"]:
        return None
    return plugins.owner("detector", detector_name).name


# -- analysis summaries -> the record's fixed shapes -------------------------------------------------------------
# The analyses' summaries (harness/plugins/analyses/*.py, stored in results.json) are keyed for reading; the leaderboard's
# tables and plots need curves and distributions, so each section below is cut from one summary (and, for TDE, the
# per-image table the analysis wrote into the run folder).

TDE_DISTRIBUTION_STATS = ("effective_patches", "gini", "few_patch_bias")
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
_TDE_SETTINGS = ("grid", "fill", "images", "skipped")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _curve_from_mapping(mapping: Any, x_label: str, y_label: str) -> dict | None:
    """``{"0.1": 0.93, "0.2": 0.9}`` -> ``{"x": [0.1, 0.2], "y": [0.93, 0.9], ...}`` in ascending x."""
    if not isinstance(mapping, dict) or not mapping:
        return None
    try:
        points = sorted((float(k), _number(v)) for k, v in mapping.items())
    except (TypeError, ValueError):
        return None
    return {"x": [x for x, _ in points], "y": [y for _, y in points], "x_label": x_label, "y_label": y_label}


def tde_section(summary: Any, per_image_csv: Path | None = None) -> dict | None:
    """Mean statistics over fake images, per-generator few-patch bias, and the per-image distributions."""
    if not isinstance(summary, dict) or not summary:
        return None
    section: dict[str, Any] = {
        "grid": summary.get("grid") if isinstance(summary.get("grid"), int) else None,
        "stats": {k: _number(v) for k, v in summary.items()
                  if k not in _TDE_SETTINGS and (v is None or _number(v) is not None)},
    }
    per_generator = summary.get("few_patch_bias_per_generator")
    if isinstance(per_generator, dict):
        section["few_patch_bias_per_generator"] = {str(g): _number(v) for g, v in per_generator.items()}
    if per_image_csv is not None and per_image_csv.is_file():
        distribution = tde_distribution(per_image_csv)
        if distribution:
            section["distribution"] = distribution
    return section


def tde_distribution(per_image_csv: Path) -> dict:
    """Quantiles (min, 10, 25, 50, 75, 90 %, max) over fake images of a few per-image TDE statistics."""
    import pandas as pd

    try:
        frame = pd.read_csv(per_image_csv)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{per_image_csv}: cannot read the per-image TDE table: {exc}") from None
    if "label" in frame:
        frame = frame[frame["label"] == 1]
    out = {}
    for stat in TDE_DISTRIBUTION_STATS:
        if stat not in frame:
            continue
        values = pd.to_numeric(frame[stat], errors="coerce").dropna()
        if len(values):
            out[stat] = {"n": int(len(values)),
                         "quantiles": [round(float(values.quantile(q)), 6) for q in QUANTILES]}
    return out


def masking_section(summary: Any) -> dict | None:
    """Random masking (accuracy and recall decline by ratio), single-patch accuracy drop by size, targeted recall."""
    if not isinstance(summary, dict) or not summary:
        return None
    section: dict[str, Any] = {"stats": {k: _number(summary.get(k)) for k in ("recall_clean", "acc_clean")
                                         if k in summary}}
    curves = {
        "random_acc": ("acc", "masked ratio", "accuracy"),
        "recall_decline": ("recall_decline", "masked ratio", "recall decline ratio"),
        "single_patch_acc_drop": ("square_acc_drop", "masked square (fraction of side)", "accuracy drop"),
    }
    for name, (key, x_label, y_label) in curves.items():
        curve = _curve_from_mapping(summary.get(key), x_label, y_label)
        if curve:
            section[name] = curve
    targeted = summary.get("targeted_recall")
    if isinstance(targeted, dict):
        section["targeted_recall"] = {
            str(which): curve for which, values in sorted(targeted.items())
            if (curve := _curve_from_mapping(values, "masked fraction", f"recall, {which}-k by TDE masked"))}
    return section


_CONDITION = re.compile(r"^(?P<kind>[A-Za-z0-9_]+) (?:(?P<name>[A-Za-z_]+)=)?(?P<value>\S+)$")


def corruption_section(summary: Any) -> dict | None:
    """Mean accuracy over generators per corruption level, one curve per corruption ("jpeg q=90" -> jpeg, 90).

    JPEG's identity point ("jpeg none") keeps the x value "none": it is not a quality.
    """
    if not isinstance(summary, dict) or not isinstance(summary.get("mAcc"), dict):
        return None
    section: dict[str, dict] = {}
    for condition, value in summary["mAcc"].items():
        match = _CONDITION.match(str(condition))
        if not match:
            continue
        kind = match["kind"]
        try:
            x: float | str = float(match["value"])
        except ValueError:
            x = match["value"]
        curve = section.setdefault(kind, {"x": [], "y": [], "x_label": f"{kind} {match['name'] or 'level'}",
                                          "y_label": "mean accuracy"})
        curve["x"].append(x)
        curve["y"].append(_number(value))
    return section or None
