"""Vision-transformer backbones shared by the detectors: open_clip CLIP, timm (DINOv2) and a tiny ViT.

Weights come from one of three places, and the choice is recorded (``provenance``):

- the hub (open_clip / Hugging Face) when online — the default for the published backbones;
- a local file (``weights=PATH``: safetensors, or a torch file read with ``weights_only=True``);
- random initialisation, only when asked for with ``pretrained="none"`` (or the ``tiny`` config,
  which has no published weights) — then ``provenance["random_init"]`` is true so runs say so.

A hub download that fails (no network, ``HF_HUB_OFFLINE=1``) raises a :class:`HarnessError`
telling the user to pass a local file; it never falls back to random weights silently. Offline
is decided before the model is built, in one probe (:func:`_before_hub`), and hub weights that
are registry entries (:data:`HUB_ENTRIES`, ``harness weights``) are read from the store once
pulled or imported there.

Activation: OpenAI's CLIP weights were trained with QuickGELU (``x * sigmoid(1.702 x)``), while
open_clip builds its ``ViT-*`` configs with standard GELU unless told otherwise. ``quick_gelu``
(:func:`build_vit`, :func:`load_open_clip_visual`) chooses the activation of an open_clip tower;
by default it follows the hub tag (``openai`` -> QuickGELU). A tower that will hold OpenAI
weights from a local file, or from a checkpoint loaded later, must be built with
``quick_gelu=True``: the weights load either way, but the features differ. The activation built
is recorded in ``provenance["quick_gelu"]``.

Weights files are checked against the model, names and shapes, before anything is copied:
a file of another model or image size is a :class:`HarnessError` naming the keys and both
shapes (:func:`check_state_fits`), never a raw torch error.

Spec strings: ``open_clip:<model name>`` (e.g. ``open_clip:ViT-L-14``), ``timm:<model name>``
(e.g. ``timm:vit_large_patch14_dinov2.lvd142m``) and ``tiny`` (a timm ``VisionTransformer`` whose
size is set by ``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.checkpoints import _shape, check_state_fits, load_state, sha256_file, strip_prefix
from harness.errors import HarnessError

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: peft ``target_modules`` for LoRA on the attention and MLP projections of each family.
#: open_clip: ``attn`` is the fused ``nn.MultiheadAttention`` (peft wraps its ``in_proj``).
LORA_TARGETS = {
    "open_clip": ["attn", "c_fc", "c_proj"],
    "timm": ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"],
}

TINY_DEFAULTS = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}

_RANDOM = ("none", "random", "", None, False)


@dataclass
class VisualFacts:
    """What a detector needs to know about a backbone's input and output."""

    family: str  # open_clip | timm
    name: str
    image_size: int
    patch_size: int
    token_dim: int  # width of the patch tokens
    pooled_dim: int  # width of the pooled (class) feature
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def parse_spec(spec: str) -> tuple[str, str]:
    """``open_clip:ViT-L-14`` -> (``open_clip``, ``ViT-L-14``); ``tiny`` -> (``tiny``, ``tiny``)."""
    if spec == "tiny":
        return "tiny", "tiny"
    family, sep, name = spec.partition(":")
    if not sep or family not in ("open_clip", "timm") or not name:
        raise HarnessError(
            f"unknown backbone '{spec}': use 'open_clip:<name>' (e.g. open_clip:ViT-L-14), "
            "'timm:<name>' (e.g. timm:vit_large_patch14_dinov2.lvd142m) or 'tiny'"
        )
    return family, name


def _provenance(family: str, name: str, pretrained, weights) -> dict[str, Any]:
    random_init = weights is None and pretrained in _RANDOM
    prov: dict[str, Any] = {
        "family": family,
        "name": name,
        "pretrained": None if pretrained in _RANDOM else pretrained,
        "weights": str(weights) if weights else None,
        "weights_sha256": sha256_file(weights) if weights else None,
        "random_init": random_init,
    }
    if random_init:
        log.warning("backbone %s:%s is randomly initialised (asked for explicitly)", family, name)
    return prov


def _hub_error(what: str, exc: Exception) -> HarnessError:
    return HarnessError(
        f"could not load the pretrained weights of {what} from the hub ({type(exc).__name__}: {exc}). "
        "Pass a local weights file (detector.backbone_weights=PATH, safetensors or a torch state dict), "
        "or set detector.pretrained='none' to train from random initialisation on purpose."
    )


