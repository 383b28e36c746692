"""ForenSynths / CNNSpot (Wang et al., CVPR 2020): ProGAN training set, 13 test generators,
and UnivFD's diffusion test set when present."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from plugins.suites._layout import TreeSuite, child_dir, find_class_groups, label_dirs, subdirs

TEST_GENERATORS = ["progan", "stylegan", "biggan", "cyclegan", "stargan", "gaugan", "crn", "imle", "seeingdark",
                   "san", "deepfake", "stylegan2", "whichfaceisreal"]
# UnivFD's diffusion set keeps reals and fakes in separate folders; each fake folder is
# scored against the real folder UnivFD pairs it with.
DIFFUSION_REALS = {"guided": "imagenet", "ldm_200": "laion", "ldm_200_cfg": "laion", "ldm_100": "laion",
                   "glide_100_27": "laion", "glide_50_27": "laion", "glide_100_10": "laion", "dalle": "laion"}


class ForenSynths(TreeSuite):
    name = "forensynths"
    description = "ForenSynths (CNNSpot): train on ProGAN (20 LSUN classes), test on 13 GANs/others (+ UnivFD diffusion set)"
    reference = "Wang et al., CNN-generated images are surprisingly easy to spot... for now, CVPR 2020"
    root_env = "HARNESS_FORENSYNTHS_ROOT"
    layout = ("<root>/{train,val}/progan/<class>/{0_real,1_fake}/*, <root>/test/<generator>/[<class>/]{0_real,1_fake}/*"
              ", optionally <root>/diffusion_datasets/<name>/{0_real|1_fake}/* (UnivFD)")
    # classes: only these LSUN classes in train/val (default all); diffusion_root: UnivFD's
    # diffusion_datasets folder (default <root>/diffusion_datasets when it exists).
    defaults = {"root": None, "classes": None, "diffusion_root": None}

    def generators(self) -> list[str]:
        return TEST_GENERATORS + list(DIFFUSION_REALS)

    def scan(self) -> Iterator[Sample]:
        self.ignored = []
        root = self.root_path()
        found = False
        classes_wanted = self.config.get("classes")
        for split in ("train", "val"):
            progan = child_dir(root, split)
            progan = child_dir(progan, "progan") if progan is not None else None
            if progan is None:
                continue
            for class_dir in subdirs(progan):
                if classes_wanted and class_dir.name not in classes_wanted:
                    continue
                found = True
                yield from self._samples(label_dirs(class_dir), "progan", split)
        test = child_dir(root, "test")
        if test is not None:
            gen_dirs = sorted(subdirs(test), key=lambda d: (TEST_GENERATORS.index(d.name)
                                                            if d.name in TEST_GENERATORS else 99, d.name))
            for gen_dir in gen_dirs:
                groups = find_class_groups(gen_dir, max_depth=2)
                if not groups:
                    self.ignored.append((str(gen_dir), "folder without {0_real,1_fake} inside"))
                for _, classes in groups:
                    found = True
                    yield from self._samples(classes, gen_dir.name, "test")
        diffusion = self.config.get("diffusion_root") or (root / "diffusion_datasets")
        diffusion = Path(diffusion)
        if diffusion.is_dir():
            for fake_name, real_name in DIFFUSION_REALS.items():
                fake_dir, real_dir = child_dir(diffusion, fake_name), child_dir(diffusion, real_name)
                if fake_dir is None:
                    continue
                if real_dir is None:
                    raise self.layout_error(root, f"{fake_dir} needs its real folder '{real_name}' beside it",
                                            diffusion)
                found = True
                yield from self._samples({REAL: label_dirs(real_dir).get(REAL, []),
                                          FAKE: label_dirs(fake_dir).get(FAKE, [])}, fake_name, "test")
        if not found:
            raise self.layout_error(root, "neither train/progan/<class>/{0_real,1_fake} nor "
                                          "test/<generator>/{0_real,1_fake} folders")

    def _samples(self, classes: dict[int, list[Path]], generator: str, split: str) -> Iterator[Sample]:
        for label in (REAL, FAKE):
            for class_dir in classes.get(label, []):
                for path in self.images(class_dir):
                    yield Sample(str(path), label, generator, split)


@hookimpl
def register_suites(register):
    register(ForenSynths)
