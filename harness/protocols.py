"""Benchmark protocols: declarative TOML files, shipped in ``harness/benchmarks/``.

A protocol file is a configuration layer like ``--config`` (it sits just below it) whose
``[protocol]`` table says what to train on and what to test on::

    [protocol]
    description = "..."
    reference = "..."
    suite = "genimage"                         # the test suite
    train_suite = "genimage"                   # optional, default: suite
    train_generators = ["stable_diffusion_v_1_4"]   # or "all"
    test_generators = "all"                    # or a list, in table order
    metrics = ["acc", "real_acc", "fake_acc", "ap", "auc"]
    analyses = ["tde"]
    profile = "mini"                           # optional detector profile

    [suite]                                     # optional: settings of the test suite
    preset = "default"

``--suite NAME`` resolves ``NAME.toml`` (``$HARNESS_BENCHMARKS``, then the shipped ones) when it exists, else the plain suite
(train on all its generators' train split, test on all). Any protocol key can be
overridden on the command line: ``--set protocol.train_generators='["tconv"]'``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import load_toml
from harness.errors import HarnessError

BENCHMARKS_ENV = "HARNESS_BENCHMARKS"
SHIPPED_BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"
DEFAULT_METRICS = ["acc", "real_acc", "fake_acc", "ap", "auc"]
_KEYS = {"description", "reference", "suite", "train_suite", "train_generators", "test_generators", "metrics",
         "analyses", "profile", "name"}


def benchmark_dirs() -> list[Path]:
    """Where protocol files are looked up, first match wins: ``$HARNESS_BENCHMARKS`` (a path
    list, for a lab's own protocols), then the ones shipped in the package.

    The working directory is not searched: a stray ``benchmarks/genimage.toml`` beside the user
    must not silently replace the published protocol.
    """
    dirs = [Path(p) for p in os.environ.get(BENCHMARKS_ENV, "").split(os.pathsep) if p]
    dirs.append(SHIPPED_BENCHMARKS)
    return dirs


def find_benchmark(name: str) -> Path | None:
    for folder in benchmark_dirs():
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


def available_benchmarks() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in benchmark_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


@dataclass
class Protocol:
    name: str
    suite: str
    train_suite: str
    train_generators: list[str] | str = "all"
    test_generators: list[str] | str = "all"
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    analyses: list[str] = field(default_factory=list)
    profile: str | None = None
    description: str = ""
    reference: str = ""
    path: str | None = None

    @classmethod
    def from_config(cls, section: dict[str, Any], *, name: str, path: str | None = None) -> "Protocol":
        unknown = set(section) - _KEYS
        if unknown:
            raise HarnessError(f"protocol '{name}': unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
        if not section.get("suite"):
            raise HarnessError(f"protocol '{name}' names no suite ([protocol] suite = \"...\")")
        proto = cls(
            name=section.get("name", name),
            suite=section["suite"],
            train_suite=section.get("train_suite") or section["suite"],
            train_generators=_generator_list(section.get("train_generators", "all"), "train_generators", name),
            test_generators=_generator_list(section.get("test_generators", "all"), "test_generators", name),
            metrics=list(section.get("metrics", DEFAULT_METRICS)),
            analyses=list(section.get("analyses", [])),
            profile=section.get("profile"),
            description=section.get("description", ""),
            reference=section.get("reference", ""),
            path=path,
        )
        from harness.metrics import SCORE_METRICS  # scikit-learn: not for 'harness list'

        bad = [m for m in proto.metrics if m not in SCORE_METRICS]
        if bad:
            raise HarnessError(f"protocol '{name}': unknown metrics {bad}; known: {', '.join(SCORE_METRICS)}")
        return proto

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "suite": self.suite, "train_suite": self.train_suite,
            "train_generators": self.train_generators, "test_generators": self.test_generators,
            "metrics": self.metrics, "analyses": self.analyses, "profile": self.profile,
            "description": self.description, "reference": self.reference,
        }

    def resolve_generators(self, test_known: list[str], train_known: list[str]) -> tuple[list[str], list[str]]:
        """The concrete (train, test) generator lists, checked against the suites' generators."""
        return (
            _pick(self.train_generators, train_known, "train_generators", self.train_suite),
            _pick(self.test_generators, test_known, "test_generators", self.suite),
        )


def _generator_list(value, key: str, name: str) -> list[str] | str:
    if value == "all":
        return "all"
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise HarnessError(f"protocol '{name}': {key} must be \"all\" or a non-empty list of generator names, got {value!r}")


def _pick(wanted, known: list[str], key: str, suite: str) -> list[str]:
    if wanted == "all":
        return list(known)
    missing = [g for g in wanted if g not in known]
    if missing:
        raise HarnessError(
            f"{key}: generator(s) {', '.join(missing)} not in suite '{suite}'; its generators are: {', '.join(known)}"
        )
    return list(wanted)


def protocol_layer(suite_or_benchmark: str) -> tuple[str, dict[str, Any], str | None]:
    """``(name, configuration layer, protocol file)`` for ``--suite NAME``.

    A benchmark file is read as a configuration layer; a plain suite becomes the layer
    ``{"protocol": {"suite": NAME}}`` (train on all its generators, test on all).
    """
    path = find_benchmark(suite_or_benchmark)
    if path is None:
        return suite_or_benchmark, {"protocol": {"suite": suite_or_benchmark}}, None
    layer = load_toml(path)
    if not isinstance(layer.get("protocol"), dict):
        raise HarnessError(f"benchmark file {path} has no [protocol] table")
    return suite_or_benchmark, layer, str(path)
