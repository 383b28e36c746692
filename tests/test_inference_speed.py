"""The inference-speed paths: numpy input geometry, batch norm folded into convolutions, thread
and worker defaults. Each is checked against the slower path it replaces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from harness.checkpoints import state_digest
from harness.detector import Detector, InputPolicy, apply_policy, fold_batchnorm
from harness.errors import HarnessError
from harness.pipeline import prepare_for_inference
from harness.registry import get_detector
from harness.runs import default_workers, start_run, thread_settings
from harness.scoring import model_key


# -- input geometry: numpy against the torchvision float path it replaced -----------------------

def torchvision_reference(policy: InputPolicy, images, *, train=False, generator=None):
    """The geometry done on float tensors with torchvision, as the harness did it before."""
    size = policy.size
    if policy.geometry == "resize":
        images = [TF.resize(img, [size, size]) for img in images]
    elif policy.geometry == "resize_crop":
        images = [TF.resize(img, [policy.resize_to]) for img in images]
    tensors = [TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True) for img in images]
    if policy.geometry != "resize":
        if policy.geometry == "tile_crop":
            h, w = tensors[0].shape[-2:]
            tensors = [t.repeat(1, -(-size // h), -(-size // w)) for t in tensors]
        h, w = tensors[0].shape[-2:]
        ph, pw = max(0, size - h), max(0, size - w)
        if ph or pw:
            tensors = [TF.pad(t, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=policy.pad_value / 255.0)
                       for t in tensors]
        h, w = tensors[0].shape[-2:]
        if train:
            top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
        elif policy.center_rounding == "floor":
            top, left = (h - size) // 2, (w - size) // 2
        else:
            top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        tensors = [t[:, top:top + size, left:left + size] for t in tensors]
    if train and policy.flip and bool(torch.rand((), generator=generator) < 0.5):
        tensors = [t.flip(-1) for t in tensors]
    return tensors


POLICIES = [
    InputPolicy("center_crop", size=32),
    InputPolicy("center_crop", size=32, pad_value=127, center_rounding="floor"),
    InputPolicy("resize", size=24),
    InputPolicy("resize_crop", size=20, resize_to=26),
    InputPolicy("tile_crop", size=48, pad_value=3),
    InputPolicy("center_crop", size=28, flip=True),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.geometry}-{p.size}-{p.pad_value}")
@pytest.mark.parametrize("shape", [(40, 50), (21, 30), (33, 33), (17, 60)])
@pytest.mark.parametrize("train", [False, True])
def test_numpy_geometry_equals_the_torchvision_float_path(policy, shape, train):
    rng = np.random.default_rng(sum(shape))
    images = [Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) for _ in range(2)]
    for seed in range(3):
        got = apply_policy(policy, images, train=train, generator=torch.Generator().manual_seed(seed))
        want = torchvision_reference(policy, images, train=train, generator=torch.Generator().manual_seed(seed))
        for g, w in zip(got, want):
            assert g.dtype == torch.float32 and g.is_contiguous()
            assert torch.equal(g, w)


def test_every_pixel_value_converts_exactly():
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = Image.fromarray(np.stack([arr] * 3, axis=-1))
    (got,) = apply_policy(InputPolicy("center_crop", size=16), [img])
    assert torch.equal(got, TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True))


# -- batch norm folding -------------------------------------------------------------------------

def randomise_batchnorms(module: nn.Module, seed: int = 0) -> int:
    """Give every batch norm non-trivial statistics (a fresh one is the identity in eval mode)."""
    g = torch.Generator().manual_seed(seed)
    count = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            count += 1
            with torch.no_grad():
                m.running_mean.copy_(0.2 * torch.rand(m.num_features, generator=g) - 0.1)
                m.running_var.copy_(0.4 * torch.rand(m.num_features, generator=g) + 0.8)
                m.weight.copy_(0.4 * torch.rand(m.num_features, generator=g) + 0.8)
                m.bias.copy_(0.2 * torch.rand(m.num_features, generator=g) - 0.1)
    return count


@pytest.mark.parametrize("name", ["npr", "ipdnet", "ssp", "patchcraft", "sep"])
def test_folded_cnn_detector_gives_the_same_logits_and_the_same_cache_key(name):
    cls = get_detector(name)
    torch.manual_seed(0)
    detector = cls(cls.profiles.get("mini", {}).get("detector", {})).eval()
    batch_norms = randomise_batchnorms(detector)
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)) for _ in range(3)]
    x = torch.stack([detector.preprocess([img])[0] for img in images])
    key_before = model_key(detector, precision="fp32")["key"]
    digest_before = state_digest(detector)
    with torch.no_grad():
        reference = detector(x)
        folded = detector.fold_batchnorm()
        out = detector(x)
    assert folded == batch_norms > 0  # every batch norm of these models follows a convolution
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in detector.modules())
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert state_digest(detector) != digest_before  # the weights did change ...
    assert model_key(detector, precision="fp32")["key"] == key_before  # ... the cache key did not


class Shapes(nn.Module):
    """Pairs that must not be folded, beside one that must."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)  # conv output used twice
        self.conv_b, self.bn_b = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)  # bn_b also applied to another input
        self.conv_c, self.bn_c = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)  # foldable
        self.bn_d = nn.BatchNorm2d(4)  # after a ReLU, not a convolution

    def forward(self, x):
        a = self.conv_a(x)
        y = self.bn_a(a) + a
        y = self.bn_b(self.conv_b(y)) + self.bn_b(y)
        y = self.bn_c(self.conv_c(y))
        return self.bn_d(torch.relu(y))


