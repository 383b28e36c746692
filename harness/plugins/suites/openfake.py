"""OpenFake (Livernoche et al., 2025): politically relevant real photos and images of many
generators, read from its Hugging Face dataset ``ComplexDataLab/OpenFake``.

Facts from the dataset card: splits ``train`` and ``test``; columns ``image``, ``prompt``,
``label`` (the strings ``real`` / ``fake``), ``model`` (the generator of a fake), ``type`` and
``release_date`` (added in a later revision of the card). The reals (LAION-400M photos) are
one pool: they are listed under every generator of their split. Each generator's
``release_date`` becomes its ``released`` metadata (``harness suite info``, and the
time-ordered protocol keys ``train_released_before`` / ``test_released_after``).
"""

from __future__ import annotations

from harness import hookimpl
from harness.plugins.suites.hf import HFDataset


class OpenFake(HFDataset):
    name = "openfake"
    description = "OpenFake: real photos vs many recent generators, with each generator's release date"
    reference = "Livernoche et al., OpenFake: An Open Dataset and Platform Toward Large-Scale Deepfake Detection, 2025"
    root_env = "HARNESS_OPENFAKE_ROOT"
    defaults = {**HFDataset.defaults, "dataset": "ComplexDataLab/OpenFake", "fake_values": ["fake"],
                "real_values": ["real"], "generator_column": "model", "shared_reals": True,
                "metadata_columns": {"released": "release_date"}}


@hookimpl
def register_suites(register):
    register(OpenFake)
