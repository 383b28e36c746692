"""Produce the parity goldens (tests/golden/<detector>.json) from an official checkout.

    python scripts/make_parity_goldens.py DETECTOR OFFICIAL_CHECKOUT [--seed N]

The official code is imported from OFFICIAL_CHECKOUT (never copied into the project) and
run on CPU in fp32 with seeded random weights in the official checkpoint layout
(tests/golden/parity.py), on the bundled images, through the official test-time
preprocessing; the golden records the official outputs, the layout and the seed, so that
tests/test_parity.py can check the harness without the official code. The official
repository and commit are read from OFFICIAL_CHECKOUT's git metadata when present, else
from --commit. See tests/golden/README.md.

Where the official code fetches weights or imports packages unrelated to the forward pass
(tokenizers, OpenCV for training-time JPEG), this script patches that in the official
modules' namespace at run time, and says so in the golden's ``notes``.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.golden.parity import EXTRA_IMAGES, IMAGES, image_digest, layout_of, make_image, seeded_state, write_golden, write_official_files  # noqa: E402

GENERATORS = {}


def generator(name, repo, detector=None):
    """Register the generator of golden ``name`` for the harness detector ``detector`` (default: name)."""
    def wrap(fn):
        GENERATORS[name] = (fn, repo, detector or name)
        return fn
    return wrap


def stub_module(name: str, **attrs) -> None:
    """Stand in for a package that only an unused part of the official code imports."""
    try:
        importlib.import_module(name)
    except ImportError:
        sys.modules[name] = types.SimpleNamespace(**attrs)


def stub_pkg_resources() -> None:
    """pkg_resources (gone from current setuptools): OpenAI CLIP reads its ``packaging``;
    pytorch_wavelets' dual-tree part (unused) its ``resource_stream`` at import."""
    importlib.import_module("packaging.version")
    stub_module("pkg_resources", packaging=importlib.import_module("packaging"), resource_stream=None)


def image_set(names=None, sizes=None, extra=()):
    out = {}
    for name, (source, size) in {**IMAGES, **{k: EXTRA_IMAGES[k] for k in extra}}.items():
        if names and name not in names and name not in extra:
            continue
        size = (sizes or {}).get(name, size)
        out[name] = (source, list(size), make_image(source, size))
    return out


def images_section(images):
    return {n: {"source": s, "size": size, "sha256": image_digest(img)} for n, (s, size, img) in images.items()}


def save_pngs(images, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (_, _, img) in images.items():
        paths[name] = folder / f"{name}.png"
        img.save(paths[name])
    return paths


def dataset_outputs(model, dataset) -> dict:
    """The official model's logit (one output, sigmoid = P(fake)) for each image of an official
    ``ImageFolder`` dataset, by file stem."""
    outputs = {}
    with torch.no_grad():
        for i, (path, _) in enumerate(dataset.samples):
            logit = model(dataset[i][0][None]).flatten()
            outputs[Path(path).stem] = {"official_output": logit.tolist(), "p_fake": float(logit.sigmoid()),
                                        "logit": float(logit)}
    return outputs


def clip_load_from_file(clip_module, path: Path) -> None:
    """Make the official code's ``clip.load(name)`` read ``path`` (a plain state dict) instead of the named
    OpenAI model. ``torch.jit.load`` is made to fail at once: it is clip.load's first try, and on current torch
    a failed attempt consumes the file that clip.load then reads as a state dict."""
    official_load = clip_module.load

    def not_a_jit_archive(*args, **kwargs):
        raise RuntimeError("not a TorchScript archive")

    torch.jit.load = not_a_jit_archive
    clip_module.load = lambda name, device="cpu": official_load(str(path), device=device)


# -- UnivFD -------------------------------------------------------------------------------------
# The official CLIPModel is OpenAI CLIP (vendored in models/clip) + fc Linear(768, 1). ViT-L/14 is
# large and fixed by name in clip.load, but clip.load also takes a file and build_model infers the
# architecture from its state dict: a reduced ViT (patch 14, 224 px, width 128, 2 layers, 768-d
# projection so that the official 768 -> 1 head applies) runs the official code path at a
# fraction of the cost.
UNIVFD_OPEN_CLIP = {
    "embed_dim": 768,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "patch_size": 14},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 64, "heads": 1, "layers": 1},
}


