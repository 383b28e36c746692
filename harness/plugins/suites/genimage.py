"""GenImage (Zhu et al., NeurIPS 2023): 8 generators, ImageNet reals, read as distributed."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from harness import hookimpl
from harness.errors import HarnessError
from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._generators import facts
from harness.plugins.suites._layout import TreeSuite, child_dir, pairs_by_stem, stable_fraction, subdirs

#: Generator folders in the paper's table order, with the inner folder of the distributed archives.
GENERATORS = {
    "stable_diffusion_v_1_4": "imagenet_ai_0419_sdv4",
    "stable_diffusion_v_1_5": "imagenet_ai_0424_sdv5",
    "Midjourney": "imagenet_midjourney",
    "ADM": "imagenet_ai_0508_adm",
    "wukong": "imagenet_ai_0424_wukong",
    "glide": "imagenet_glide",
    "VQDM": "imagenet_ai_0419_vqdm",
    "BigGAN": "imagenet_ai_0419_biggan",
}


class GenImage(TreeSuite):
    name = "genimage"
    description = "GenImage: 8 generators (SD1.4/1.5, Midjourney, ADM, Wukong, GLIDE, VQDM, BigGAN), ImageNet reals"
    reference = "Zhu et al., GenImage, NeurIPS 2023"
    root_env = "HARNESS_GENIMAGE_ROOT"
    layout = ("<root>/<generator>/<inner folder>/{train,val}/{ai,nature}/* "
              "(or the flat form <root>/<generator>/{train,val}/{ai,nature}/*)")
    # val_fraction: the share of each generator's train folder held out as the val split,
    # chosen by a hash of the file stem (stable across machines; a fake stays with its pair,
    # and a real crop the mini suite shares between generators is val in all of them).
    # generators: only these generator folders (default: every one found).
    defaults = {"root": None, "val_fraction": 0.1, "generators": None}
    settings = {"val_fraction": {"minimum": 0, "maximum": 1}, "generators": {"type": ["array", "null"]}}
    #: Table order of the generator folders; others follow by name.
    order = list(GENERATORS)

    generator_facts = facts({"stable_diffusion_v_1_4": "Stable Diffusion 1.4",
                             "stable_diffusion_v_1_5": "Stable Diffusion 1.5", "Midjourney": "Midjourney",
                             "ADM": "ADM", "wukong": "Wukong", "glide": "GLIDE", "VQDM": "VQ-Diffusion",
                             "BigGAN": "BigGAN"})

    def generators(self) -> list[str]:
        try:
            return [name for name, _ in self._generator_folders(self.root_path())]
        except HarnessError:  # no root yet: the published list
            return list(GENERATORS)

    def _generator_folders(self, root: Path, record: bool = False) -> list[tuple[str, list[Path]]]:
        """(generator, [folders holding train/ and val/]) in table order: known names first.

        ``record``: folders that are not read go to ``ignored`` (during a scan).
        """
        ls = self.subdirs if record else subdirs
        found = []
        for gen_dir in ls(root):
            if _has_split_dirs(gen_dir):
                bases = [gen_dir]
            else:
                inner = ls(gen_dir)
                bases = [d for d in inner if _has_split_dirs(d)]
                if bases and record:
                    for d in inner:
                        if d not in bases:
                            self.ignore(d, NO_SPLITS)
            if bases:
                found.append((gen_dir.name, bases))
            elif record:
                self.ignore(gen_dir, NO_SPLITS)
        wanted = self.config.get("generators")
        if wanted:
            names = {name for name, _ in found}
            missing = [g for g in wanted if g not in names]
            if missing:
                raise self.layout_error(root, f"generator folder(s) {', '.join(missing)} not found")
            found = [item for item in found if item[0] in wanted]
        known = self.order
        found.sort(key=lambda item: (known.index(item[0]) if item[0] in known else len(known), item[0]))
        return found

    def scan(self) -> Iterator[Sample]:
        self.begin_scan()
        root = self.root_path()
        folders = self._generator_folders(root, record=True)
        if not folders:
            raise self.layout_error(root, "no generator folder holds {train,val}/{ai,nature}")
        val_fraction = float(self.config.get("val_fraction") or 0.0)
        for generator, bases in folders:
            for base in bases:
                # GenImage's own folders: train -> train (and val, by hash), val -> test.
                split_dirs = self.split_children(base, SPLIT_FOLDERS, "GenImage")
                for split in ("train", "test"):
                    split_dir = split_dirs.get(split)
                    if split_dir is None:
                        continue
                    classes = self.label_dirs(split_dir)
                    if not classes:
                        raise self.layout_error(root, f"{split_dir} has neither ai/ nor nature/", split_dir)
                    reals = [p for folder in classes.get(REAL, []) for p in self.images(folder)]
                    fakes = [p for folder in classes.get(FAKE, []) for p in self.images(folder)]
                    pairs = pairs_by_stem(reals, fakes)

                    def split_of(path: Path) -> str:
                        if split == "train" and stable_fraction(path.stem) < val_fraction:
                            return "val"
                        return split

                    for path in reals:
                        yield Sample(str(path), REAL, generator, split_of(path))
                    for path in fakes:
                        pair = pairs.get(path)
                        yield Sample(str(path), FAKE, generator, split_of(path), str(pair) if pair else None)


#: GenImage's split folders -> the harness's split.
SPLIT_FOLDERS = {"train": "train", "val": "test"}
NO_SPLITS = "folder without {train,val}/{ai,nature} inside"


def _has_split_dirs(folder: Path) -> bool:
    return any(child_dir(folder, name) is not None for name in SPLIT_FOLDERS)


@hookimpl
def register_suites(register):
    register(GenImage)
