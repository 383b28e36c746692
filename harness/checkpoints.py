"""Reading and writing weights without ever unpickling code.

Harness checkpoints are a safetensors file plus a JSON of the detector's configuration.
Official checkpoints in torch's format are read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from pathlib import Path

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from harness.errors import HarnessError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_DIGESTS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def state_digest(module: nn.Module) -> str:
    """sha256 over every tensor of ``module.state_dict()`` (names, shapes, dtypes, bytes).

    Frozen tensors count: a head-only checkpoint does not tell apart two backbones loaded
    from different files or drawn from different seeds. Memoised until a tensor is replaced
    or changed in place (its storage or version counter moves), so asking again is cheap.
    """
    state = module.state_dict()
    stamp = tuple((name, t.data_ptr(), t._version) for name, t in state.items())
    memo = _DIGESTS.get(module)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    _DIGESTS[module] = (stamp, digest.hexdigest())
    return _DIGESTS[module][1]


def load_state(path: str | Path) -> dict:
    """Load a state dict from safetensors or a torch file (``weights_only=True``).

    Returns whatever mapping the file holds; official-checkpoint adapters unwrap it. A file
    that is not what its name says, is cut short, or holds NaN or infinite weights is refused
    with one line naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise HarnessError(f"weights file {path} is not a readable safetensors file ({exc}); an empty, "
                               "truncated or renamed file (a torch checkpoint wants a .pt or .pth name)") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors name the refused global; pass the cause on
            raise HarnessError(f"cannot read weights {path} safely (weights_only=True): {exc}") from None
    bad = _non_finite(state)
    if bad:
        raise HarnessError(f"weights file {path} holds NaN or infinite values in {len(bad)} tensors, e.g. "
                           f"{', '.join(bad[:4])}: a diverged or corrupted checkpoint would score nothing")
    return state


def _non_finite(value, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a (nested) checkpoint with a NaN or infinity."""
    if isinstance(value, torch.Tensor):
        finite = not value.is_floating_point() or bool(torch.isfinite(value).all())
        return [] if finite else [prefix or "the tensor"]
    if isinstance(value, dict):
        return [name for key, item in value.items()
                for name in _non_finite(item, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(value, (list, tuple)):
        return [name for i, item in enumerate(value) for name in _non_finite(item, f"{prefix}[{i}]")]
    return []


def save_checkpoint(path: str | Path, state: dict[str, torch.Tensor], config: dict, extra: dict | None = None) -> Path:
    """Write ``state`` as safetensors and ``config`` (plus ``extra``) beside it as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(path)
    meta = {"config": config, **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return path


def checkpoint_meta(path: str | Path) -> dict:
    """What :func:`save_checkpoint` wrote beside a checkpoint (``config``, ``backbone``, ...);
    empty when there is no readable JSON sidecar (an official file, say)."""
    try:
        meta = json.loads(Path(path).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _shape(value) -> list[int] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else list(shape)


def state_mismatch(own: dict, state: dict, *, allow_missing=lambda key: False) -> tuple[list, list, list]:
    """``(missing, unexpected, wrong)`` of ``state`` against a model's ``own`` state dict:
    missing and unexpected key names (sorted; ``allow_missing(key)`` exempts a key) and, for
    keys in both, ``"key [file shape] != [model shape]"`` where the shapes differ."""
    missing = sorted(k for k in set(own) - set(state) if not allow_missing(k))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {_shape(state[k])} != {_shape(own[k])}" for k in sorted(set(own) & set(state))
             if _shape(state[k]) != _shape(own[k])]
    return missing, unexpected, wrong


def dtype_mismatch(own: dict, state: dict) -> list[str]:
    """``"key int32 != float32"`` for each integer (or boolean) tensor of ``state`` that would be
    cast into a floating-point tensor of ``own``: torch casts silently, the weights are nonsense."""
    def name(dtype) -> str:
        return str(dtype).removeprefix("torch.")

    return [f"{k} {name(state[k].dtype)} != {name(own[k].dtype)}" for k in sorted(set(own) & set(state))
            if isinstance(state[k], torch.Tensor) and isinstance(own[k], torch.Tensor) and own[k].is_floating_point()
            and not (state[k].is_floating_point() or state[k].is_complex())]


def check_state_fits(own: dict, state: dict, path, what: str, *, allow_missing=lambda key: False,
                     hint: str = "") -> None:
    """Raise a :class:`HarnessError` unless ``state`` has exactly the names and shapes of ``own``
    (a model's state dict) and floating-point tensors where the model has them, naming the first
    mismatched keys with both shapes or dtypes (file != model). Checked before loading, so a
    refused file changes nothing (and never meets torch's bare RuntimeError on a shape)."""
    missing, unexpected, wrong = state_mismatch(own, state, allow_missing=allow_missing)
    dtypes = dtype_mismatch(own, state)
    if missing or unexpected or wrong or dtypes:
        kinds = f", {len(dtypes)} integer tensors for floating-point weights {dtypes[:4]}" if dtypes else ""
        raise HarnessError(
            f"weights file {path} does not fit {what}: "
            f"{len(wrong)} wrong shapes (file != model) {wrong[:4]}, "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
            f"{kinds}{hint}"
        )


def strip_prefix(state: dict, prefix: str) -> dict:
    """Drop ``prefix`` from every key that has it (``module.`` from DataParallel saves)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