@generator("univfd", "Yuheng-Li/UniversalFakeDetect")
def univfd(official: Path, seed: int, work: Path) -> dict:
    stub_pkg_resources()
    stub_module("ftfy")
    stub_module("regex")
    from models.clip import model as clip_model  # official
    import models.clip_models as clip_models  # official
    import validate  # official: RealFakeDataset (the test-time transform)

    v, t = UNIVFD_OPEN_CLIP["vision_cfg"], UNIVFD_OPEN_CLIP["text_cfg"]
    clip = clip_model.CLIP(UNIVFD_OPEN_CLIP["embed_dim"], v["image_size"], v["layers"], v["width"], v["patch_size"],
                           t["context_length"], t["vocab_size"], t["width"], t["heads"], t["layers"])
    layout = [[f"model.{k}", *rest] for k, *rest in layout_of(clip.state_dict())]
    layout += [["fc.weight", [1, 768]], ["fc.bias", [1]]]
    weights = {"seed": seed, "layout": layout, "fp16": True,
               "files": [{"name": "clip.pt", "prefix": "model."}, {"name": "fc_weights.pth", "prefix": "fc."}]}
    paths = write_official_files(weights, seeded_state(weights), work)

    clip_load_from_file(clip_models.clip, paths["clip.pt"])
    model = clip_models.CLIPModel("ViT-L/14")
    model.fc.load_state_dict(torch.load(paths["fc_weights.pth"], map_location="cpu", weights_only=True))  # as validate.py
    model.eval()

    images = image_set()
    pngs = save_pngs(images, work / "images")
    dataset = validate.RealFakeDataset(str(work / "images"), str(work / "images"), "ours", None, "CLIP:ViT-L/14")
    outputs = {}
    with torch.no_grad():
        for i, path in enumerate(dataset.total_list[: len(pngs)]):
            name = Path(path).stem
            logit = model(dataset[i][0][None]).flatten()
            outputs[name] = {"official_output": logit.tolist(), "p_fake": float(logit.sigmoid()),
                             "logit": float(logit)}
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": outputs,
        "harness": {"config": {"backbone": "open_clip:parity-univfd-clip", "pretrained": "none",
                               "backbone_weights": "{clip.pt}", "crop_size": 224, "quick_gelu": True},
                    "open_clip_config": {"name": "parity-univfd-clip", "config": UNIVFD_OPEN_CLIP},
                    "load": "fc_weights.pth"},
        # The same weights as train.py saves them: {'model': CLIPModel.state_dict(), ...}.
        "harness_alternatives": [
            {"what": "official training checkpoint {'model': model.* + fc.*}",
             "files": [{"name": "model_epoch_best.pth", "wrap": "model"}],
             "config": {"backbone": "open_clip:parity-univfd-clip", "pretrained": "none", "crop_size": 224,
                        "quick_gelu": True},
             "load": "model_epoch_best.pth"},
        ],
        "official_path": "models.CLIPModel('ViT-L/14') with clip.load given the reduced-CLIP file "
                         "(official build_model, fp16 convert, .float() on CPU); fc loaded as validate.py; "
                         "validate.RealFakeDataset transform (CenterCrop 224, ToTensor, CLIP Normalize); sigmoid",
        "notes": ["reduced CLIP ViT (width 128, 2 layers, patch 14, 224 px, 768-d projection) instead of ViT-L/14",
                  "pkg_resources/ftfy/regex stubbed where missing (tokenizer only)",
                  "torch.jit.load made to fail at once: on current torch a failed jit.load consumes the file "
                  "that clip.load then reads as a plain state dict"],
    }


