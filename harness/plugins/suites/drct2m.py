"""DRCT-2M (Chen et al., ICML 2024): 16 Stable-Diffusion-family generators on MSCOCO, with the
DR reconstructions as pairs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._generators import facts
from harness.plugins.suites._layout import TreeSuite, stable_fraction

GENERATORS = [
    "ldm-text2im-large-256", "stable-diffusion-v1-4", "stable-diffusion-v1-5", "stable-diffusion-2-1",
    "stable-diffusion-xl-base-1.0", "stable-diffusion-xl-refiner-1.0", "sd-turbo", "sdxl-turbo", "lcm-lora-sdv1-5",
    "lcm-lora-sdxl", "sd-controlnet-canny", "sd21-controlnet-canny", "controlnet-canny-sdxl-1.0",
    "stable-diffusion-inpainting", "stable-diffusion-2-inpainting", "stable-diffusion-xl-1.0-inpainting-0.1",
]
SPLIT_FOLDERS = (("train2017", "train"), ("val2017", "test"))

log = logging.getLogger(__name__)


class DRCT2M(TreeSuite):
    """Reals are the MSCOCO images, listed under every generator (each generator's subset is
    its fakes against the same reals, as in the paper's tables).

    Pairs (same file stem): a fake's pair is the MSCOCO image it shares its stem with; a
    real's pair is its reconstruction in ``DR/MSCOCO/full_inpainting`` when that folder exists.
    """

    name = "drct2m"
    description = "DRCT-2M: 16 Stable-Diffusion-family generators, MSCOCO reals, DR reconstructions as pairs"
    reference = "Chen et al., DRCT: Diffusion Reconstruction Contrastive Training, ICML 2024"
    root_env = "HARNESS_DRCT2M_ROOT"
    layout = ("<root>/MSCOCO/{train2017,val2017}/*, <root>/DRCT-2M/<generator>/{train2017,val2017}/*, "
              "optional <root>/DR/MSCOCO/full_inpainting/{train2017,val2017}/*")
    # reals: "all" lists every MSCOCO image under each generator; "paired" only those with a
    # fake of the same stem in that generator. val_fraction: hash-based share of train2017
    # held out as val (by stem, so a real and its fake stay together).
    defaults = {"root": None, "generators": None, "reals": "all", "val_fraction": 0.1}
    settings = {"generators": {"type": ["array", "null"]}, "reals": {"enum": ["all", "paired"]},
                "val_fraction": {"minimum": 0, "maximum": 1}}

    generator_facts = facts({"stable-diffusion-v1-4": "Stable Diffusion 1.4",
                             "stable-diffusion-v1-5": "Stable Diffusion 1.5",
                             "stable-diffusion-2-1": "Stable Diffusion 2.1",
                             "stable-diffusion-xl-base-1.0": "Stable Diffusion XL 1.0"})

    def generators(self) -> list[str]:
        return list(self.config.get("generators") or GENERATORS)

    def scan(self) -> Iterator[Sample]:
        """Generator folders not in the published list are recorded in ``ignored`` unless
        named in ``suite.generators``; a split whose MSCOCO folder is missing (or empty) is
        not listed at all (its fakes are recorded in ``ignored``): a split without reals
        cannot be scored, and must not pass as one."""
        self.begin_scan()
        root = self.root_path()
        top = self.split_children(root, {"MSCOCO": "MSCOCO", "DRCT-2M": "DRCT-2M", "DR": "DR"}, "DRCT-2M",
                                  kind="top folder")
        coco, fakes_root = top.get("MSCOCO"), top.get("DRCT-2M")
        if coco is None or fakes_root is None:
            raise self.layout_error(root, "MSCOCO/ and DRCT-2M/ folders are both needed")
        dr = self._reconstructions(top.get("DR"))
        split_names = {folder: folder for folder, _ in SPLIT_FOLDERS}
        present = {d.name: d for d in self.subdirs(fakes_root)}
        wanted = self.config.get("generators")
        if wanted:
            missing = [g for g in wanted if g not in present]
            if missing:
                raise self.layout_error(root, f"generator folder(s) {', '.join(missing)} not found", fakes_root)
            names = list(wanted)
        else:
            names = []
            for folder in present:
                if folder in GENERATORS:
                    names.append(folder)
                else:
                    self.ignore(present[folder], f"not one of the published generators of {self.name} "
                                                 f"({', '.join(GENERATORS)}); name it in suite.generators "
                                                 f"to read it")
            names.sort(key=GENERATORS.index)
        if not names:
            raise self.layout_error(root, "DRCT-2M/ holds no generator folders" + (
                " with a published generator name" if present else ""), fakes_root)
        real_splits = self.split_children(coco, split_names, "MSCOCO")
        fake_splits = {g: self.split_children(present[g], split_names, f"DRCT-2M/{g}") for g in names}
        val_fraction = float(self.config.get("val_fraction") or 0.0)
        paired_only = self.config.get("reals") == "paired"
        for folder, split in SPLIT_FOLDERS:
            real_dir = real_splits.get(folder)
            reals = self.images(real_dir) if real_dir else []
            fakes_of = {g: self.images(fake_splits[g][folder]) for g in names if folder in fake_splits[g]}
            if not reals:
                self._split_without_reals(coco, folder, split, real_dir,
                                          [fake_splits[g][folder] for g, fakes in fakes_of.items() if fakes])
                continue
            real_by_stem = {p.stem: p for p in reals}
            recon = _by_stem(self.images(dr[folder])) if folder in dr else {}

            def split_of(path: Path) -> str:
                return "val" if split == "train" and stable_fraction(path.stem) < val_fraction else split

            for generator in names:
                fakes = fakes_of.get(generator, [])
                fake_stems = {p.stem for p in fakes}
                for path in reals:
                    if paired_only and path.stem not in fake_stems:
                        continue
                    pair = recon.get(path.stem)
                    yield Sample(str(path), REAL, generator, split_of(path), str(pair) if pair else None)
                for path in fakes:
                    pair = real_by_stem.get(path.stem)
                    yield Sample(str(path), FAKE, generator, split_of(path), str(pair) if pair else None)

    def _reconstructions(self, dr: Path | None) -> dict[str, Path]:
        """``DR/MSCOCO/full_inpainting/{train2017,val2017}`` by split folder, where present."""
        for name in ("MSCOCO", "full_inpainting"):
            dr = self.child_dir(dr, name) if dr is not None else None
        if dr is None:
            return {}
        return {folder: path for folder in (f for f, _ in SPLIT_FOLDERS)
                if (path := self.child_dir(dr, folder)) is not None}

    def _split_without_reals(self, coco: Path, folder: str, split: str, real_dir: Path | None,
                             fake_dirs: list[Path]) -> None:
        if not fake_dirs:
            return  # neither reals nor fakes: the split is simply not there
        what = "missing" if real_dir is None else "holds no images"
        role = "the test split" if split == "test" else "the train and val splits"
        message = (f"{what}: the real images of {role}; the fakes of {len(fake_dirs)} generator folder(s) "
                   f"for {folder} are not listed, since a split without reals cannot be scored")
        log.warning("suite '%s': %s %s", self.name, real_dir or coco / folder, message)
        self.ignore(real_dir or coco / folder, message)
        for fake_dir in fake_dirs:
            self.ignore(fake_dir, f"not listed: its real images ({coco / folder}) are missing or empty")


def _by_stem(paths: list[Path]) -> dict[str, Path]:
    return {p.stem: p for p in paths}


@hookimpl
def register_suites(register):
    register(DRCT2M)
