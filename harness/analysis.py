"""The analysis contract."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.config import merge

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from harness.detector import Detector
    from harness.suite import Sample


@dataclass
class AnalysisContext:
    """What an analysis gets: a ready detector (weights loaded, eval mode, on ``device``),
    the samples to analyse, the folder to write into and the resolved run configuration."""

    detector: "Detector"
    samples: list["Sample"]
    device: "torch.device"
    out_dir: Path
    config: dict[str, Any]


@dataclass
class AnalysisResult:
    """Named tables and figures; the harness writes each table as CSV and markdown."""

    tables: dict[str, "pd.DataFrame"] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class Analysis:
    """Base class of every analysis plugin."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    #: JSON Schema per key of ``defaults`` where its default value does not tell the type and range
    #: (harness.config checks the run's values against it before any work).
    settings: ClassVar[dict[str, dict]] = {}

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = merge(copy.deepcopy(self.defaults), config or {})

    @classmethod
    def skip_reason(cls, detector_cls: type["Detector"]) -> str | None:
        """Why this analysis does not apply to detectors of this class (None: it applies).
        The harness asks before training and reports a skip instead of failing mid-run."""
        return None

    def run(self, context: AnalysisContext) -> AnalysisResult:
        raise NotImplementedError