# -- NPR ----------------------------------------------------------------------------------------
@generator("npr", "chuangchuangtan/NPR-DeepfakeDetection")
def npr(official: Path, seed: int, work: Path) -> dict:
    stub_module("cv2")  # training-time JPEG only
    from networks.resnet import resnet50  # official
    from data.datasets import binary_dataset  # official

    model = resnet50(num_classes=1)
    weights = {"seed": seed, "conv_gain": 2.0, "layout": layout_of(model.state_dict()), "files": [{"name": "NPR.pth"}]}
    paths = write_official_files(weights, seeded_state(weights), work)
    model.load_state_dict(torch.load(paths["NPR.pth"], map_location="cpu", weights_only=True), strict=True)  # as test.py
    model.eval()

    images = image_set()
    save_pngs(images, work / "data" / "0_real")
    # test.py for ForenSynths: no_resize False, no_crop True (Resize((256, 256)) on the PIL image).
    opt = types.SimpleNamespace(isTrain=False, no_crop=True, no_flip=True, no_resize=False, loadSize=256,
                                cropSize=224)
    dataset = binary_dataset(opt, str(work / "data"))
    outputs = dataset_outputs(model, dataset)
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": outputs,
        "harness": {"config": {}, "load": "NPR.pth"},
        "official_path": "networks.resnet.resnet50(num_classes=1), load_state_dict strict as test.py; "
                         "data.datasets.binary_dataset with test.py's ForenSynths options (Resize((256, 256)), "
                         "no crop, ImageNet Normalize); sigmoid",
        "notes": ["cv2 stubbed where missing (training-time JPEG only)"],
    }


# -- SSP ----------------------------------------------------------------------------------------
def replay_harness_draws(official_random_crop, seed: int, candidates: int, small_resize: int, size: int = 32):
    """Make the official RandomCrop draw the crop corners the harness draws for each image.

    Both sides draw uniform random corners; which ones is a matter of the random stream (the
    official code uses the global torch RNG, the harness a generator seeded by the image), so
    parity of the selection and everything after it needs the same candidates. The corners
    come from the harness's own draw (patchops.random_origins after content_generator); the
    official code then ranks, picks and crops them itself. Returns a function that arms the
    replay for one image.
    """
    from harness.plugins.detectors.patchops import content_generator, random_origins, to_uint8_tensor

    queue = []

    def get_params(img, output_size):
        return queue.pop(0)

    official_random_crop.get_params = staticmethod(get_params)

    def arm(image):
        generator = content_generator(to_uint8_tensor(image), seed)
        w, h = image.size
        if min(w, h) < size:
            w = h = small_resize
        tops, lefts = random_origins(h, w, size, candidates, generator)
        queue[:] = [(int(t), int(l), size, size) for t, l in zip(tops, lefts)]
        return queue

    return arm


SSP_SIZES = {"chelsea": (40, 24)}  # a side below 32: the official resize-to-256 branch


@generator("ssp", "bcmi/SSP-AI-Generated-Image-Detection")
def ssp(official: Path, seed: int, work: Path) -> dict:
    stub_module("cv2")  # training-time JPEG only
    import networks.ssp as ssp_module  # official
    from networks.resnet import resnet50  # official
    from torchvision import transforms
    from utils import tdataloader  # official: processing()

    ssp_module.resnet50 = lambda pretrained=True: resnet50(pretrained=False)  # no ImageNet download
    model = ssp_module.ssp()
    fixed = {"srm.kernel": model.state_dict()["srm.kernel"].tolist()}
    weights = {"seed": seed, "layout": layout_of(model.state_dict()), "fixed": fixed, "files": [{"name": "ssp.pth"}]}
    paths = write_official_files(weights, seeded_state(weights), work)
    model.load_state_dict(torch.load(paths["ssp.pth"], map_location="cpu", weights_only=True))  # as test.py
    model.eval()

    images = image_set(sizes=SSP_SIZES, extra=("flats",))
    arm = replay_harness_draws(transforms.RandomCrop, seed=0, candidates=64, small_resize=256)
    # test-time options (options.py defaults): isPatch True, patch_size 32, trainsize 256, aug off.
    opt = types.SimpleNamespace(aug=False, isPatch=True, patch_size=32, trainsize=256)
    outputs = {}
    with torch.no_grad():
        for name, (_, _, img) in images.items():
            queue = arm(img)
            x = tdataloader.processing(img, opt)
            assert not queue, "the official code drew another number of crops than the harness"
            z = model(x[None]).flatten()
            # Labels are inverted (nature = 1): sigmoid(z) = P(real).
            outputs[name] = {"official_output": z.tolist(), "p_fake": float(1 - z.sigmoid()), "logit": float(-z)}
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": outputs,
        "harness": {"config": {"seed": 0}, "load": "ssp.pth"},
        "official_path": "networks.ssp.ssp() loaded as test.py; utils.tdataloader.processing with isPatch "
                         "(utils.patch.patch_img: 64 RandomCrop(32), min complexity), ToTensor, ImageNet Normalize; "
                         "P(fake) = 1 - sigmoid (nature = 1)",
        "notes": ["the ImageNet download of resnet50(pretrained=True) skipped (all weights are replaced)",
                  "RandomCrop.get_params replays the harness's candidate corners (same random law, other stream)",
                  "cv2 stubbed where missing (training-time JPEG only)"],
    }


