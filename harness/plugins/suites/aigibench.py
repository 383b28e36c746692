"""AIGIBench (Li et al., "Is Artificial Intelligence Generated Image Detection a Solved Problem?",
NeurIPS 2025 Datasets and Benchmarks): two training settings and 25 test subsets.

Layout, from the official README (github.com/HorizonTEL/AIGIBench)::

    train/{car,cat,chair,horse}/{0_real,1_fake}   ProGAN (from ForenSynths): Setting-I
    train/sdv1.4/{0_real,1_fake}                  SD v1.4 (from GenImage): added in Setting-II
    val/<same folders>/{0_real,1_fake}
    test/<subset>/{0_real,1_fake}                 25 subsets

The 25 test subset folder names are those of the authors' evaluation configuration
(``detector_codes/*/test_config.py``: ``vals = [...]``); the README's tree spells one of them
``Midjourney-V6`` and its count table ``ImSwap``: both are read as the published names
``Midjourney`` and ``InSwap``. The four ProGAN class folders are listed as generator ``ProGAN``
(the same name as its test subset), ``sdv1.4`` as ``SDv1.4``; the shipped protocols
``aigibench-setting1`` / ``aigibench-setting2`` train on those.
"""

from __future__ import annotations

from typing import Iterator

from harness import hookimpl
from harness.suite import Sample
from harness.plugins.suites._generators import facts
from harness.plugins.suites._layout import TreeSuite
from harness.plugins.suites._subsets import class_samples, published_folders

PROGAN_CLASSES = ["car", "cat", "chair", "horse"]
#: Training folders -> generator.
TRAIN_FOLDERS = {**{c: "ProGAN" for c in PROGAN_CLASSES}, "sdv1.4": "SDv1.4"}
TEST_SUBSETS = ["BlendFace", "BLIP", "CommunityAI", "DALLE-3", "E4S", "FaceSwap", "FLUX1-dev", "GLIDE", "Imagen3",
                "Infinite-ID", "InstantID", "InSwap", "IP-Adapter", "Midjourney", "PhotoMaker", "ProGAN", "R3GAN",
                "SD3", "SDXL", "SimSwap", "SocialRF", "StyleGAN-XL", "StyleGAN3", "StyleSwim", "WFIR"]
#: Other spellings in the official README -> the published folder name.
ALIASES = {"midjourney-v6": "Midjourney", "imswap": "InSwap"}


class AIGIBench(TreeSuite):
    name = "aigibench"
    description = "AIGIBench: train on ProGAN (Setting-I) or ProGAN + SD v1.4 (Setting-II), 25 test subsets"
    reference = "Li et al., Is Artificial Intelligence Generated Image Detection a Solved Problem?, NeurIPS 2025"
    root_env = "HARNESS_AIGIBENCH_ROOT"
    layout = ("<root>/{train,val}/{car,cat,chair,horse,sdv1.4}/{0_real,1_fake}/*, "
              "<root>/test/<subset>/{0_real,1_fake}/* with subsets " + ", ".join(TEST_SUBSETS))
    defaults = {"root": None}

    generator_facts = facts({"ProGAN": "ProGAN", "SDv1.4": "Stable Diffusion 1.4", "SDXL": "Stable Diffusion XL 1.0",
                             "DALLE-3": "DALL-E 3", "FLUX1-dev": "FLUX.1 dev", "StyleGAN3": "StyleGAN3",
                             "GLIDE": "GLIDE", "Midjourney": "Midjourney"})

    def generators(self) -> list[str]:
        return TEST_SUBSETS + ["SDv1.4"]

    def scan(self) -> Iterator[Sample]:
        self.begin_scan()
        root = self.root_path()
        top = self.split_children(root, {"train": "train", "val": "val", "test": "test"}, "AIGIBench")
        if not top:
            raise self.layout_error(root, "no train/, val/ or test/ folder")
        found = False
        for split in ("train", "val"):
            if split not in top:
                continue
            folders = published_folders(self, top[split], list(TRAIN_FOLDERS), f"{split} folders")
            for folder_name, folder in folders.items():
                found |= yield from class_samples(self, folder, TRAIN_FOLDERS[folder_name], split)
        if "test" in top:
            subsets = published_folders(self, top["test"], TEST_SUBSETS + list(ALIASES), "test subsets")
            for name, folder in subsets.items():
                found |= yield from class_samples(self, folder, ALIASES.get(name.lower(), name), "test")
        if not found:
            raise self.layout_error(root, "no {train,val}/<folder>/{0_real,1_fake} or test/<subset>/{0_real,1_fake} "
                                          "folders with a published name")


@hookimpl
def register_suites(register):
    register(AIGIBench)
