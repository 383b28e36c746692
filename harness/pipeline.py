"""The ``harness run`` flow: protocol -> config -> run folder -> weights (or training) ->
scores -> metrics -> analyses -> ``results.json`` and the papers' per-generator table.

Under ``torchrun`` every rank trains (DDP) and scores its shard; rank 0 computes metrics,
runs the analyses and writes the results.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness import config as cfg
from harness import distributed
from harness.analysis import AnalysisContext
from harness.compare import in_context
from harness.checkpoints import sha256_file
from harness.errors import HarnessError
from harness.manifest import load_manifest
from harness.metrics import check_direction, evaluate, metrics_frame, missing_classes, plot_reliability
from harness.registry import get_analysis, get_detector, get_suite
from harness.protocols import Protocol, protocol_layer
from harness.reports import write_result
from harness.runs import Run, default_workers, run_folder_writes, seed_everything, select_device, start_run
from harness.scoring import PRECISIONS, default_cache_dir, effective_precision, score_samples
from harness.shortcuts import match_classes, per_format_metrics, reencoder
from harness.suite import Sample
from harness.training import TrainingStopped, train

log = logging.getLogger(__name__)

RESULTS_SCHEMA = 1


def resolve(args, extra_overrides: list[str] | None = None) -> tuple[dict, Protocol]:
    """The run configuration and the protocol for ``args`` (``--suite`` may name a benchmark).

    Layers: plugin defaults < detector profile < benchmark file < ``--config`` < ``--set``
    (+ ``extra_overrides``) < explicit flags. The protocol is read from the layered
    ``[protocol]`` table, so ``--set protocol.train_generators='["a"]'`` overrides it.
    """
    from harness.commands._common import resolve_config

    name, layer, path = protocol_layer(args.suite)
    overrides = list(args.overrides or []) + list(extra_overrides or [])
    file_config = cfg.load_toml(args.config) if getattr(args, "config", None) else {}
    # The protocol picks the suite and the detector profile, so read it before the full layering.
    early = cfg.resolve(file_config=cfg.merge(layer, file_config), overrides=overrides, report_unknown=False)
    protocol = Protocol.from_config(early.get("protocol", {}), name=name, path=path)
    args = copy.copy(args)
    args.overrides = overrides
    # A reproduction protocol scores its official checkpoint unless --weights, --set or --config names another.
    if protocol.weights and not getattr(args, "weights", None) and not (early.get("run") or {}).get("weights"):
        args.weights = protocol.weights
    config = resolve_config(args, suite_name=protocol.suite, profile=protocol.profile, layer=layer)
    if protocol.profile and config["run"]["profile"] is None:
        log.warning("detector '%s' has no '%s' profile: the protocol runs with its full recipe",
                    args.detector, protocol.profile)
    config["protocol"] = protocol.to_dict()
    config["run"]["benchmark"] = protocol.name
    if protocol.train_suite != protocol.suite:
        train_suite = get_suite(protocol.train_suite)
        config["train_suite"] = cfg.merge(train_suite.defaults, config.get("train_suite", {}))
        cfg.check_section("train_suite", config["train_suite"], train_suite.defaults,
                          cfg.declared_settings(train_suite))
    return config, protocol


def load_suite_samples(suite) -> tuple[list[Sample], str, list[tuple[str, str]]]:
    """A suite's samples through the manifest cache, the manifest's hash, and the entries under
    its root that the scan did not list, with the reason (``(path, reason)``).

    Rank 0 walks (or builds) the suite and writes the cache first; the other ranks then read it.
    """
    if distributed.is_main_process():
        manifest = load_manifest(suite)
    distributed.barrier()
    if not distributed.is_main_process():
        manifest = load_manifest(suite)
    return manifest.samples, manifest.hash, manifest.ignored


@dataclass
class Plan:
    """What one evaluation uses, decided before any model is built."""

    train_generators: list[str]
    test_generators: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    manifest_hash: str
    #: What the user should know about the selection (left-out images, one-class generators).
    warnings: list[str] = field(default_factory=list)
    #: (path, reason) of every file and folder under the suites' roots that the scan did not list.
    ignored: list[tuple[str, str]] = field(default_factory=list)


def _selection_warnings(test_all: list[Sample], test: list[Sample], test_gens: list[str]) -> list[str]:
    warnings = []
    left_out = Counter(s.generator for s in test_all if s.split == "test" and s.generator not in test_gens)
    if left_out:
        listed = ", ".join(f"{g} ({n})" for g, n in sorted(left_out.items()))
        warnings.append(f"{sum(left_out.values())} test images of generators outside the protocol are not "
                        f"scored: {listed}")
    classes: dict[str, set[int]] = {}
    for s in test:
        classes.setdefault(s.generator, set()).add(s.label)
    for generator in test_gens:
        present = classes.get(generator, set())
        if not present:
            warnings.append(f"generator {generator} has no test images: it is left out of mAcc")
        elif len(present) == 1:
            only = "fake" if present == {1} else "real"
            warnings.append(f"generator {generator} has only {only} test images: its accuracy is the {only} "
                            "images' accuracy alone, and it still counts in mAcc")
    return warnings


def scored_class_warnings(test: list[Sample], test_df: pd.DataFrame, test_gens: list[str]) -> list[str]:
    """Generators that had test images of both classes but lost every image of one in scoring (unreadable
    files): their accuracy is then the other class's alone, which the selection warnings cannot see."""
    planned: dict[str, set[int]] = {}
    for s in test:
        planned.setdefault(s.generator, set()).add(int(s.label))
    both = [g for g in test_gens if len(planned.get(g, ())) == 2]
    return [f"generator {gen} has no scored {' or '.join(classes)} test images (every one was skipped, see "
            f"'skipped'): its accuracy is the other class's alone"
            for gen, classes in missing_classes(test_df, both).items()]


