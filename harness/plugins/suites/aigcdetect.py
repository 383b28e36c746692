"""AIGCDetectBenchmark test set (Zhong et al., PatchCraft): 16 GAN and diffusion generators."""

from __future__ import annotations

from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._generators import facts
from harness.plugins.suites._layout import TreeSuite, published_name

GENERATORS = ["progan", "stylegan", "biggan", "cyclegan", "stargan", "gaugan", "stylegan2", "whichfaceisreal",
              "ADM", "Glide", "Midjourney", "stable_diffusion_v_1_4", "stable_diffusion_v_1_5", "VQDM", "wukong",
              "DALLE2"]


class AIGCDetect(TreeSuite):
    name = "aigcdetect"
    description = "AIGCDetectBenchmark test set: 8 GANs + 8 diffusion/commercial generators"
    reference = "Zhong et al., PatchCraft / Rich and Poor Texture Contrast, 2023"
    root_env = "HARNESS_AIGCDETECT_ROOT"
    layout = "<root>/<generator>/[<class>/]{0_real,1_fake}/* with generators " + ", ".join(GENERATORS)
    defaults = {"root": None}

    generator_facts = facts({"progan": "ProGAN", "stylegan": "StyleGAN", "biggan": "BigGAN", "cyclegan": "CycleGAN",
                             "stargan": "StarGAN", "gaugan": "GauGAN", "stylegan2": "StyleGAN2", "ADM": "ADM",
                             "Glide": "GLIDE", "Midjourney": "Midjourney",
                             "stable_diffusion_v_1_4": "Stable Diffusion 1.4",
                             "stable_diffusion_v_1_5": "Stable Diffusion 1.5", "VQDM": "VQ-Diffusion",
                             "wukong": "Wukong", "DALLE2": "DALL-E 2"})

    def generators(self) -> list[str]:
        return list(GENERATORS)

    def splits(self) -> list[str]:
        return ["test"]

    def scan(self) -> Iterator[Sample]:
        """Generator folders are matched to the published names without regard to case and
        listed under the published name; any other folder is recorded in ``ignored``, not
        listed: this suite reproduces the published table (the folder suite reads any
        ``<generator>/[<class>/]{0_real,1_fake}`` tree)."""
        self.begin_scan()
        root = self.root_path()
        by_generator: dict[str, list] = {}
        for gen_dir in self.subdirs(root):
            generator = published_name(gen_dir.name, GENERATORS)
            if generator is None:
                self.ignore(gen_dir, f"not one of the published generators of {self.name} ({', '.join(GENERATORS)}); "
                                     f"the folder suite reads any <generator>/{{0_real,1_fake}} tree")
                continue
            if generator in by_generator:
                self.ignore(gen_dir, f"a second folder for generator {generator} (names differ only in case)")
                continue
            groups = self.class_groups(gen_dir, max_depth=2)
            if groups:
                by_generator[generator] = [classes for _, classes in groups]
            else:
                self.ignore(gen_dir, "folder without {0_real,1_fake} inside")
        if not by_generator:
            raise self.layout_error(root, "no <generator>/[<class>/]{0_real,1_fake} folders with a published "
                                          "generator name")
        order = sorted(by_generator, key=GENERATORS.index)
        for generator in order:
            for classes in by_generator[generator]:
                for label in (REAL, FAKE):
                    for class_dir in classes.get(label, []):
                        for path in self.images(class_dir):
                            yield Sample(str(path), label, generator, "test")


@hookimpl
def register_suites(register):
    register(AIGCDetect)