#: Hub weights that are registry entries (``harness weights``): a file pulled or imported for
#: the entry is loaded from the store instead of the hub.
HUB_ENTRIES = {
    ("open_clip", "ViT-L-14", "openai"): "clip:vit-l-14-openai",
    ("timm", "vit_large_patch14_dinov2.lvd142m", "hub"): "dinov2:vit-l-14",
}


def _before_hub(family: str, name: str, tag, repo: str | None, filenames: tuple[str, ...]) -> Path | None:
    """Decide, before any download, where hub weights come from: the file stored for their
    registry entry (returned), else the hub (None). Offline (``HF_HUB_OFFLINE``, or the hub
    unreachable: one probe, no retries) the library may still read its own cache; with nothing
    there it is an error at once naming ``harness weights import``, never a minute of retries."""
    from harness import weights

    entry_name = HUB_ENTRIES.get((family, name, tag))
    if entry_name:
        stored = weights.stored_path(weights.get(entry_name))
        if stored is not None:
            return stored
    reason = weights.offline_reason(weights.hub_endpoint())
    if reason is None:
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    if repo and any(isinstance(try_to_load_from_cache(repo, f), str) for f in filenames):
        constants.HF_HUB_OFFLINE = True  # read the cache only: no request may wait on the network
        return None
    fix = f"`harness weights import FILE --as {entry_name}`, or " if entry_name else ""
    raise HarnessError(f"offline ({reason}) and the {family} {name} ({tag}) weights are not cached: get the file "
                       f"on a machine with network, then {fix}pass the local weights file with "
                       "detector.backbone_weights=PATH (or detector.pretrained='none' for random weights on purpose)")


def _timm_weights_source(name: str, pretrained, weights) -> tuple[Path | str | None, bool]:
    """``(weights file, use the hub)`` for a timm model: a local file wins; hub weights are decided by
    :func:`_before_hub` before anything is built (a stored registry file, the cache, or one clear offline error)."""
    use_hub = weights is None and pretrained not in _RANDOM
    if use_hub:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        weights = _before_hub("timm", name, pretrained, getattr(cfg, "hf_hub_id", None),
                              ("model.safetensors", "pytorch_model.bin"))
        use_hub = weights is None
    return weights, use_hub


def _check_weights_file(weights) -> Path:
    path = Path(weights)
    if not path.is_file():
        raise HarnessError(f"backbone weights file {path} does not exist")
    return path


def _load_strict(module: nn.Module, state: dict, path, what: str) -> None:
    # Names and shapes first: load_state_dict would raise a bare RuntimeError on a shape.
    check_state_fits(module.state_dict(), state, path, what)
    module.load_state_dict(state, strict=True)


# -- open_clip ------------------------------------------------------------------------------
def _default_clip_tag(name: str) -> str | None:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    if "openai" in tags:
        return "openai"
    return tags[0] if tags else None


