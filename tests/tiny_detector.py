"""A tiny detector (and analysis) for evaluation-engine tests, and a pluggy plugin object
that registers them.

Its logit is ``bias - gain * mean |x - nearest_up(x[::2, ::2])|``: the fakes of
``tests/fakedata.py`` are exact 2x nearest-neighbour upsamplings, so their residual is zero
and they score ``bias`` > 0, while textured real images score well below zero. ``gain`` and
``bias`` are parameters, so training moves them and checkpoints store them.
"""

from __future__ import annotations

import os
import signal

import pandas as pd
import torch
from torch import nn

from harness import hookimpl
from harness.analysis import Analysis, AnalysisContext, AnalysisResult
from harness.detector import Detector, InputPolicy


class TinyResidualDetector(Detector):
    name = "tiny-residual"
    description = "test detector: nearest-neighbour residual energy"
    defaults = {"size": 32, "gain": 60.0, "bias": 1.0, "invert": False}
    training = {"epochs": 1, "batch_size": 8, "lr": 1e-2}
    profiles = {"mini": {"detector": {"size": 32}, "train": {"epochs": 1}}}

    #: Forward calls of all instances in this process (tests count model use with it).
    calls = 0
    #: When set (an int), the process kills itself with SIGKILL at that forward call.
    kill_at_call: int | None = None

    def __init__(self, config=None):
        super().__init__(config)
        self.gain = nn.Parameter(torch.tensor(float(self.config["gain"])))
        self.bias = nn.Parameter(torch.tensor(float(self.config["bias"])))

    def input_policy(self, train: bool = False) -> InputPolicy:
        return InputPolicy(geometry="center_crop", size=int(self.config["size"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        if type(self).kill_at_call is not None and type(self).calls >= type(self).kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard kill: no cleanup, no flushing
        x = x.float()
        up = x[..., ::2, ::2].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        residual = (x - up).abs().mean(dim=(1, 2, 3))
        logit = self.bias - self.gain * residual
        return -logit if self.config["invert"] else logit


class CountingAnalysis(Analysis):
    """Counts the samples it is given per generator; its summary holds a NaN on purpose."""

    name = "tiny-count"

    def run(self, context: AnalysisContext) -> AnalysisResult:
        table = pd.DataFrame([s.to_dict() for s in context.samples]).groupby("generator").size().reset_index(name="n")
        return AnalysisResult(tables={"counts": table},
                              summary={"n": len(context.samples), "undefined": float("nan"),
                                       "eval_mode": not context.detector.training})


class TestPlugin:
    """Registered on the plugin manager by tests (``manager.register(TestPlugin())``)."""

    @hookimpl
    def register_detectors(self, register):
        register(TinyResidualDetector)

    @hookimpl
    def register_analyses(self, register):
        register(CountingAnalysis)


def install(plugins) -> None:
    """Add the tiny detector to a loaded :class:`harness.registry.Plugins` set."""
    if "tiny-test" in plugins.info:
        return
    from harness.registry import PluginInfo

    plugins.info["tiny-test"] = PluginInfo("tiny-test", __name__, None, None, __file__)
    plugin = TestPlugin()
    plugins.manager.register(plugin, name="tiny-test")
    plugin.register_detectors(register=lambda cls: plugins._register("detector", cls, "tiny-test"))
    plugin.register_analyses(register=lambda cls: plugins._register("analysis", cls, "tiny-test"))