def plan_samples(config: dict, protocol: Protocol, *, will_train: bool = True) -> Plan:
    """Pick the train, val and test samples of the protocol.

    When nothing is trained (``--weights``) and the training suite is another suite, it is
    only needed for the validation threshold: a missing training suite then costs that
    threshold (with a warning), not the evaluation.
    """
    test_suite = get_suite(protocol.suite)(config["suite"])
    if protocol.train_suite == protocol.suite:
        train_suite = test_suite
    else:
        train_suite = get_suite(protocol.train_suite)(config.get("train_suite", {}))
    train_gens, test_gens = protocol.resolve_generators(test_suite.generators(), train_suite.generators(),
                                                        test_info=test_suite.generator_info(),
                                                        train_info=train_suite.generator_info())
    test_all, test_hash, ignored = load_suite_samples(test_suite)
    if train_suite is test_suite:
        train_all, hashes = test_all, [test_hash]
    else:
        try:
            train_all, train_hash, train_ignored = load_suite_samples(train_suite)
            hashes = [train_hash, test_hash]
            ignored = list(dict.fromkeys(train_ignored + ignored))
        except HarnessError as exc:
            if will_train:
                raise
            log.warning("training suite '%s' unavailable, so no validation threshold: %s", protocol.train_suite, exc)
            train_all, hashes = [], [test_hash]
    test = [s for s in test_all if s.split == "test" and s.generator in test_gens]
    if not test:
        raise HarnessError(
            f"suite '{protocol.suite}' has no test images for generators {', '.join(test_gens)} "
            f"(splits found: {', '.join(sorted({s.split for s in test_all})) or 'none'})"
        )
    train = [s for s in train_all if s.split == "train" and s.generator in train_gens]
    val = [s for s in train_all if s.split == "val" and s.generator in train_gens]
    manifest_hash = hashes[0] if len(hashes) == 1 else hashlib.sha256("|".join(hashes).encode()).hexdigest()
    warnings = _selection_warnings(test_all, test, test_gens)
    for warning in warnings:
        log.warning(warning)
    return Plan(train_gens, test_gens, train, val, test, manifest_hash, warnings, ignored)