# -- DRCT ---------------------------------------------------------------------------------------
# Official test: get_models(..., embedding_size=1024) (network.models.ContrastiveModels) loaded
# strict, data.dataset.read_image (cv2 BGR -> RGB), data.transform.create_val_transforms(224,
# is_crop=True) (albumentations PadIfNeeded 0 + CenterCrop + Normalize), P(fake) = 1 - softmax[:, 0].
# Needs albumentations (1.3.0 as pinned) and OpenCV importable, e.g. pip install --target DIR.
DRCT_OPEN_CLIP = {**UNIVFD_OPEN_CLIP}  # the reduced OpenAI-layout CLIP ViT of the UnivFD golden


def _drct_common(images, model, work):
    from data.dataset import read_image  # official
    from data.transform import create_val_transforms  # official

    transform = create_val_transforms(size=224, is_crop=True)
    pngs = save_pngs(images, work / "images")
    outputs = {}
    with torch.no_grad():
        for name, path in pngs.items():
            image, ok = read_image(str(path))
            assert ok
            z = model(transform(image=image)["image"][None])
            p_fake = 1 - torch.softmax(z, dim=1)[:, 0]
            outputs[name] = {"official_output": z.flatten().tolist(), "p_fake": float(p_fake),
                             "logit": float(z[0, 1] - z[0, 0])}
    return outputs


def _drct_imports():
    stub_pkg_resources()
    stub_module("transformers", CLIPModel=None)  # only the HF-CLIP variant uses it
    from network import models  # official

    return models


@generator("drct-convnext", "beibuwandeluori/DRCT", "drct")
def drct_convnext(official: Path, seed: int, work: Path) -> dict:
    models = _drct_imports()
    model = models.get_models(model_name="convnext_base_in22k", num_classes=2, pretrained=False,
                              embedding_size=1024)
    weights = {"seed": seed, "layout": layout_of(model.state_dict()), "files": [{"name": "drct_convnext.pth"}]}
    paths = write_official_files(weights, seeded_state(weights), work)
    model.load_state_dict(torch.load(paths["drct_convnext.pth"], map_location="cpu", weights_only=True), strict=True)  # as train.py
    model.eval()
    images = image_set()
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": _drct_common(images, model, work),
        "harness": {"config": {"variant": "convnext", "convnext": "convnext_base", "pretrained": "none"},
                    "load": "drct_convnext.pth"},
        "official_path": "network.models.get_models('convnext_base_in22k', num_classes=2, pretrained=False, "
                         "embedding_size=1024), load_state_dict strict; read_image + create_val_transforms(224, "
                         "is_crop=True); P(fake) = 1 - softmax[:, 0]",
        "notes": ["built with the installed timm (the official pin is timm 0.6.12)",
                  "transformers stubbed where missing (HF-CLIP variant only)"],
    }


