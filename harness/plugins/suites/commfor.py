"""Community Forensics (Park & Owens, CVPR 2025): the evaluation set, read from its Hugging Face
dataset ``OwensLab/CommunityForensics``.

Facts from the dataset card and the authors' code (github.com/JeongsooP/Community-Forensics):
the dataset's splits are ``Systematic``, ``Manual``, ``Commercial`` (training generators) and
``PublicEval`` (the evaluation set); each row holds the image bytes in ``image_data``, the
generator in ``model_name`` and an integer ``label`` that the authors' loader reads with the
convention ``real:0, fake:1``. This suite reads ``PublicEval`` as the test split (``suite.splits``
reads others). Whether the evaluation set's real rows name a generator in ``model_name`` could
not be verified offline: reals are listed under the ``model_name`` they carry (set
``suite.shared_reals = true`` to list them under every generator instead).
"""

from __future__ import annotations

from harness import hookimpl
from harness.plugins.suites.hf import HFDataset


class CommunityForensicsEval(HFDataset):
    name = "commfor"
    description = "Community Forensics evaluation set (PublicEval split of OwensLab/CommunityForensics)"
    reference = ("Park & Owens, Community Forensics: Using Thousands of Generators to Train Fake Image Detectors, "
                 "CVPR 2025")
    root_env = "HARNESS_COMMFOR_ROOT"
    defaults = {**HFDataset.defaults, "dataset": "OwensLab/CommunityForensics", "image_column": "image_data",
                "label_column": "label", "fake_values": [1], "real_values": [0], "generator_column": "model_name",
                "splits": {"PublicEval": "test"}}


@hookimpl
def register_suites(register):
    register(CommunityForensicsEval)