def _obtain_weights(detector, config: dict, plan: Plan, run: Run) -> dict[str, Any]:
    """Load ``--weights``, or train on the protocol's training generators; describe the weights."""
    weights = config["run"].get("weights")
    if weights:
        path = Path(weights)
        detector.load_weights(path)
        return {"path": str(path.resolve()), "sha256": sha256_file(path) if path.is_file() else None,
                "trained_in_run": False, **_weights_origin(config, path)}
    if not type(detector).trainable:
        # a detector that carries its own (official) weights, loaded when it is built
        return {"path": None, "sha256": None, "trained_in_run": False}
    if not plan.train:
        raise HarnessError(
            f"no training images for generator(s) {', '.join(plan.train_generators)}: pass --weights PATH "
            "or pick training generators with --set protocol.train_generators='[...]'"
        )
    best = Path(train(detector, plan.train, plan.val, config=config, run_dir=run.dir, device=run.device))
    detector.load_weights(best)
    return {"path": str(best.resolve()), "sha256": sha256_file(best), "trained_in_run": True}


def _weights_origin(config: dict, path: Path) -> dict[str, Any]:
    """What a loaded checkpoint was trained on, as far as it is known: the generators a harness
    checkpoint's sidecar names, else the registry entry's description; and which entry it is."""
    from harness import weights as registry
    from harness.checkpoints import checkpoint_meta

    name = config["run"].get("weights_entry")
    meta = checkpoint_meta(path)
    generators = meta.get("train_generators") if isinstance(meta.get("train_generators"), list) else None
    trained_on = ", ".join(generators) if generators else (registry.get(name).trained_on if name else None)
    return {"entry": name, "train_generators": generators or [], "trained_on": trained_on,
            "setting_conflicts": config["run"].get("weights_conflicts", [])}


def reproduction(entry_name: str | None, protocol: Protocol, measured: dict) -> list[dict[str, Any]]:
    """The registry entry's reported numbers for ``protocol`` beside the measured ones (see
    :func:`harness.weights.compare_reported`); empty when there are none."""
    from harness import weights as registry

    if not entry_name:
        return []
    return [registry.compare_reported(r, measured, protocol.tolerance)
            for r in registry.get(entry_name).reported if r.protocol == protocol.name]


def check_compile(config: dict, device) -> None:
    """Refuse ``run.compile`` with the CPU bf16 copy before any work (training) is done."""
    if config["run"].get("compile") and \
            effective_precision(str(config.get("eval", {}).get("precision", "fp32")), device) == "bf16-weights":
        raise HarnessError("run.compile cannot be combined with eval.precision=bf16 on CPU, which scores a "
                           "bf16 copy of the model: drop one of the two")


def prepare_for_inference(detector, config: dict) -> None:
    """Before scoring and analyses: fold batch norms into the convolutions before them
    (``eval.fuse``, on by default; exact in eval mode, same score-cache key), then
    ``run.compile``. Training is over by then: a folded detector refuses to train."""
    if config.get("eval", {}).get("fuse", True):
        folded = detector.fold_batchnorm()
        if folded:
            log.info("folded %d batch norms into their convolutions for inference (eval.fuse = false: keep them)",
                     folded)
    compile_for_inference(detector, config)


def compile_for_inference(detector, config: dict) -> None:
    """``run.compile``: torch.compile the detector's forward in place, for scoring and analyses
    (in place, so its state dict, and with it every cache key, stays the same)."""
    if config["run"].get("compile"):
        log.info("torch.compile: the first batches of each input shape are slow while it compiles")
        detector.compile()


#: Types and ranges of the ``[eval]`` settings (none has a default of its own: batch_size
#: falls back to train.batch_size, workers to min(4, CPU cores)).
EVAL_SETTINGS: dict[str, dict] = {
    "batch_size": {"type": "integer", "minimum": 1},
    "workers": {"type": "integer", "minimum": 0},
    "cache": {"type": "boolean"},
    "cache_dir": {"type": ["string", "null"]},
    "precision": {"enum": list(PRECISIONS)},
    "bootstrap": {"type": "integer", "minimum": 1},
    "reencode": {"type": ["string", "null"], "description": "jpeg:Q, webp:Q or png"},
    "match": {"type": "boolean"},
    "fuse": {"type": "boolean"},
}


def _eval_settings(config: dict) -> dict[str, Any]:
    ev = config.get("eval", {})
    cache_dir = None if ev.get("cache", True) is False else Path(ev.get("cache_dir") or default_cache_dir())
    return {
        "batch_size": int(ev.get("batch_size", config.get("train", {}).get("batch_size", 64))),
        "workers": int(ev.get("workers", default_workers())),
        "cache_dir": cache_dir,
        "precision": str(ev.get("precision", "fp32")),
    }