@generator("drct-clip", "beibuwandeluori/DRCT", "drct")
def drct_clip(official: Path, seed: int, work: Path) -> dict:
    models = _drct_imports()
    v, t = DRCT_OPEN_CLIP["vision_cfg"], DRCT_OPEN_CLIP["text_cfg"]
    clip = models.clip.model.CLIP(DRCT_OPEN_CLIP["embed_dim"], v["image_size"], v["layers"], v["width"],
                                  v["patch_size"], t["context_length"], t["vocab_size"], t["width"], t["heads"],
                                  t["layers"])
    layout = [[f"model.model.{k}", *rest] for k, *rest in layout_of(clip.state_dict())]
    layout += [["model.fc.weight", [1024, 768]], ["model.fc.bias", [1024]],
               ["fc.weight", [2, 1024]], ["fc.bias", [2]]]
    weights = {"seed": seed, "layout": layout, "fp16": True,
               "files": [{"name": "drct_clip.pth"}, {"name": "clip.pt", "prefix": "model.model."}]}
    paths = write_official_files(weights, seeded_state(weights), work)

    clip_load_from_file(models.clip, paths["clip.pt"])
    model = models.get_models(model_name="clip-ViT-L-14", num_classes=2, pretrained=False, embedding_size=1024,
                              freeze_extractor=True)
    model.load_state_dict(torch.load(paths["drct_clip.pth"], map_location="cpu", weights_only=True), strict=True)  # as train.py
    model.eval()
    images = image_set()
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": _drct_common(images, model, work),
        "harness": {"config": {"variant": "clip", "clip_model": "parity-drct-clip", "pretrained": "none",
                               "quick_gelu": True},
                    "open_clip_config": {"name": "parity-drct-clip", "config": DRCT_OPEN_CLIP},
                    "load": "drct_clip.pth"},
        "official_path": "network.models.get_models('clip-ViT-L-14', num_classes=2, embedding_size=1024) "
                         "(CLIPModelV2: openai-clip clip.load given the reduced-CLIP file), load_state_dict strict; "
                         "read_image + create_val_transforms(224, is_crop=True); P(fake) = 1 - softmax[:, 0]",
        "notes": ["reduced CLIP ViT (width 128, 2 layers, patch 14, 224 px, 768-d projection) instead of ViT-L/14",
                  "openai-clip 1.0.1 from PyPI (the official requirement 'openai-clip')",
                  "torch.jit.load made to fail at once (see the UnivFD golden)",
                  "pkg_resources/transformers stubbed where missing"],
    }


# -- SEP ----------------------------------------------------------------------------------------
# The frequency view is CenterCrop 256: one image larger than 256 with an odd margin.
SEP_SIZES = {"astronaut": (300, 271), "chelsea": (40, 24)}
# Channel, rows, columns of the frequency image recorded: across the LL | LH seam of the tiling.
SEP_PROBE_REGION = [0, [124, 132], [124, 132]]


def _region(region):
    channel, (r0, r1), (c0, c1) = region
    return (channel, slice(r0, r1), slice(c0, c1))


@generator("sep", "1112348/SEP-for-AIGCDetection")
def sep(official: Path, seed: int, work: Path) -> dict:
    stub_pkg_resources()
    import models.model as sep_model  # official (needs pytorch_wavelets)
    from data.dataset import MyValDataSet  # official: select_patch_val, trans_patch, CenterCrop 256
    from torchvision import transforms

    official_resnet = sep_model.My_resnet50
    sep_model.My_resnet50 = lambda pretrained=True: official_resnet(pretrained=False)  # no ImageNet download
    model = sep_model.SEP()
    fixed = {"srm.kernel": model.state_dict()["srm.kernel"].tolist()}
    weights = {"seed": seed, "layout": layout_of(model.state_dict()), "fixed": fixed, "files": [{"name": "sep.pth"}]}
    paths = write_official_files(weights, seeded_state(weights), work)
    model.load_state_dict(torch.load(paths["sep.pth"], map_location="cpu", weights_only=True))  # as inference.py
    model.eval()

    images = image_set(names=("astronaut", "chelsea"), sizes=SEP_SIZES)  # two: a ResNet-50 at 512 px is slow
    pngs = save_pngs(images, work / "images")
    arm = replay_harness_draws(transforms.RandomCrop, seed=0, candidates=256, small_resize=256)
    dataset = MyValDataSet([str(p) for p in pngs.values()], [0] * len(pngs))
    outputs, probes = {}, {}
    with torch.no_grad():
        for i, (name, (_, _, img)) in enumerate(images.items()):
            queue = arm(img)
            patch, dwt_img, _ = dataset[i]
            assert not queue, "the official code drew another number of crops than the harness"
            z = model(patch[None], dwt_img[None])
            # Class folders sorted: ai = 0, nature = 1.
            outputs[name] = {"official_output": z.flatten().tolist(), "p_fake": float(torch.softmax(z, 1)[0, 0]),
                             "logit": float(z[0, 0] - z[0, 1])}
            # With random weights the frequency branch moves the logit little (att * (1 + 0.2 w)):
            # its input, the tiled and resized DWT, is compared on its own.
            freq = model._preprocess_dwt(dwt_img[None])[0]
            probes[name] = {"frequency_image": {"input_view": 1, "abs_mean": float(freq.abs().mean()),
                                                "region": SEP_PROBE_REGION,
                                                "values": freq[_region(SEP_PROBE_REGION)].tolist()}}
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": outputs,
        "probes": probes,
        "harness": {"config": {"seed": 0}, "load": "sep.pth"},
        "official_path": "models.model.SEP() loaded as inference.py; data.dataset.MyValDataSet (select_patch_val: "
                         "256 RandomCrop(32), min complexity, ImageNet Normalize; CenterCrop 256 + ToTensor); "
                         "P(fake) = softmax[:, 0] (class folders sorted: ai = 0, nature = 1)",
        "notes": ["the ImageNet download of My_resnet50(pretrained=True) skipped (all weights are replaced)",
                  "RandomCrop.get_params replays the harness's candidate corners (same random law, other stream)",
                  "pkg_resources stubbed where missing (pytorch_wavelets' unused dual-tree transform)"],
    }


