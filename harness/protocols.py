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
    train_released_before = "2023-01-01"       # optional: train on generators released before this date
    test_released_after = "2023-01-01"         # optional: test on those released on or after it
                                               #   (default: train_released_before)
    weights = "npr:progan-4class"              # optional: score this registry checkpoint, no training
    tolerance = 1.0                            # points; reproduced vs the entry's reported numbers

    [suite]                                     # optional: settings of the test suite
    preset = "default"

``--suite NAME`` resolves ``NAME.toml`` (``$HARNESS_BENCHMARKS``, then the shipped ones) when it exists, else the plain suite
(train on all its generators' train split, test on all). Any protocol key can be
overridden on the command line: ``--set protocol.train_generators='["tconv"]'``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from harness.config import load_toml
from harness.errors import HarnessError

BENCHMARKS_ENV = "HARNESS_BENCHMARKS"
SHIPPED_BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"
DEFAULT_METRICS = ["acc", "real_acc", "fake_acc", "ap", "auc"]
_GENERATORS = {"type": ["string", "array"], "items": {"type": "string"},
               "description": '"all" or a list of generator names'}
#: Types of the ``[protocol]`` keys (harness.config checks them with every other setting).
PROTOCOL_SETTINGS: dict[str, dict] = {
    "description": {"type": "string"}, "reference": {"type": "string"}, "name": {"type": "string"},
    "suite": {"type": "string"}, "train_suite": {"type": "string"}, "profile": {"type": ["string", "null"]},
    "train_generators": _GENERATORS, "test_generators": _GENERATORS,
    # the names themselves are checked by Protocol.from_config (harness.metrics imports scikit-learn)
    "metrics": {"type": "array", "items": {"type": "string"}, "description": "a list of metric names"},
    "analyses": {"type": "array", "items": {"type": "string"}, "description": "a list of analysis names"},
    "train_released_before": {"type": ["string", "null"], "description": "a date YYYY-MM-DD"},
    "test_released_after": {"type": ["string", "null"], "description": "a date YYYY-MM-DD"},
    "weights": {"type": ["string", "null"], "description": "a registry checkpoint name"},
    "tolerance": {"type": "number", "minimum": 0},
}
_KEYS = set(PROTOCOL_SETTINGS)


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
    #: A reproduction protocol: the registry checkpoint it scores (``--weights`` wins) and how
    #: many points the reproduced numbers may differ from the reported ones.
    weights: str | None = None
    tolerance: float = 1.0
    description: str = ""
    reference: str = ""
    path: str | None = None
    #: Time-ordered protocols: ISO dates compared with each generator's ``released`` fact.
    train_released_before: str | None = None
    test_released_after: str | None = None

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
            weights=section.get("weights"),
            tolerance=float(section.get("tolerance", 1.0)),
            description=section.get("description", ""),
            reference=section.get("reference", ""),
            path=path,
            train_released_before=_date(section.get("train_released_before"), "train_released_before", name),
            test_released_after=_date(section.get("test_released_after"), "test_released_after", name),
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
            "train_released_before": self.train_released_before, "test_released_after": self.test_released_after,
            "weights": self.weights, "tolerance": self.tolerance,
        }

    def resolve_generators(self, test_known: list[str], train_known: list[str], *,
                           test_info: dict[str, dict] | None = None,
                           train_info: dict[str, dict] | None = None) -> tuple[list[str], list[str]]:
        """The concrete (train, test) generator lists, checked against the suites' generators.

        With ``train_released_before`` (and ``test_released_after``, which defaults to it) the
        lists keep the generators released before (on or after) the date, by the suites'
        ``generator_info()``; generators without a release date are in neither.
        """
        train = _pick(self.train_generators, train_known, "train_generators", self.train_suite)
        test = _pick(self.test_generators, test_known, "test_generators", self.suite)
        before = self.train_released_before
        after = self.test_released_after or before
        if before:
            train = _by_date(train, train_info or {}, lambda d: d < before, f"released before {before}",
                             "train", self.train_suite)
        if after:
            test = _by_date(test, test_info or {}, lambda d: d >= after, f"released on or after {after}",
                            "test", self.suite)
        return train, test


def _date(value, key: str, name: str) -> str | None:
    """An ISO date (``YYYY-MM-DD``) as text, so that dates compare as strings."""
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise HarnessError(f"protocol '{name}': {key} must be a date YYYY-MM-DD, got {value!r}") from None


def _by_date(generators: list[str], info: dict[str, dict], keep, wanted: str, role: str, suite: str) -> list[str]:
    dated = {g: info[g]["released"] for g in generators if info.get(g, {}).get("released")}
    picked = [g for g in generators if g in dated and keep(dated[g])]
    if not picked:
        undated = [g for g in generators if g not in dated]
        known = ", ".join(f"{g} ({d})" for g, d in dated.items()) or "none"
        raise HarnessError(f"no {role} generator of suite '{suite}' is {wanted}; release dates known: {known}"
                           + (f"; without a date: {', '.join(undated)}" if undated else ""))
    return picked


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
