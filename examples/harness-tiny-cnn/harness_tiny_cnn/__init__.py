"""A three-layer CNN detector: the smallest complete detector plugin."""

from torch import nn

from harness import hookimpl
from harness.detector import Detector, InputPolicy


class TinyCNN(Detector):
    name = "tiny-cnn"
    description = "Three-layer CNN; the example every new detector plugin starts from."
    reference = "examples/harness-tiny-cnn"
    defaults = {"width": 16, "size": 32}
    settings = {"width": {"minimum": 1}, "size": {"minimum": 8}}  # types come from the defaults
    training = {"epochs": 10, "batch_size": 16, "lr": 1e-2}

    def __init__(self, config=None):
        super().__init__(config)
        width = self.config["width"]
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1),
        )

    def input_policy(self, train=False):
        # Test: centre crop (padding small images); training: random crop and flips.
        return InputPolicy(geometry="center_crop", size=self.config["size"],
                           mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), flip=train)

    def forward(self, x):
        # One raw logit per image; sigmoid(logit) = P(fake).
        return self.net(self.normalize(x)).squeeze(1)


@hookimpl
def register_detectors(register):
    register(TinyCNN)