# -- PatchCraft / RPTC --------------------------------------------------------------------------
# No code from the PatchCraft authors; the public port used is sidbench's RPTC (models/RPTC.py,
# dataset/process.py rptc_processing), the same network and {'netC': ...} checkpoint as
# AIGCDetectBenchmark's. sidbench's default cropSize is 224 (28-px patches); the harness default
# and AIGCDetectBenchmark use 256 (32-px patches): --cropSize 256 here.
PATCHCRAFT_SIZES = {"chelsea": (40, 24)}  # a side below the patch size: the official resize branch


def _package_without_init(name: str, folder: Path, **attrs) -> None:
    """Import submodules of ``folder`` as ``name.*`` without running its ``__init__`` (which
    imports every other detector of the benchmark and their weights)."""
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    module.__dict__.update(attrs)
    sys.modules[name] = module


@generator("patchcraft", "mever-team/sidbench")
def patchcraft(official: Path, seed: int, work: Path) -> dict:
    stub_module("cv2")  # JPEG / resize augmentations only
    _package_without_init("models", official / "models", VALID_MODELS=["RPTC"])
    from models.RPTC import Net  # official
    from torchvision import transforms

    _package_without_init("dataset", official / "dataset")
    from dataset.process import rptc_processing  # official

    model = Net()
    fixed = {"group1.hpf.weight": model.state_dict()["group1.hpf.weight"].tolist()}
    weights = {"seed": seed, "conv_gain": 2.0, "layout": layout_of(model.state_dict()), "fixed": fixed,
               "files": [{"name": "RPTC.pth", "wrap": "netC"}]}
    paths = write_official_files(weights, seeded_state(weights), work)
    model.load_weights(str(paths["RPTC.pth"]))  # official: {'netC': ...} strict
    model.eval()

    # Not 'flats': this port ranks by ED on float [0, 1] tensors, so patches whose 8-bit
    # complexities tie exactly are ordered by float rounding noise (sum order), which the harness
    # does not reproduce: it ranks by the exact integer complexity, ties in draw order. There the
    # poor tiling differs among tied patches (4.3e-4 on the logit of 'flats' at seed 1234).
    images = image_set(sizes=PATCHCRAFT_SIZES)
    arm = replay_harness_draws(transforms.RandomCrop, seed=0, candidates=192, small_resize=32, size=32)
    opt = types.SimpleNamespace(patchNum=3, cropSize=256)
    outputs = {}
    with torch.no_grad():
        for name, (_, _, img) in images.items():
            queue = arm(img)
            x = rptc_processing(img, opt)
            assert not queue, "the official code drew another number of crops than the harness"
            z = model(x[None]).flatten()
            outputs[name] = {"official_output": z.tolist(), "p_fake": float(z.sigmoid()), "logit": float(z)}
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": outputs,
        "harness": {"config": {"seed": 0}, "load": "RPTC.pth"},
        "official_path": "sidbench models.RPTC.Net().load_weights ({'netC'} strict); dataset.process.rptc_processing "
                         "(patchNum 3, cropSize 256: 192 RandomCrop(32) ranked by ED, 64 poorest / richest tiled); "
                         "sigmoid (Net.predict)",
        "notes": ["port, not the authors' code (none is public); cropSize 256 instead of sidbench's default 224",
                  "no image with exact complexity ties: the port orders them by float rounding (ED on [0, 1] "
                  "floats), the harness by draw order (exact integer complexity)",
                  "models/ and dataset/ imported without their __init__ (which loads every other detector)",
                  "RandomCrop.get_params replays the harness's candidate corners (same random law, other stream)",
                  "cv2 stubbed where missing (augmentations only)"],
    }


