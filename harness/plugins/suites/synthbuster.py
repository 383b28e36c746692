"""Synthbuster (Bammey, "Synthbuster: Towards Detection of Diffusion Model Generated Images",
IEEE OJSP 2023): 9 generators prompted to re-create the 1000 RAISE-1k photos.

Layout: the Synthbuster archive (zenodo.org/records/10066460) holds one folder per generator,
``dalle2, dalle3, firefly, glide, midjourney-v5, stable-diffusion-1-3, stable-diffusion-1-4,
stable-diffusion-2, stable-diffusion-xl``, each with its images and a ``prompts.csv`` whose
``image name (matching Raise-1k)`` column names the RAISE-1k photo each image re-creates. The
folder names are those used by third-party readers of the archive (AI-GenBench's builder); the
Zenodo listing itself could not be read offline. The real photos are not in the archive: RAISE-1k
is downloaded separately, and its folder is ``suite.reals`` (default ``<root>/RAISE-1k`` or
``<root>/raise-1k``), any format the harness decodes (convert the NEF raw files first).

Everything is test data. The RAISE-1k photos are one pool, listed under every generator (as
DRCT-2M's MSCOCO reals); a fake whose file stem is a RAISE-1k stem gets that photo as its pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._generators import facts
from harness.plugins.suites._layout import TreeSuite, pairs_by_stem
from harness.plugins.suites._subsets import published_folders

GENERATORS = ["dalle2", "dalle3", "firefly", "glide", "midjourney-v5", "stable-diffusion-1-3",
              "stable-diffusion-1-4", "stable-diffusion-2", "stable-diffusion-xl"]
REAL_FOLDERS = ("RAISE-1k", "raise-1k", "RAISE")


class Synthbuster(TreeSuite):
    name = "synthbuster"
    description = "Synthbuster: 9 diffusion/commercial generators re-creating the RAISE-1k photos (test only)"
    reference = "Bammey, Synthbuster: Towards Detection of Diffusion Model Generated Images, IEEE OJSP 2023"
    root_env = "HARNESS_SYNTHBUSTER_ROOT"
    layout = ("<root>/<generator>/* with generators " + ", ".join(GENERATORS) +
              "; real photos in suite.reals (default <root>/RAISE-1k)")
    defaults = {"root": None, "reals": None}

    generator_facts = facts({"dalle2": "DALL-E 2", "dalle3": "DALL-E 3", "firefly": "Firefly", "glide": "GLIDE",
                             "midjourney-v5": "Midjourney", "stable-diffusion-1-4": "Stable Diffusion 1.4",
                             "stable-diffusion-2": "Stable Diffusion 2",
                             "stable-diffusion-xl": "Stable Diffusion XL 1.0"})

    def generators(self) -> list[str]:
        return list(GENERATORS)

    def splits(self) -> list[str]:
        return ["test"]

    def _reals_folder(self, root: Path) -> Path:
        configured = self.config.get("reals")
        if configured:
            folder = Path(configured).expanduser().resolve()
            if not folder.is_dir():
                raise self.layout_error(root, f"suite.reals={folder} is not a folder (the RAISE-1k photos)")
            return folder
        for name in REAL_FOLDERS:
            folder = self.child_dir(root, name)
            if folder is not None:
                return folder
        raise self.layout_error(root, "the RAISE-1k real photos are not in the Synthbuster archive: put them in "
                                      "<root>/RAISE-1k or pass --set suite.reals=FOLDER")

    def scan(self) -> Iterator[Sample]:
        self.begin_scan()
        root = self.root_path()
        reals_dir = self._reals_folder(root)
        reals = self.images(reals_dir)
        if not reals:
            raise self.layout_error(root, f"{reals_dir} holds no images (the RAISE-1k photos)", reals_dir)
        folders = published_folders(self, root, GENERATORS + list(REAL_FOLDERS), "generator folders")
        fakes_of = {}
        for name, folder in folders.items():
            if name in REAL_FOLDERS:
                continue
            fakes = self.images(folder)
            if fakes:
                fakes_of[name] = fakes
            else:
                self.ignore(folder, "generator folder holds no images")
        if not fakes_of:
            raise self.layout_error(root, "no generator folder with images")
        for generator, fakes in fakes_of.items():
            pairs = pairs_by_stem(reals, fakes)
            for path in reals:
                yield Sample(str(path), REAL, generator, "test")
            for path in fakes:
                pair = pairs.get(path)
                yield Sample(str(path), FAKE, generator, "test", str(pair) if pair else None)


@hookimpl
def register_suites(register):
    register(Synthbuster)
