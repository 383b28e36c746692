"""CNNSpot: an ImageNet ResNet-50 fine-tuned with blur and JPEG augmentation (Wang et al., CVPR 2020).

Facts from CNNDetection (peterwang512/CNNDetection; read from the copy that GenImage-Dataset/GenImage @746781b ships
under ``detector_codes/CNNDetection-master``, since the original repository could not be fetched here):

- Model: torchvision's ResNet-50 layout with ``fc = Linear(2048, 1)`` (``networks/resnet.py``); the published files
  hold ``{'model': state_dict, ...}`` and are loaded strictly (``eval.py``); sigmoid = P(fake) (``0_real``,
  ``1_fake``).
- Test (``eval.py`` / ``data/datasets.py``): no resize, ``CenterCrop(224)`` (the paper's numbers; ``no_crop`` with
  batch 1 is the README's uncropped variant: ``detector.crop = false``), ImageNet normalisation.
- Training (``train.py``, README): ImageNet initialisation; shorter side resized to 256 (bilinear), blur
  sigma ~ U(0, 3) with probability p and JPEG quality ~ U{30..100} with probability p (p = 0.5 or 0.1: the
  ``Blur+JPEG(0.5)`` and ``(0.1)`` models), ``RandomCrop(224)``, horizontal flip; Adam lr 1e-4, beta1 0.9,
  batch 64, BCE; early stopping on validation accuracy (patience 5), then lr / 10 until 1e-6.

Departures: the JPEG round trip is always Pillow's (the official code draws OpenCV's or Pillow's encoder); the
plateau rule "lr / 10 and go on" is replaced by early stopping on validation accuracy with a cosine schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness import hookimpl
from harness.detector import IMAGENET_MEAN, IMAGENET_STD, Detector, InputPolicy, apply_policy
from harness.errors import HarnessError
from harness.images import blur_jpeg
from harness.plugins.detectors.patchops import (build_resnet, load_exact, load_imagenet_resnet, loaded_resnet_provenance,
                                                official_state, resnet_provenance)
from harness.weights import Checkpoint, Reported

_PAPER = "Wang et al., CNN-generated images are surprisingly easy to spot... for now, CVPR 2020"
_KEYS = {"conv1.weight": (64, 3, 7, 7), "layer4.2.conv3.weight": (2048, 512, 1, 1), "fc.weight": (1, 2048)}
# README table, "Acc (224)" column of each model (the paper's centre-cropped protocol), ForenSynths test folders.
_FORENSYNTHS = ("progan", "stylegan", "biggan", "cyclegan", "stargan", "gaugan", "crn", "imle", "seeingdark", "san",
                "deepfake", "stylegan2")
_ACC_05 = (100.0, 73.4, 59.0, 80.8, 81.0, 79.3, 87.6, 94.1, 78.3, 50.0, 51.1, 68.4)
_ACC_01 = (100.0, 87.1, 70.2, 85.2, 91.7, 78.9, 86.3, 86.2, 90.3, 50.5, 53.5, 84.4)
CHECKPOINTS = tuple(
    Checkpoint(name=f"cnnspot:blur-jpg-{p}", host="url", filename=f"blur_jpg_prob{p}.pth",
               url=url, trained_on=f"ForenSynths ProGAN, 20 classes, Blur+JPEG({p}) augmentation",
               paper=f"{_PAPER}; README table 'Acc (224)'",
               reported=(Reported(source=f"CNNDetection README, Blur+JPEG({p}) model, Acc (224)", metric="acc",
                                  values=dict(zip(_FORENSYNTHS, acc))),),
               keys=_KEYS, config={"crop": True},
               notes="Dropbox link from weights/download_weights.sh; sha256 and size unknown offline (trust on "
                     "first use). The README's 'whichfaceisreal' row is left out: it is no ForenSynths folder.")
    for p, url, acc in (
        ("0.5", "https://www.dropbox.com/s/2g2jagq2jn1fd0i/blur_jpg_prob0.5.pth?dl=1", _ACC_05),
        ("0.1", "https://www.dropbox.com/s/h7tkpcgiwuftb6g/blur_jpg_prob0.1.pth?dl=1", _ACC_01),
    )
)


class CNNSpot(Detector):
    name = "cnnspot"
    checkpoints = CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    channels_last = True
    description = ("CNNSpot (CVPR 2020): ImageNet ResNet-50 fine-tuned with blur + JPEG augmentation, fc Linear(2048, 1); "
                   "test: no resize, CenterCrop(224), ImageNet normalisation. Loads the official blur_jpg_prob*.pth.")
    reference = f"{_PAPER}; github.com/peterwang512/CNNDetection"
    defaults: dict[str, Any] = {
        "arch": "resnet50",
        "crop": True,  # test: CenterCrop(crop_size) as in the paper; false: the whole image (batch 1)
        "crop_size": 224,
        "load_size": 256,  # training: shorter side resized to this before the random crop
        "blur_prob": 0.5,
        "blur_sigma": [0.0, 3.0],
        "jpeg_prob": 0.5,
        "jpeg_quality": [30, 100],
        "pretrained": "imagenet",  # ImageNet init, loaded when training starts; 'none' = random init
        "backbone_weights": None,  # local torchvision ResNet state dict instead of the download
    }
    settings = {
        "crop_size": {"minimum": 1}, "load_size": {"minimum": 1},
        "blur_prob": {"minimum": 0, "maximum": 1}, "jpeg_prob": {"minimum": 0, "maximum": 1},
        "blur_sigma": {"items": {"type": "number", "minimum": 0}, "minItems": 2, "maxItems": 2},
        "jpeg_quality": {"items": {"type": "integer", "minimum": 1, "maximum": 100}, "minItems": 2, "maxItems": 2},
        "pretrained": {"type": ["string", "null"]}, "backbone_weights": {"type": ["string", "null"]},
    }
    training: dict[str, Any] = {"epochs": 100, "batch_size": 64, "lr": 1e-4, "betas": [0.9, 0.999],
                                "schedule": "cosine", "patience": 5, "select": "acc"}
    profiles = {
        "mini": {
            "detector": {"_note": "scaled down for the mini suite: a random-init ResNet-10 on 56-px crops of the "
                         "64-px images, no resize", "arch": "resnet10", "pretrained": "none", "crop_size": 56,
                         "load_size": 64},
            "train": {"_note": "scaled down for the mini suite", "epochs": 6, "batch_size": 32, "lr": 1e-3,
                      "max_steps_per_epoch": 60, "patience": 3},
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        if int(self.config["crop_size"]) > int(self.config["load_size"]):
            raise HarnessError(f"cnnspot: crop_size {self.config['crop_size']} is larger than load_size "
                               f"{self.config['load_size']}")
        self.model = build_resnet(self.config["arch"], num_classes=1)
        self.provenance: dict[str, Any] = resnet_provenance(self.config["arch"])

    def input_policy(self, train: bool = False) -> InputPolicy:
        size = int(self.config["crop_size"])
        norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        if train:
            return InputPolicy("resize_crop", size=size, resize_to=int(self.config["load_size"]), flip=True, **norm,
                               description=f"shorter side to {self.config['load_size']}, blur/JPEG, "
                                           f"RandomCrop({size}), flip")
        if self.config["crop"]:
            return InputPolicy("center_crop", size=size, **norm, description=f"no resize, CenterCrop({size})")
        return InputPolicy("native", size=size, **norm, description="the whole image, no resize (batch 1)")

    def preprocess(self, images, *, train: bool = False, generator: torch.Generator | None = None):
        if not train:
            return super().preprocess(images, train=False, generator=generator)
        from torchvision.transforms.v2 import functional as TF  # torchvision takes seconds to import

        # Official order: resize, then blur/JPEG, then crop and flip.
        policy = self.input_policy(True)
        resized = [TF.resize(img, [policy.resize_to]) for img in images]  # torchvision Resize(256) on PIL
        c = self.config
        augmented = blur_jpeg(resized, generator, blur_prob=c["blur_prob"], blur_sigma=c["blur_sigma"],
                              jpeg_prob=c["jpeg_prob"], jpeg_quality=c["jpeg_quality"])
        return apply_policy(InputPolicy("center_crop", size=policy.size, flip=True), augmented, train=True,
                            generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x)).squeeze(1)

    def load_weights(self, path: str | Path) -> None:
        """An official ``blur_jpg_prob*.pth`` (``{'model': state_dict}``) or a harness checkpoint."""
        load_exact(self.model, official_state(path, self.name), path, self.name)
        self.provenance = loaded_resnet_provenance(self.config["arch"], path)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        # The official layout (no "model." prefix), so a harness checkpoint loads where the official one does.
        return {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}

    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        c = self.config
        if self.provenance["random_init"]:  # neither loaded (--weights) nor initialised yet: the ImageNet init
            self.provenance = load_imagenet_resnet(self.model, c["arch"], c["pretrained"], c["backbone_weights"])
        betas = tuple(float(b) for b in train_config.get("betas", (0.9, 0.999)))
        return torch.optim.Adam(params, lr=float(train_config.get("lr", 1e-4)), betas=betas)


@hookimpl
def register_detectors(register):
    register(CNNSpot)
