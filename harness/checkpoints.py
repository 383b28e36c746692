"""Reading and writing weights without ever unpickling code.

Harness checkpoints are a safetensors file plus a JSON of the detector's configuration.
Official checkpoints in torch's format are read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from harness.errors import HarnessError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_state(path: str | Path) -> dict:
    """Load a state dict from safetensors or a torch file (``weights_only=True``).

    Returns whatever mapping the file holds; official-checkpoint adapters unwrap it.
    """
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors name the refused global; pass the cause on
        raise HarnessError(f"cannot read weights {path} safely (weights_only=True): {exc}") from None


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


def strip_prefix(state: dict, prefix: str) -> dict:
    """Drop ``prefix`` from every key that has it (``module.`` from DataParallel saves)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
