"""The embedded ``mini`` suite: real photo crops and six fitted generators, built offline in minutes.

Real images are crops of photographs that ship inside installed packages (scikit-image,
scikit-learn, matplotlib). Each photo is cut into a train band (its left part) and a test
band (its right part) and both bands into non-overlapping crops, so no test pixel is ever
seen in training (GenImage's val split, a hash of the train folder, shares no pixel with the
train split either). Six small generative models (see ``_mini_models``) are fitted on the
train crops; a fake is one model's reconstruction of a real crop and keeps the real crop's
file name, so every fake has its real pair, as in DRCT-2M. Both classes are PNG.

The tree is written in GenImage's flat layout, ``<root>/<generator>/{train,val}/{nature,ai}``,
and read back through the ``genimage`` reader. Reals are hard links shared by the generator
folders (a copy where links are not possible). The build is deterministic from the seed:
the same machine builds byte-identical files twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from harness import hookimpl
from harness.errors import HarnessError
from harness.manifest import cache_root
from harness.plugins.suites._mini_models import FAMILIES, Denoiser, SharedEncoderAutoencoders, VQAutoencoder
from harness.plugins.suites.genimage import GenImage

VERSION = 1
MARKER = "mini.json"

#: (name, package, path inside the package, licence as the package documents it)
PHOTOS = [
    ("astronaut", "skimage", "data/astronaut.png", "Public domain (NASA, Eileen Collins); scikit-image data"),
    ("chelsea", "skimage", "data/chelsea.png", "CC0 (Stefan van der Walt); scikit-image data"),
    ("coffee", "skimage", "data/coffee.png", "CC0 (Rachel Michetti); scikit-image data"),
    ("rocket", "skimage", "data/rocket.jpg", "Public domain (SpaceX); scikit-image data"),
    ("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "Public domain (NASA/ESA); scikit-image data"),
    ("retina", "skimage", "data/retina.jpg", "CC0 (Mikael Haggstrom, Wikimedia Commons); scikit-image data"),
    ("immunohistochemistry", "skimage", "data/ihc.png",
     "No known copyright restrictions (CMMI, University of Cape Town); scikit-image data"),
    ("stereo_motorcycle_left", "skimage", "data/motorcycle_left.png",
     "Middlebury 2014 stereo dataset (Scharstein et al., GCPR 2014), as redistributed by scikit-image"),
    ("china", "sklearn", "datasets/images/china.jpg", "CC BY 2.0 (danielbuechele, Flickr); scikit-learn sample image"),
    ("flower", "sklearn", "datasets/images/flower.jpg", "CC BY 2.0 (vultilion, Flickr); scikit-learn sample image"),
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
     "Public domain (U.S. Navy photograph); matplotlib sample data"),
]

PRESETS = {
    # 64 px crops of all eleven photos; about 3 x 10^3 crops, hundreds of test crops per generator.
    "default": {"crop": 64, "photos": None, "train_fraction": 0.62, "window": 32, "batch": 32, "width": 32,
                "latent": 8, "denoiser_width": 24, "ae_steps": 400, "vq_steps": 300, "denoiser_steps": 300, "lr": 2e-3,
                "max_train": None, "max_test": None},
    # For tests: 32 px crops of three photos, a few dozen steps: builds in seconds.
    "tiny": {"crop": 32, "photos": ["chelsea", "coffee", "astronaut"], "train_fraction": 0.62, "window": 16,
             "batch": 16, "width": 16, "latent": 8, "denoiser_width": 16, "ae_steps": 60, "vq_steps": 40,
             "denoiser_steps": 40,
             "lr": 3e-3, "max_train": 120, "max_test": 60},
}
# A crop this flat (pixel standard deviation, 0-255 scale) is empty sky or black border.
MIN_CROP_STD = 4.0
# One thread: float sums (and so the 8-bit output) can depend on the thread count, and OpenMP
# threads spinning against other busy processes make a small model many times slower.
BUILD_THREADS = 1


class MiniSuite(GenImage):
    name = "mini"
    description = "Embedded demo suite: real photo crops + 6 fitted generators (tconv, nearest, bilinear, "\
                  "pixelshuffle, vqvae, denoiser); builds offline in minutes"
    reference = "aigi-harness"
    root_env = "HARNESS_MINI_ROOT"
    layout = "<root>/<generator>/{train,val}/{nature,ai}/*.png with <root>/mini.json (harness suite build mini)"
    defaults = {"root": None, "preset": "default", "seed": 0, "val_fraction": 0.1, "generators": None}
    settings = {"preset": {"enum": list(PRESETS)}, "seed": {"minimum": 0}}  # and GenImage's
    order = list(FAMILIES)

    def generators(self) -> list[str]:
        return list(self.config.get("generators") or FAMILIES)

    def default_root(self) -> Path:
        seed = int(self.config.get("seed") or 0)
        suffix = "" if seed == 0 else f"-seed{seed}"
        return cache_root() / "mini" / f"{self.preset()}-v{VERSION}{suffix}"

    def preset(self) -> str:
        preset = self.config.get("preset") or "default"
        if preset not in PRESETS:
            raise HarnessError(f"suite.preset must be one of {', '.join(PRESETS)}, got '{preset}'")
        return preset

    def root_path(self) -> Path:
        """The built suite (building it first when it is not there yet)."""
        raw = self.config.get("root") or os.environ.get(self.root_env or "")
        root = Path(raw).expanduser().resolve() if raw else self.default_root()
        seed = int(self.config.get("seed") or 0)
        if not (root / MARKER).is_file():
            build(root, preset=self.preset(), seed=seed)
            return root
        try:
            record = json.loads((root / MARKER).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HarnessError(f"{root / MARKER} cannot be read ({exc}); delete {root} to build it again") from None
        built_as = (record.get("version"), record.get("preset"), record.get("seed"))
        if built_as != (VERSION, self.preset(), seed):
            raise HarnessError(
                f"the mini suite at {root} was built as version {built_as[0]}, preset '{built_as[1]}', seed "
                f"{built_as[2]}, but version {VERSION}, preset '{self.preset()}', seed {seed} is asked for: "
                f"set suite.preset / suite.seed to match, or point suite.root at another folder")
        return root


def _photo_file(package: str, inner: str) -> Path | None:
    try:
        path = Path(str(resources.files(package) / inner))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def _crops(array: np.ndarray, crop: int, col_start: int, col_end: int) -> list[tuple[int, int]]:
    return [(y, x) for y in range(0, array.shape[0] - crop + 1, crop)
            for x in range(col_start, col_end - crop + 1, crop)]


def _spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced over the list (deterministic; the list runs photo by
    photo, so every photo keeps its share)."""
    if limit is None or len(items) <= limit:
        return items
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in picks]


