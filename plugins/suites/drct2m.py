"""DRCT-2M (Chen et al., ICML 2024): 16 Stable-Diffusion-family generators on MSCOCO, with the
DR reconstructions as pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from plugins.suites._layout import TreeSuite, child_dir, stable_fraction, subdirs

GENERATORS = [
    "ldm-text2im-large-256", "stable-diffusion-v1-4", "stable-diffusion-v1-5", "stable-diffusion-2-1",
    "stable-diffusion-xl-base-1.0", "stable-diffusion-xl-refiner-1.0", "sd-turbo", "sdxl-turbo", "lcm-lora-sdv1-5",
    "lcm-lora-sdxl", "sd-controlnet-canny", "sd21-controlnet-canny", "controlnet-canny-sdxl-1.0",
    "stable-diffusion-inpainting", "stable-diffusion-2-inpainting", "stable-diffusion-xl-1.0-inpainting-0.1",
]
SPLIT_FOLDERS = (("train2017", "train"), ("val2017", "test"))


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

    def generators(self) -> list[str]:
        return list(self.config.get("generators") or GENERATORS)

    def scan(self) -> Iterator[Sample]:
        self.ignored = []
        root = self.root_path()
        coco = child_dir(root, "MSCOCO")
        fakes_root = child_dir(root, "DRCT-2M")
        if coco is None or fakes_root is None:
            raise self.layout_error(root, "MSCOCO/ and DRCT-2M/ folders are both needed")
        dr = root / "DR" / "MSCOCO" / "full_inpainting"
        present = {d.name: d for d in subdirs(fakes_root)}
        wanted = self.config.get("generators")
        if wanted:
            missing = [g for g in wanted if g not in present]
            if missing:
                raise self.layout_error(root, f"generator folder(s) {', '.join(missing)} not found", fakes_root)
            names = list(wanted)
        else:
            names = sorted(present, key=lambda g: (GENERATORS.index(g) if g in GENERATORS else len(GENERATORS), g))
        if not names:
            raise self.layout_error(root, "DRCT-2M/ holds no generator folders", fakes_root)
        val_fraction = float(self.config.get("val_fraction") or 0.0)
        paired_only = self.config.get("reals") == "paired"
        for folder, split in SPLIT_FOLDERS:
            real_dir = child_dir(coco, folder)
            reals = self.images(real_dir) if real_dir else []
            real_by_stem = {p.stem: p for p in reals}
            recon = _by_stem(self.images(dr / folder)) if (dr / folder).is_dir() else {}

            def split_of(path: Path) -> str:
                return "val" if split == "train" and stable_fraction(path.stem) < val_fraction else split

            for generator in names:
                gen_split = child_dir(present[generator], folder)
                fakes = self.images(gen_split) if gen_split else []
                fake_stems = {p.stem for p in fakes}
                for path in reals:
                    if paired_only and path.stem not in fake_stems:
                        continue
                    pair = recon.get(path.stem)
                    yield Sample(str(path), REAL, generator, split_of(path), str(pair) if pair else None)
                for path in fakes:
                    pair = real_by_stem.get(path.stem)
                    yield Sample(str(path), FAKE, generator, split_of(path), str(pair) if pair else None)


def _by_stem(paths: list[Path]) -> dict[str, Path]:
    return {p.stem: p for p in paths}


@hookimpl
def register_suites(register):
    register(DRCT2M)