# -- CNNSpot -------------------------------------------------------------------------------------
# The original peterwang512/CNNDetection could not be fetched here; GenImage-Dataset/GenImage ships a copy
# under detector_codes/CNNDetection-master (pass that folder and --repo-commit of GenImage).
@generator("cnnspot", "GenImage-Dataset/GenImage (detector_codes/CNNDetection-master, a copy of "
           "peterwang512/CNNDetection)")
def cnnspot(official: Path, seed: int, work: Path) -> dict:
    stub_module("cv2")  # training-time JPEG only
    from networks.resnet import resnet50  # official
    from data.datasets import binary_dataset  # official

    model = resnet50(num_classes=1)
    weights = {"seed": seed, "conv_gain": 1.0, "layout": layout_of(model.state_dict()),
               "files": [{"name": "blur_jpg_prob0.5.pth", "wrap": "model"}]}
    paths = write_official_files(weights, seeded_state(weights), work)
    model.load_state_dict(torch.load(paths["blur_jpg_prob0.5.pth"], map_location="cpu", weights_only=True)["model"])  # as eval.py
    model.eval()
    images = image_set()
    save_pngs(images, work / "data" / "0_real")
    # eval.py: no_resize True, CenterCrop(224) (TestOptions' no_crop False); data_augment draws nothing at p = 0.
    opt = types.SimpleNamespace(isTrain=False, no_crop=False, no_flip=True, no_resize=True, loadSize=256,
                                cropSize=224, blur_prob=0.0, jpg_prob=0.0, rz_interp=["bilinear"])
    dataset = binary_dataset(opt, str(work / "data"))
    outputs = dataset_outputs(model, dataset)
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": outputs,
        "harness": {"config": {}, "load": "blur_jpg_prob0.5.pth"},
        "official_path": "networks.resnet.resnet50(num_classes=1), {'model': ...} loaded as eval.py; "
                         "data.datasets.binary_dataset with eval.py's options (no resize, CenterCrop(224))",
        "notes": ["the copy of CNNDetection inside GenImage's repository (the original could not be fetched)",
                  "conv_gain 1: with He scaling the 16 residual blocks saturate the logit",
                  "cv2 stubbed where missing (training-time JPEG only)"],
    }


# -- LaDeDa / Tiny-LaDeDa ------------------------------------------------------------------------
def _ladeda_transform(official: Path, images, work: Path, load_size: int):
    """data.datasets.binary_dataset with test.py's options: Resize((L, L)) on the PIL image, no crop."""
    stub_module("cv2")  # training-time JPEG only
    from data.datasets import binary_dataset  # official

    save_pngs(images, work / "data" / "0_real")
    opt = types.SimpleNamespace(isTrain=False, no_crop=True, no_flip=True, no_resize=False, loadSize=load_size,
                                cropSize=224, is_aug=False)
    dataset, _ = binary_dataset(opt, str(work / "data"))
    return dataset