def collect_crops(preset: dict) -> tuple[dict[str, list[tuple[str, np.ndarray]]], list[dict]]:
    """Real crops by split (``train`` / ``test``) and the record of every source photo."""
    wanted = preset["photos"]
    crop = preset["crop"]
    splits: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    sources = []
    for name, package, inner, licence in PHOTOS:
        if wanted is not None and name not in wanted:
            continue
        path = _photo_file(package, inner)
        if path is None:
            sources.append({"name": name, "package": package, "file": inner, "licence": licence, "used": False,
                            "why": "not installed"})
            continue
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
        height, width = array.shape[:2]
        cut = int(width * preset["train_fraction"]) // crop * crop
        record = {"name": name, "package": package, "file": inner, "licence": licence, "used": True,
                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": [width, height],
                  "train_columns": [0, cut], "test_columns": [cut, width], "flat_crops_skipped": 0}
        for split, (start, end) in (("train", (0, cut)), ("test", (cut, width))):
            kept = 0
            for y, x in _crops(array, crop, start, end):
                patch = array[y:y + crop, x:x + crop]
                if patch.std() < MIN_CROP_STD:
                    record["flat_crops_skipped"] += 1
                    continue
                splits[split].append((f"{name}_y{y:04d}_x{x:04d}", patch))
                kept += 1
            record[f"{split}_crops"] = kept
        sources.append(record)
    splits["train"] = _spread(splits["train"], preset["max_train"])
    splits["test"] = _spread(splits["test"], preset["max_test"])
    if not splits["train"] or not splits["test"]:
        raise HarnessError("the mini suite found no real photos: scikit-image, scikit-learn or matplotlib sample "
                           "data must be installed")
    return splits, sources