class Untraceable(Detector):
    """A forward with data-dependent Python: only its traceable child is searched."""

    name = "untraceable"

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        y = self.stem(x)
        if float(y.mean()) > 1e9:  # looks at a value: torch.fx cannot trace this
            y = y * 0
        return self.head(y.mean(dim=(2, 3))).squeeze(1)


def test_only_a_convolution_feeding_one_batch_norm_alone_is_folded():
    model = Shapes().eval()
    randomise_batchnorms(model)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        reference = model(x)
        assert fold_batchnorm(model) == 1
        out = model(x)
    assert isinstance(model.bn_c, nn.Identity)
    assert all(isinstance(m, nn.BatchNorm2d) for m in (model.bn_a, model.bn_b, model.bn_d))
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


def test_an_untraceable_forward_is_searched_child_by_child():
    detector = Untraceable().eval()
    randomise_batchnorms(detector)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        reference = detector(x)
        assert detector.fold_batchnorm() == 1
        torch.testing.assert_close(detector(x), reference, rtol=1e-5, atol=1e-6)


def test_a_folded_detector_refuses_to_train_and_training_mode_is_never_folded():
    detector = Untraceable().train()
    assert fold_batchnorm(detector) == 0  # batch norm in training mode uses batch statistics
    detector.fold_batchnorm()
    with pytest.raises(HarnessError, match="folded"):
        detector.train()
    detector.eval()  # eval mode stays allowed


def test_fusion_is_on_by_default_and_off_with_eval_fuse_false():
    on, off = Untraceable(), Untraceable()
    prepare_for_inference(on, {"run": {}, "eval": {}})
    prepare_for_inference(off, {"run": {}, "eval": {"fuse": False}})
    assert isinstance(on.stem[1], nn.Identity)
    assert isinstance(off.stem[1], nn.BatchNorm2d) and off.unfolded_weights_digest is None


# -- threads and workers ----------------------------------------------------------------------

def test_worker_defaults_follow_the_cpu_count():
    assert [default_workers(n) for n in (1, 2, 3, 4, 8, 64)] == [0, 0, 1, 2, 4, 4]


def test_thread_settings_precedence(monkeypatch):
    monkeypatch.setattr("harness.runs.available_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert thread_settings({"run": {}, "eval": {}})["intra_op"] == 4  # 8 CPUs less 4 default workers
    assert thread_settings({"run": {}, "eval": {"workers": 0}})["intra_op"] == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_settings({"run": {}, "eval": {}})["intra_op"] == 3
    assert thread_settings({"run": {"threads": 2}, "eval": {}})["intra_op"] == 2
    with pytest.raises(HarnessError, match="run.threads"):
        thread_settings({"run": {"threads": 0}, "eval": {}})


def test_threads_are_applied_and_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        run = start_run({"run": {"out": str(tmp_path), "threads": 1}, "eval": {"workers": 0}}, "threads")
        env = json.loads((run.dir / "environment.json").read_text())
        assert torch.get_num_threads() == 1
        assert env["torch_threads"] == 1
        assert env["threads"] == {"intra_op": 1, "source": "run.threads",
                                  "cpus_available": env["hardware"]["cpus_available"], "eval_workers": 0}
    finally:
        torch.set_num_threads(before)


class ThreadRecorder(Detector):
    """Records the intra-op threads its preprocessing runs on."""

    name = "thread-recorder"
    seen: list[int] = []

    def input_policy(self, train: bool = False) -> InputPolicy:
        return InputPolicy("center_crop", size=8)

    def preprocess(self, images, *, train=False, generator=None):
        type(self).seen.append(torch.get_num_threads())
        return super().preprocess(images, train=train, generator=generator)

    def forward(self, x):
        type(self).seen.append(-torch.get_num_threads())  # negative: seen by the forward
        return x.mean(dim=(1, 2, 3))


def test_in_process_preprocessing_runs_on_one_thread_and_the_forward_on_all(tmp_path):
    from harness.scoring import score_samples
    from harness.suite import Sample

    samples = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((10, 10, 3), i * 40, dtype=np.uint8)).save(path)
        samples.append(Sample(str(path), i % 2, "g", "test"))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ThreadRecorder.seen = []
        frame = score_samples(ThreadRecorder(), samples, device="cpu", batch_size=2, workers=0, cache_dir=None)
        assert len(frame) == 5
        assert sorted(set(ThreadRecorder.seen)) == [-2, 1]  # preprocessing on 1 thread, forward on 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