def shortcut_controls(config: dict, plan: Plan) -> tuple[dict[str, Any], dict[str, Any]]:
    """``eval.reencode`` (a transform applied to both classes before scoring) and ``eval.match``
    (the test split cut to images matched on format and file size across classes; ``plan``
    is changed in place). Returns what the results record and the scoring arguments."""
    ev = config.get("eval", {})
    controls = {"reencode": ev.get("reencode") or None, "match": bool(ev.get("match", False))}
    scoring: dict[str, Any] = {}
    if controls["reencode"]:
        transform, key = reencoder(controls["reencode"])
        scoring = {"transform": transform, "transform_key": key}
    if controls["match"]:
        plan.test, notes = match_classes(plan.test)
        plan.warnings += notes
        if not plan.test:
            raise HarnessError("eval.match left no test images: no generator has real and fake images of the same "
                               "format and file size (run 'harness suite info' to see the mix, or try eval.reencode)")
    return controls, scoring


def suite_folders(config: dict) -> list[Path]:
    """The folders the protocol's suites are read from, as set by ``suite.root`` or the suite's root
    variable (a CSV suite: its file's folder)."""
    protocol = config.get("protocol") or {}
    folders = []
    for name, section in ((protocol.get("suite"), config.get("suite")),
                          (protocol.get("train_suite"), config.get("train_suite", config.get("suite")))):
        if not name:
            continue
        env = getattr(get_suite(name), "root_env", None)
        raw = (section or {}).get("root") or (os.environ.get(env) if env else None)
        if raw:
            root = Path(str(raw)).expanduser().resolve()
            folders.append(root.parent if root.is_file() else root)
    return folders


def _start(config: dict, label: str) -> Run:
    """Rank 0 creates the run folder (outside the suites' folders); every rank then uses that same folder."""
    main = distributed.is_main_process()
    run = start_run(config, label, is_main_process=main, outside=suite_folders(config)) if main else None
    run_dir = distributed.broadcast(str(run.dir) if main else None)
    if not main:
        config = copy.deepcopy(config)
        config["run"]["dir"] = run_dir
        run = start_run(config, label, is_main_process=False)
    run.device = distributed.rank_device(run.device)
    return run


def _close_log(run: Run) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run.dir.resolve():
            root.removeHandler(handler)
            handler.close()


def execute(config: dict, protocol: Protocol, *, label: str | None = None) -> dict[str, Any] | None:
    """Run one evaluation; returns the results (rank 0) or ``None`` (other ranks)."""
    detector_name = config["run"]["detector"]
    detector_cls = get_detector(detector_name)
    analyses = [(name, get_analysis(name)) for name in protocol.analyses]  # unknown names fail before training
    skipped = {name: reason for name, cls in analyses if (reason := cls.skip_reason(detector_cls))}
    analyses = [(name, cls) for name, cls in analyses if name not in skipped]
    distributed.init_from_env(select_device(str(config["run"].get("device", "auto"))))
    config["eval"].setdefault("workers", default_workers())  # recorded in config.json as chosen
    run = _start(config, label or f"{detector_name}-{protocol.name}")
    main = distributed.is_main_process()
    try:
        check_compile(config, run.device)
        for name, reason in skipped.items():
            log.warning("analysis '%s' skipped: %s", name, reason)
        will_train = not config["run"].get("weights") and detector_cls.trainable
        plan = plan_samples(config, protocol, will_train=will_train)
        controls, control_scoring = shortcut_controls(config, plan)
        # Building a suite may draw random numbers; the model's initialisation must not depend on it.
        seed_everything(run.seed)
        detector = detector_cls(config["detector"])
        weights = _obtain_weights(detector, config, plan, run)
        prepare_for_inference(detector, config)
        settings = _eval_settings(config)
        settings.update(control_scoring)
        test_df = score_samples(detector, plan.test, device=run.device, desc="test", **settings)
        if not len(test_df):  # every rank gets the same frame, so all stop here together
            skipped = test_df.attrs.get("skipped") or [("-", "no reason recorded")]
            raise HarnessError(f"none of the {len(plan.test)} test images could be scored, so there is nothing "
                               f"to report; e.g. {skipped[0][0]}: {skipped[0][1]}")
        val_df = score_samples(detector, plan.val, device=run.device, desc="val", **settings) if plan.val else None
        if not main:
            distributed.barrier()  # wait for rank 0's analyses and reports
            return None
        results = _report(config, protocol, plan, run, detector, weights, test_df, val_df, analyses, skipped, controls)
        distributed.barrier()
        return results
    finally:
        if main:
            _close_log(run)