def _clip_visual_state(state: dict) -> dict:
    """A full CLIP state dict, a ``visual.``-prefixed one or a visual-only one -> visual keys."""
    state = strip_prefix(state, "module.")
    for prefix in ("model.visual.", "visual."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_open_clip_visual(
    name: str = "ViT-L-14",
    *,
    pretrained: str | None = "default",
    weights: str | Path | None = None,
    image_size: int | None = None,
    quick_gelu: bool | None = None,
) -> tuple[nn.Module, int, VisualFacts]:
    """The visual tower of an open_clip model.

    ``pretrained``: an open_clip tag (``openai``, ``laion2b_s32b_b82k``, ...), ``"default"``
    (``openai`` when the model has it, else its first tag) or ``"none"`` for random weights.
    With ``weights`` the tower is built without download and the file is loaded (a full CLIP
    state dict or the visual keys alone).
    ``quick_gelu``: build the MLPs with QuickGELU (``True``, what OpenAI's weights need, passed
    to open_clip as ``force_quick_gelu``) or as the model config says (``False``); ``None``
    follows the tag (QuickGELU for ``openai``). A value that contradicts a hub tag's own
    activation, or one the model cannot honour (a timm tower), is a :class:`HarnessError`.
    Returns ``(visual, embed_dim, facts)`` where ``embed_dim`` is the width of
    ``visual(x)`` (after ``ln_post`` and ``proj``: 768 for ViT-L-14).
    """
    import open_clip
    from open_clip.transformer import QuickGELU

    if name not in open_clip.list_models():
        raise HarnessError(f"unknown open_clip model '{name}'; see open_clip.list_models()")
    if pretrained == "default":
        pretrained = _default_clip_tag(name)
        if pretrained is None and weights is None:
            raise HarnessError(
                f"open_clip model '{name}' has no published weights: pass a local file or pretrained='none'"
            )
    tag_quick_gelu = None
    if pretrained not in _RANDOM:
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
        if tag_cfg:
            tag_quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    explicit = quick_gelu is not None
    # Unset: the tag's own activation (QuickGELU for openai), else the model config's.
    quick_gelu = bool(quick_gelu) if explicit else bool(tag_quick_gelu)
    if explicit and tag_quick_gelu is not None and quick_gelu != tag_quick_gelu:
        raise HarnessError(
            f"open_clip {name} weights '{pretrained}' were trained with {'QuickGELU' if tag_quick_gelu else 'GELU'}, "
            f"but quick_gelu={quick_gelu} was asked for: the features would not be the published model's. "
            f"Set detector.quick_gelu={str(tag_quick_gelu).lower()}."
        )
    kwargs: dict[str, Any] = {"force_image_size": image_size} if image_size else {}
    if quick_gelu:
        kwargs["force_quick_gelu"] = True
    if weights is None and pretrained not in _RANDOM:
        hub = (open_clip.get_pretrained_cfg(name, pretrained) or {}).get("hf_hub", "")
        repo, file = os.path.split(hub)  # open_clip's form: "org/model/" or "org/model/file"
        weights = _before_hub("open_clip", name, pretrained, repo or None,
                              (file,) if file else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
    if weights is not None:
        path = _check_weights_file(weights)
        model = open_clip.create_model(name, pretrained=None, **kwargs)
        state = {f"visual.{k}": v for k, v in _clip_visual_state(load_state(path)).items()}
        if image_size:
            try:
                open_clip.model.resize_pos_embed(state, model)  # in place, only when the grid differs
            except (RuntimeError, ValueError) as exc:
                raise HarnessError(
                    f"weights file {path} does not fit open_clip {name}: its position embedding "
                    f"{_shape(state.get('visual.positional_embedding'))} cannot be resampled to the "
                    f"{image_size}-px grid ({exc})"
                ) from None
        _load_strict(model.visual, {k[len("visual."):]: v for k, v in state.items()}, path, f"open_clip {name}")
    elif pretrained in _RANDOM:
        model = open_clip.create_model(name, pretrained=None, **kwargs)
    else:
        try:
            model = open_clip.create_model(name, pretrained=pretrained, require_pretrained=True, **kwargs)
        except Exception as exc:  # offline, unknown tag, interrupted download: all need the same advice
            raise _hub_error(f"open_clip {name} ({pretrained})", exc) from None
    visual = model.visual
    del model  # the text tower is not used
    built_quick_gelu = any(isinstance(m, QuickGELU) for m in visual.modules())
    if explicit and built_quick_gelu != quick_gelu:
        raise HarnessError(
            f"open_clip {name} was built with {'QuickGELU' if built_quick_gelu else 'GELU'} although "
            f"quick_gelu={quick_gelu} was asked for (a '-quickgelu' model name, or a timm tower that ignores "
            "the flag): choose a model and quick_gelu that agree"
        )
    prep = getattr(visual, "preprocess_cfg", None) or {}
    size = visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    patch = visual.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
    embed_dim = int(visual.output_dim)
    facts = VisualFacts(
        family="open_clip",
        name=name,
        image_size=size,
        patch_size=patch,
        token_dim=int(visual.transformer.width),
        pooled_dim=embed_dim,
        mean=tuple(prep.get("mean", CLIP_MEAN)),
        std=tuple(prep.get("std", CLIP_STD)),
        provenance={**_provenance("open_clip", name, pretrained, weights), "quick_gelu": built_quick_gelu},
    )
    return visual, embed_dim, facts


# -- timm -----------------------------------------------------------------------------------
def _timm_vit(name: str, *, pretrained, weights, image_size: int | None,
              **model_kwargs) -> tuple[nn.Module, dict, Path | None]:
    import timm
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    kwargs: dict[str, Any] = {"num_classes": 0, **model_kwargs}
    if image_size:
        kwargs["img_size"] = image_size
    if name == "tiny":
        model = VisionTransformer(**kwargs)
    else:
        if not timm.is_model(name.split(".")[0]):
            raise HarnessError(f"unknown timm model '{name}'; see timm.list_models()")
        weights, use_hub = _timm_weights_source(name, pretrained, weights)
        try:
            model = timm.create_model(name, pretrained=use_hub, **kwargs)
        except Exception as exc:
            if use_hub:
                raise _hub_error(f"timm {name}", exc) from None
            raise
        if not isinstance(model, VisionTransformer):
            raise HarnessError(f"timm model '{name}' is not a VisionTransformer; the ViT backbones need one")
    if weights is not None:
        path = _check_weights_file(weights)
        state = strip_prefix(load_state(path), "module.")
        # timm would resample a patch embedding of another kernel size (FlexiViT-style), which
        # turns e.g. a /32 file into a different /16 model without a word: refuse it instead.
        file_kernel = _shape(state.get("patch_embed.proj.weight"))
        own_kernel = list(model.patch_embed.proj.weight.shape)
        if file_kernel is not None and len(file_kernel) == 4 and file_kernel != own_kernel:
            raise HarnessError(
                f"weights file {path} does not fit timm {name}: 1 wrong shapes (file != model) "
                f"['patch_embed.proj.weight {file_kernel} != {own_kernel}'] (another patch size or width)"
            )
        try:
            state = checkpoint_filter_fn(state, model)  # official DINOv2 keys, pos-embed resampling
        except (RuntimeError, ValueError) as exc:
            raise HarnessError(f"weights file {path} does not fit timm {name}: {exc}") from None
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        _load_strict(model, state, path, f"timm {name}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return model, cfg, weights  # weights: the stored registry file when the hub's were found there


# -- the common wrapper ---------------------------------------------------------------------
class ViTBackbone(nn.Module):
    """A ViT returning ``(pooled [B, pooled_dim], patch tokens [B, N, token_dim])``.

    Inputs are normalised tensors of ``facts.image_size`` squared; ``N = facts.grid ** 2``
    tokens in row-major order of the patch grid (prefix tokens removed).
    """

    def __init__(self, model: nn.Module, facts: VisualFacts):
        super().__init__()
        self.model = model
        self.facts = facts
        if facts.family == "open_clip":
            # Eager attribute; makes open_clip's forward return (projected pooled, tokens after ln_post).
            self.model.output_tokens = True

    @property
    def lora_targets(self) -> list[str]:
        return list(LORA_TARGETS[self.facts.family])

    @property
    def provenance(self) -> dict[str, Any]:
        return self.facts.provenance

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.facts.family == "open_clip":
            pooled, tokens = self.model(x)
            return pooled, tokens
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        return pooled, feats[:, self.model.num_prefix_tokens:]


def build_vit(
    spec: str,
    *,
    pretrained: str | None = "default",
    weights: str | Path | None = None,
    image_size: int | None = None,
    tiny: dict[str, Any] | None = None,
    quick_gelu: bool | None = None,
) -> ViTBackbone:
    """Build a ViT backbone from a spec string (see the module docstring).

    ``pretrained``: ``"default"`` (the hub weights: open_clip's ``openai`` tag where the model
    has it, timm's pretrained tag), an open_clip tag, or ``"none"`` for random weights.
    ``weights``: a local file, which wins over ``pretrained``. ``image_size``: input size
    (position embeddings are resampled when pretrained weights have another grid).
    ``tiny``: sizes for the ``tiny`` spec (defaults :data:`TINY_DEFAULTS`).
    ``quick_gelu``: the activation of an open_clip tower (see :func:`load_open_clip_visual`;
    ``None`` follows the tag). timm and ``tiny`` ViTs always use GELU and ignore it.
    """
    family, name = parse_spec(spec)
    if family == "open_clip":
        visual, _, facts = load_open_clip_visual(name, pretrained=pretrained, weights=weights, image_size=image_size,
                                                 quick_gelu=quick_gelu)
        return ViTBackbone(visual, facts)
    model_kwargs: dict[str, Any] = {}
    if family == "tiny":
        sizes = {**TINY_DEFAULTS, **(tiny or {})}
        image_size = image_size or int(sizes.pop("img_size"))
        sizes.pop("img_size", None)
        # Sizes are integers; other timm VisionTransformer arguments (global_pool, ...) pass through.
        model_kwargs = {k: (int(v) if k in TINY_DEFAULTS else v) for k, v in sizes.items()}
        pretrained = "none"  # no published weights exist for the tiny config
    elif pretrained == "default":
        pretrained = "hub"
    model, cfg, weights = _timm_vit(name, pretrained=pretrained, weights=weights, image_size=image_size,
                                    **model_kwargs)
    patch = model.patch_embed.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
    size = model.patch_embed.img_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    facts = VisualFacts(
        family="timm",
        name=name,
        image_size=size,
        patch_size=patch,
        token_dim=int(model.embed_dim),
        pooled_dim=int(model.num_features),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        provenance=_provenance("timm", name, pretrained, weights),
    )
    return ViTBackbone(model, facts)


# -- any image model as a pooled-feature extractor ------------------------------------------
@dataclass
class FeatureFacts:
    """A pooled-feature model's input (its own evaluation transform) and output width."""

    family: str  # open_clip | timm
    name: str
    image_size: int
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float  # evaluation: shorter side resized to image_size / crop_pct, then centre-cropped
    interpolation: str
    provenance: dict[str, Any] = field(default_factory=dict)


class FeatureModel(nn.Module):
    """``model(x) -> [B, dim]`` pooled features of normalised inputs (timm: ``num_classes=0``; open_clip:
    the projected image embedding)."""

    def __init__(self, model: nn.Module, facts: FeatureFacts):
        super().__init__()
        self.model = model
        self.facts = facts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build_feature_model(spec: str, *, pretrained: str | None = "default", weights: str | Path | None = None,
                        image_size: int | None = None, model_kwargs: dict[str, Any] | None = None) -> FeatureModel:
    """Any timm model (``timm:resnet50``, ``timm:swin_tiny_patch4_window7_224``, ...) or open_clip image tower
    (``open_clip:ViT-B-16``) as a pooled-feature extractor, with the model's own evaluation transform.

    Weights as :func:`build_vit`: the hub by default, a local ``weights`` file, or random init with
    ``pretrained="none"`` (recorded). A timm file may hold the classifier too (it is dropped: the detector has
    its own head). ``model_kwargs`` go to ``timm.create_model`` (a smaller depth, another window size, ...).
    """
    family, name = parse_spec(spec)
    if family == "tiny":
        raise HarnessError("backbone 'tiny' is a ViT for the ViT detectors; name a timm or open_clip model here")
    if family == "open_clip":
        visual, dim, vit = load_open_clip_visual(name, pretrained=pretrained, weights=weights, image_size=image_size)
        facts = FeatureFacts("open_clip", name, vit.image_size, dim, vit.mean, vit.std, crop_pct=1.0,
                             interpolation="bicubic", provenance=vit.provenance)
        return FeatureModel(visual, facts)
    import timm
    from timm.data import resolve_model_data_config

    if not timm.is_model(name.split(".")[0]):
        raise HarnessError(f"unknown timm model '{name}'; see timm.list_models()")
    weights, use_hub = _timm_weights_source(name, pretrained, weights)
    kwargs: dict[str, Any] = {**(model_kwargs or {}), "num_classes": 0}
    if image_size:
        kwargs["img_size"] = image_size
    try:
        try:
            model = timm.create_model(name, pretrained=use_hub, **kwargs)
        except TypeError as exc:  # a convolutional model takes no img_size: it adapts to any input size
            if "img_size" not in str(exc) or "img_size" not in kwargs:
                raise
            kwargs.pop("img_size")
            model = timm.create_model(name, pretrained=use_hub, **kwargs)
    except Exception as exc:
        if use_hub:
            raise _hub_error(f"timm {name}", exc) from None
        raise HarnessError(f"timm {name} cannot be built with {kwargs}: {type(exc).__name__}: {exc}") from None
    if weights is not None:
        path = _check_weights_file(weights)
        state = strip_prefix(load_state(path), "module.")
        classifier = model.default_cfg.get("classifier", "fc")
        state = {k: v for k, v in state.items() if not k.startswith(f"{classifier}.")}
        _load_strict(model, state, path, f"timm {name}")
    data = resolve_model_data_config(model)
    size = image_size or int(data["input_size"][-1])
    facts = FeatureFacts("timm", name, size, int(model.num_features), tuple(data["mean"]), tuple(data["std"]),
                         crop_pct=float(data.get("crop_pct", 0.875)), interpolation=str(data.get("interpolation",
                                                                                               "bicubic")),
                         provenance=_provenance("timm", name, pretrained if use_hub or weights else None, weights))
    return FeatureModel(model, facts)