@generator("ladeda", "barcavia/RealTime-DeepfakeDetection-in-the-RealWorld")
def ladeda(official: Path, seed: int, work: Path) -> dict:
    # networks/LaDeDa.py does not compile at e734562: its LaDeDa33/17/9/5 helpers put a parameter
    # without default after one with a default. The classes above them are executed as written.
    source = (official / "networks" / "LaDeDa.py").read_text()
    namespace = {"__file__": str(official / "networks" / "LaDeDa.py"), "__name__": "networks.LaDeDa"}
    exec(compile(source[: source.index("def LaDeDa33")], "networks/LaDeDa.py", "exec"), namespace)
    # LaDeDa9 as the helper would build it, with trainer.py's fc Linear(2048, 1).
    model = namespace["LaDeDa"](namespace["Bottleneck"], [3, 4, 6, 3], strides=[2, 2, 2, 1], kernel3=[1, 1, 0, 0],
                                preprocess_type="NPR")
    model.fc = torch.nn.Linear(2048, 1)
    weights = {"seed": seed, "conv_gain": 1.0, "layout": layout_of(model.state_dict()),
               "files": [{"name": "WildRF_LaDeDa.pth"}]}
    paths = write_official_files(weights, seeded_state(weights), work)
    model.load_state_dict(torch.load(paths["WildRF_LaDeDa.pth"], map_location="cpu", weights_only=True), strict=True)  # as test.py
    model.eval()
    images = image_set()
    dataset = _ladeda_transform(official, images, work, load_size=96)
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": dataset_outputs(model, dataset),
        "harness": {"config": {"load_size": 96, "crop_size": 96}, "load": "WildRF_LaDeDa.pth"},
        "official_path": "networks/LaDeDa.py LaDeDa(Bottleneck, [3, 4, 6, 3], strides [2, 2, 2, 1], kernel3 "
                         "[1, 1, 0, 0], NPR) = LaDeDa9, fc Linear(2048, 1), load_state_dict strict as test.py; "
                         "data.datasets.binary_dataset with test.py's options at --loadSize 96",
        "notes": ["networks/LaDeDa.py executed up to its LaDeDa33 helper, which does not compile",
                  "loadSize 96 (an official option) instead of the default 256, to keep the test cheap",
                  "conv_gain 1: with He scaling the 17 residual blocks saturate the logit",
                  "cv2 stubbed where missing (training-time JPEG only)"],
    }


@generator("tiny-ladeda", "barcavia/RealTime-DeepfakeDetection-in-the-RealWorld")
def tiny_ladeda_golden(official: Path, seed: int, work: Path) -> dict:
    from networks.Tiny_LaDeDa import tiny_ladeda  # official

    model = tiny_ladeda("right_diag")
    model.fc = torch.nn.Linear(8, 1)  # test.py: features_dim 8, the released files' shape
    weights = {"seed": seed, "conv_gain": 2.0, "layout": layout_of(model.state_dict()),
               "files": [{"name": "WildRF_Tiny_LaDeDa.pth"}]}
    paths = write_official_files(weights, seeded_state(weights), work)
    model.load_state_dict(torch.load(paths["WildRF_Tiny_LaDeDa.pth"], map_location="cpu", weights_only=True), strict=True)
    model.eval()
    images = image_set()
    dataset = _ladeda_transform(official, images, work, load_size=256)
    return {
        "weights": weights,
        "images": images_section(images),
        "outputs": dataset_outputs(model, dataset),
        "harness": {"config": {}, "load": "WildRF_Tiny_LaDeDa.pth"},
        "official_path": "networks/Tiny_LaDeDa.tiny_ladeda('right_diag') with test.py's fc Linear(8, 1), "
                         "load_state_dict strict; data.datasets.binary_dataset with test.py's options "
                         "(Resize((256, 256)), no crop)",
        "notes": ["cv2 stubbed where missing (training-time JPEG only)"],
    }


# -- main ---------------------------------------------------------------------------------------
def git_commit(path: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detector", choices=sorted(GENERATORS))
    parser.add_argument("official", type=Path, help="a checkout of the official repository")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--commit", help="the official commit, when the checkout has no git metadata")
    args = parser.parse_args(argv)
    fn, repo, detector = GENERATORS[args.detector]
    commit = git_commit(args.official) or args.commit
    if not commit:
        parser.error(f"{args.official} has no git metadata: pass --commit")
    torch.set_num_threads(1)
    sys.path.insert(0, str(args.official.resolve()))
    with tempfile.TemporaryDirectory() as work:
        golden = fn(args.official.resolve(), args.seed, Path(work))
    golden = {"detector": detector, "official": {"repo": f"github.com/{repo}", "commit": commit},
              "torch": torch.__version__, **golden}
    print(write_golden(args.detector, golden))
    for name, out in golden["outputs"].items():
        print(f"  {name}: official {out['official_output']} -> p_fake {out['p_fake']:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