def _report(config, protocol, plan, run, detector, weights, test_df, val_df, analyses,
            analyses_skipped: dict[str, str], controls: dict[str, Any] | None = None) -> dict[str, Any]:
    ev = config.get("eval", {})
    for warning in scored_class_warnings(plan.test, test_df, plan.test_generators):
        log.warning(warning)
        plan.warnings.append(warning)
    measured = evaluate(test_df, val_df, generators=plan.test_generators,
                        n_boot=int(ev.get("bootstrap", 1000)), seed=run.seed)
    if val_df is not None and len(val_df):
        direction = check_direction(val_df["label"], val_df["logit"],
                                    where=f"the val split of training generator(s) {', '.join(plan.train_generators)}")
    else:
        on_train = test_df[test_df["generator"].isin(plan.train_generators)]
        direction = check_direction(on_train["label"], on_train["logit"],
                                    where=f"the test split of generator(s) {', '.join(plan.train_generators)}")

    summaries = {}
    for name, analysis_cls in analyses:
        out_dir = run.dir / "analyses" / name
        with run_folder_writes(run.dir):
            out_dir.mkdir(parents=True, exist_ok=True)
        analysis = analysis_cls(config.get("analyses", {}).get(name, {}))
        context = AnalysisContext(detector=detector.eval(), samples=plan.test, device=run.device,
                                  out_dir=out_dir, config=config)
        result = analysis.run(context)
        with run_folder_writes(run.dir):
            write_result(result, run.dir / "analyses", name)
        summaries[name] = result.summary

    skipped = list(test_df.attrs.get("skipped", [])) + (list(val_df.attrs.get("skipped", [])) if val_df is not None else [])
    frames = [test_df] + ([val_df] if val_df is not None else [])
    with run_folder_writes(run.dir):
        pd.concat(frames, ignore_index=True).to_csv(run.dir / "scores.csv", index=False)
        metrics_frame(measured["per_generator"], measured["overall"]).to_csv(run.dir / "metrics.csv")
        plot_reliability(test_df, plan.test_generators, run.dir / "reliability.png",
                         title=f"Reliability of {detector.name} on {protocol.name}")
    results = {
        "schema": RESULTS_SCHEMA,
        "detector": detector.name,
        "suite": protocol.suite,
        "benchmark": protocol.name,
        "protocol": protocol.to_dict(),
        "profile": config["run"].get("profile"),
        # What the model was trained on: the protocol's generators when this run trained it, else
        # what the checkpoint records (empty when unknown), never the generators it is tested on.
        "train_generators": plan.train_generators if weights.get("trained_in_run") or weights["path"] is None
        else weights.get("train_generators", []),
        "test_generators": plan.test_generators,
        "weights": weights,
        # Where the backbone's weights came from (hub, local file, or random init when asked for).
        "detector_provenance": getattr(detector, "provenance", None),
        "manifest_hash": plan.manifest_hash,
        "plan_warnings": plan.warnings,
        "metrics": measured,
        # eval.reencode / eval.match as applied, and the metrics per source format (file extension)
        "shortcut_controls": controls or {"reencode": None, "match": False},
        "per_format": per_format_metrics(test_df),
        "direction_check": direction,
        "analyses": summaries,
        "analyses_skipped": analyses_skipped,
        "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
        # entries under the suite roots the scan did not list (other files, fifos, symlink loops, ...)
        "ignored": [{"path": path, "reason": reason} for path, reason in plan.ignored],
        "counts": {"train": len(plan.train), "val": len(plan.val), "test": len(plan.test),
                   "scored_test": len(test_df), "from_cache_test": test_df.attrs.get("cached", 0)},
        # Reported beside reproduced, for a registry checkpoint with numbers for this protocol.
        "reproduction": reproduction(weights.get("entry"), protocol, measured),
        "score_cache_key": test_df.attrs.get("cache_key"),
        # fp32 unless bf16 was asked for (eval.precision): what the scores were computed in
        "precision": effective_precision(str(ev.get("precision", "fp32")), run.device),
        "seed": run.seed,
        "run_dir": str(run.dir),
    }
    # not Run.write_json: its sorted keys would lose the table order of per_generator
    table = paper_table({detector.name: measured}, plan.test_generators)
    with run_folder_writes(run.dir):
        tmp = run.dir / "results.json.tmp"
        tmp.write_text(json.dumps(json_safe(results), indent=2, allow_nan=False, default=str))
        tmp.replace(run.dir / "results.json")
        run.dir.joinpath("table.md").write_text(tabulate(table, headers="keys", tablefmt="github", floatfmt=".1f") + "\n")
    return results


