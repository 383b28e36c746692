"""The three hook families a plugin can implement.

Every hook takes a ``register`` callback and calls it once per class it contributes
(the style of simonw's ``llm``). A plugin is any module registered under the ``harness``
entry-point group; built-in plugins under ``harness/plugins/`` register exactly the same way::

    from harness import hookimpl
    from harness.detector import Detector

    class MyDetector(Detector):
        name = "mine"
        ...

    @hookimpl
    def register_detectors(register):
        register(MyDetector)
"""

import pluggy

hookspec = pluggy.HookspecMarker("harness")
hookimpl = pluggy.HookimplMarker("harness")


@hookspec
def register_suites(register):
    """Register dataset suites: call ``register(SuiteClass)`` for each.

    A suite (a subclass of :class:`harness.suite.Suite`) names its generators and splits and
    yields :class:`harness.suite.Sample` records: path, label (0 real / 1 fake), generator,
    split, and the path of the paired real image when the dataset has one.
    """


@hookspec
def register_detectors(register):
    """Register detectors: call ``register(DetectorClass)`` for each.

    A detector (a subclass of :class:`harness.detector.Detector`) declares its input policy
    (resize / crop / pad / tile, size, normalisation, patch grid), turns a decoded image into
    its input tensor, returns one raw logit per image whose sigmoid is P(fake), loads
    checkpoints through its own adapter and may provide a training step.
    """


@hookspec
def register_analyses(register):
    """Register analyses: call ``register(AnalysisClass)`` for each.

    An analysis (a subclass of :class:`harness.analysis.Analysis`) takes a detector and a
    dataset and returns tables (pandas DataFrames) and figures (PNG files).
    """