def _to_tensor(patches: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float() / 255.0


def _windows(data: torch.Tensor, batch: int, window: int, gen: torch.Generator) -> torch.Tensor:
    index = torch.randint(0, data.shape[0], (batch,), generator=gen)
    limit = data.shape[-1] - window + 1
    ys = torch.randint(0, limit, (batch,), generator=gen)
    xs = torch.randint(0, limit, (batch,), generator=gen)
    return torch.stack([data[i, :, y:y + window, x:x + window] for i, y, x in zip(index, ys, xs)])


def _fit(model: torch.nn.Module, loss_fn, steps: int, data: torch.Tensor, preset: dict, gen: torch.Generator,
         label: str, bar: tqdm) -> float:
    optimiser = torch.optim.Adam(model.parameters(), lr=preset["lr"])
    recent = []
    for _ in range(steps):
        x = _windows(data, preset["batch"], preset["window"], gen)
        loss = loss_fn(x)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        recent = (recent + [loss.item()])[-20:]
        bar.set_postfix_str(f"{label} loss {recent[-1]:.4f}")
        bar.update(1)
    return float(np.mean(recent))


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@contextmanager
def _deterministic_torch():
    """Fixed thread count, and the caller's global random state left as it was (a build on
    first use must not change the seeded run around it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)


def fit_and_reconstruct(splits, preset: dict, seed: int, progress: bool = True):
    """Fit the six models on the train crops; reconstruct every crop. Returns ({family: {split: uint8}}, losses)."""
    train = _to_tensor([p for _, p in splits["train"]])
    everything = {split: _to_tensor([p for _, p in items]) for split, items in splits.items()}
    total = preset["ae_steps"] + preset["vq_steps"] + preset["denoiser_steps"]
    fakes: dict[str, dict[str, np.ndarray]] = {family: {} for family in FAMILIES}
    losses = {}
    with _deterministic_torch(), tqdm(total=total, desc="mini: fitting generators", disable=not progress,
                                      file=sys.stderr) as bar:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        autoencoders = SharedEncoderAutoencoders(preset["width"], preset["latent"])
        losses["autoencoders"] = _fit(autoencoders, autoencoders.loss, preset["ae_steps"], train, preset, gen,
                                      "autoencoders", bar)
        vq = VQAutoencoder(preset["width"], preset["latent"])
        losses["vqvae"] = _fit(vq, vq.loss, preset["vq_steps"], train, preset, gen, "vqvae", bar)
        denoiser = Denoiser(preset["denoiser_width"])
        losses["denoiser"] = _fit(denoiser, lambda x: denoiser.loss(x, gen), preset["denoiser_steps"], train,
                                  preset, gen, "denoiser", bar)
        with torch.no_grad():
            for split, data in everything.items():
                outs = {kind: [] for kind in FAMILIES}
                for chunk in data.split(128):
                    for kind, recon in autoencoders(chunk).items():
                        outs[kind].append(recon)
                    outs["vqvae"].append(vq(chunk))
                    outs["denoiser"].append(denoiser.reconstruct(chunk, gen))
                for kind in FAMILIES:
                    fakes[kind][split] = _to_uint8(torch.cat(outs[kind]))
    return fakes, {k: round(v, 6) for k, v in losses.items()}


def _psnr(real_items, fakes) -> dict[str, float]:
    """Mean PSNR (dB) of each family's 8-bit reconstructions of the test crops: how close the fakes are."""
    real = np.stack([p for _, p in real_items]).astype(np.float64)
    out = {}
    for family, by_split in fakes.items():
        mse = ((by_split["test"].astype(np.float64) - real) ** 2).mean(axis=(1, 2, 3))
        out[family] = round(float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10)))), 2)
    return out


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def build(root: str | Path, *, preset: str = "default", seed: int = 0, progress: bool = True) -> Path:
    """Build the mini suite into ``root`` (written beside it first, then renamed into place)."""
    root = Path(root)
    if (root / MARKER).is_file():
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise HarnessError(f"cannot build the mini suite into {root}: the folder exists, is not empty and has no "
                           f"{MARKER}; choose an empty or new folder with --set suite.root=PATH")
    if preset not in PRESETS:
        raise HarnessError(f"suite.preset must be one of {', '.join(PRESETS)}, got '{preset}'")
    settings = PRESETS[preset]
    started = time.perf_counter()
    if progress:
        print(f"harness: building the mini suite (preset '{preset}', seed {seed}) into {root}", file=sys.stderr)
    splits, sources = collect_crops(settings)
    fakes, losses = fit_and_reconstruct(splits, settings, seed, progress)

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    counts = {}
    # GenImage folder names: train -> our train (and val, by hash), val -> our test.
    for folder_split, split in (("train", "train"), ("val", "test")):
        names = [name for name, _ in splits[split]]
        first_nature = staging / FAMILIES[0] / folder_split / "nature"
        for family in FAMILIES:
            nature = staging / family / folder_split / "nature"
            ai = staging / family / folder_split / "ai"
            nature.mkdir(parents=True)
            ai.mkdir(parents=True)
            for (name, patch), fake in zip(splits[split], fakes[family][split]):
                if family == FAMILIES[0]:
                    _save_png(patch, nature / f"{name}.png")
                else:
                    _link_or_copy(first_nature / f"{name}.png", nature / f"{name}.png")
                _save_png(fake, ai / f"{name}.png")
            counts.setdefault(family, {})[split] = len(names)
    record = {
        "suite": "mini", "version": VERSION, "preset": preset, "seed": seed, "settings": settings,
        "generators": list(FAMILIES), "crops_per_generator_per_class": counts, "final_losses": losses,
        "test_psnr_db": _psnr(splits["test"], fakes),
        "sources": sources,
        "regions": "each photo: columns [0, train_columns[1]) -> train (GenImage 'train' folder), "
                   "[test_columns[0], width) -> test (GenImage 'val' folder); non-overlapping crops",
        "torch": torch.__version__,
    }
    (staging / MARKER).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    try:
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.rename(staging, root)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (root / MARKER).is_file():
            raise HarnessError(f"could not move the built mini suite into {root}") from None
        # Another process (another rank) finished the same build first: use its copy.
    if progress:
        print(f"harness: mini suite built in {time.perf_counter() - started:.0f} s at {root}", file=sys.stderr)
    return root


@hookimpl
def register_suites(register):
    register(MiniSuite)