def json_safe(value):
    """NaN and infinities (an analysis summary may hold them) become ``None``: strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return json_safe(value.item())  # numpy / torch scalars
    return value


def paper_table(results_by_detector: dict[str, dict], generators: list[str]) -> pd.DataFrame:
    """The papers' shape: one row per detector; columns the generators' accuracy, mAcc, std (in %)."""
    rows = []
    for name, measured in results_by_detector.items():
        row = {"detector": name}
        for gen in generators:
            acc = measured["per_generator"].get(gen, {}).get("acc")
            row[gen] = None if acc is None else 100 * acc
        summary = measured["summary"]
        row["mAcc"] = None if summary["mAcc"] is None else 100 * summary["mAcc"]
        row["std"] = None if summary["std"] is None else 100 * summary["std"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("detector")


def print_results(results: dict[str, Any], protocol: Protocol) -> None:
    measured = results["metrics"]
    print(f"\n{results['benchmark']}: {protocol.description or results['suite']}")
    weights = results.get("weights") or {}
    if weights.get("path") and not weights.get("trained_in_run"):
        print(f"weights: {weights.get('entry') or weights['path']} (not trained in this run; trained on: "
              f"{weights.get('trained_on') or 'not recorded'}); accuracy (%) at P(fake) = 0.5\n")
    else:
        print(f"trained on: {', '.join(results['train_generators'])}; accuracy (%) at P(fake) = 0.5\n")
    print(tabulate(paper_table({results["detector"]: measured}, results["test_generators"]),
                   headers="keys", floatfmt=".1f", missingval="-"))
    per_gen = metrics_frame(measured["per_generator"], measured["overall"])[protocol.metrics]
    print()
    print(tabulate(per_gen, headers="keys", floatfmt=".4f", missingval="-"))
    summary = measured["summary"]
    ci = summary.get("mAcc_ci95")
    if ci:
        print(f"\nmAcc 95% CI (bootstrap): [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]; "
              f"worst generator: {summary['worst_generator']} ({100 * summary['worst_acc']:.1f})")
    for repro in results.get("reproduction") or []:
        print(f"\nreported ({repro['source']}) vs reproduced, {repro['metric']} (%): {repro['status']}")
        rows = [(g, repro["reported"][g], repro["reproduced"].get(g)) for g in repro["reported"]]
        rows.append(("mean", repro["reported_mean"], repro["reproduced_mean"]))
        print(tabulate(rows, headers=["generator", "reported", "reproduced"], floatfmt=".2f", missingval="-"))
    if results["skipped"]:
        print(f"{len(results['skipped'])} files could not be scored (listed in results.json)")
    if results.get("ignored"):
        print(f"{len(results['ignored'])} files or folders under the suite root were not listed "
              "(each with its reason under 'ignored' in results.json)")
    print(f"run folder: {results['run_dir']}")


def run_from_args(args) -> int:
    config, protocol = resolve(args)
    try:
        results = execute(config, protocol)
    except TrainingStopped as stop:
        if distributed.is_main_process():
            print(f"{stop}; rerun with --set run.dir={stop.last.parent.parent} to continue")
        return 0
    finally:
        distributed.destroy()
    if results is not None:
        print_results(results, protocol)
        context = in_context(results)
        if context:
            print("\n" + context)
    return 0
