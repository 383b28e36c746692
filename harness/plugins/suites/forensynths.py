"""ForenSynths / CNNSpot (Wang et al., CVPR 2020): ProGAN training set, 13 test generators,
and UnivFD's diffusion test set when present."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._generators import facts
from harness.plugins.suites._layout import TreeSuite, published_name

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
    settings = {"classes": {"type": ["array", "null"]}, "diffusion_root": {"type": ["string", "null"]}}

    generator_facts = facts({"progan": "ProGAN", "stylegan": "StyleGAN", "biggan": "BigGAN", "cyclegan": "CycleGAN",
                             "stargan": "StarGAN", "gaugan": "GauGAN", "crn": "CRN", "imle": "IMLE",
                             "stylegan2": "StyleGAN2", "guided": "ADM", "ldm_200": "Latent Diffusion",
                             "ldm_200_cfg": "Latent Diffusion", "ldm_100": "Latent Diffusion",
                             "glide_100_27": "GLIDE", "glide_50_27": "GLIDE", "glide_100_10": "GLIDE"})

    def generators(self) -> list[str]:
        return TEST_GENERATORS + list(DIFFUSION_REALS)

    def scan(self) -> Iterator[Sample]:
        """Test generator folders are matched to the published names without regard to case
        and listed under the published name; other folders are recorded in ``ignored``."""
        self.begin_scan()
        root = self.root_path()
        found = False
        classes_wanted = self.config.get("classes")
        top = self.split_children(root, {"train": "train", "val": "val", "test": "test",
                                         "diffusion_datasets": "diffusion_datasets"})
        for split in ("train", "val"):
            split_dir = top.get(split)
            if split_dir is None:
                continue
            progan = None
            for child in self.subdirs(split_dir):
                if child.name.lower() == "progan" and progan is None:
                    progan = child
                else:
                    self.ignore(child, f"{self.name} trains on ProGAN alone: only {split}/progan/ is read")
            if progan is None:
                continue
            for parts, classes in self.class_groups(progan, max_depth=1):
                if classes_wanted and parts and parts[0] not in classes_wanted:
                    continue
                found = True
                yield from self._samples(classes, "progan", split)
        test = top.get("test")
        if test is not None:
            by_generator: dict[str, Path] = {}
            for gen_dir in self.subdirs(test):
                generator = published_name(gen_dir.name, TEST_GENERATORS)
                if generator is None:
                    self.ignore(gen_dir, f"not one of the published test generators of {self.name} "
                                         f"({', '.join(TEST_GENERATORS)}); the folder suite reads any "
                                         f"<generator>/{{0_real,1_fake}} tree")
                elif generator in by_generator:
                    self.ignore(gen_dir, f"a second folder for generator {generator} (names differ only in case)")
                else:
                    by_generator[generator] = gen_dir
            for generator in sorted(by_generator, key=TEST_GENERATORS.index):
                gen_dir = by_generator[generator]
                groups = self.class_groups(gen_dir, max_depth=2)
                if not groups:
                    self.ignore(gen_dir, "folder without {0_real,1_fake} inside")
                for _, classes in groups:
                    found = True
                    yield from self._samples(classes, generator, "test")
        diffusion = Path(self.config.get("diffusion_root") or (root / "diffusion_datasets"))
        if diffusion.is_dir():
            sets = {name: name for name in list(DIFFUSION_REALS) + sorted(set(DIFFUSION_REALS.values()))}
            present = self.split_children(diffusion, sets, "UnivFD's diffusion_datasets", kind="set")
            for fake_name, real_name in DIFFUSION_REALS.items():
                fake_dir, real_dir = present.get(fake_name), present.get(real_name)
                if fake_dir is None:
                    continue
                if real_dir is None:
                    raise self.layout_error(root, f"{fake_dir} needs its real folder '{real_name}' beside it",
                                            diffusion)
                found = True
                reals = self._one_class(real_dir, REAL, "a real set")
                fakes = self._one_class(fake_dir, FAKE, "a fake set")
                yield from self._samples({REAL: reals, FAKE: fakes}, fake_name, "test")
        if not found:
            raise self.layout_error(root, "neither train/progan/<class>/{0_real,1_fake} nor "
                                          "test/<generator>/{0_real,1_fake} folders")

    def _one_class(self, folder: Path, label: int, what: str) -> list[Path]:
        """The ``label`` class folders of one of UnivFD's diffusion sets; the other class is recorded."""
        classes = self.label_dirs(folder)
        for other in classes.get(1 - label, []):
            self.ignore(other, f"{folder.name} is {what} of UnivFD's diffusion_datasets: "
                               f"this class folder is not read")
        if not classes.get(label):
            self.ignore(folder, f"no {'0_real' if label == REAL else '1_fake'} folder inside")
        return classes.get(label, [])

    def _samples(self, classes: dict[int, list[Path]], generator: str, split: str) -> Iterator[Sample]:
        for label in (REAL, FAKE):
            for class_dir in classes.get(label, []):
                for path in self.images(class_dir):
                    yield Sample(str(path), label, generator, split)


@hookimpl
def register_suites(register):
    register(ForenSynths)
