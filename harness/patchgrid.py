"""Patch grids over a detector's input and the masks the patch analyses apply.

Inputs are detector inputs in [0, 1] (after ``preprocess``, before normalisation) whose last
two dimensions are the image plane: ``[B, 3, H, W]`` for most detectors, ``[B, 2, 3, S, S]``
for PatchCraft. A mask is a boolean ``[H, W]`` plane; masking sets every channel (and every
view) under it to ``fill``.
"""

from __future__ import annotations

import torch

from harness.errors import HarnessError

DEFAULT_GRID = 8


def grid_skip_reason(detector_cls) -> str | None:
    """Why grid analyses (TDE, masking) do not apply to a detector class, or None."""
    if getattr(detector_cls, "spatial_input", True):
        return None
    return (f"detector '{detector_cls.name}' takes an input whose planes are not one image region "
            "(for example views at different scales): grid analyses (TDE, masking) do not apply")


def resolve_grid(detector, requested: int | str | None = None) -> int:
    """The grid size m: ``requested`` when it is a number, else the detector's token grid
    (``input_policy().patch_grid``), else 8. A detector whose input is not one image plane
    (``spatial_input = False``) has no grid of image regions, and is refused."""
    if reason := grid_skip_reason(type(detector)):
        raise HarnessError(reason)
    if requested not in (None, "auto"):
        try:
            m = int(requested)
        except (TypeError, ValueError):
            raise HarnessError(f"grid must be a positive integer or 'auto', got {requested!r}") from None
    else:
        m = detector.input_policy(False).patch_grid or DEFAULT_GRID
    if m < 1:
        raise HarnessError(f"grid must be a positive integer, got {m}")
    return m


def edges(length: int, m: int) -> list[int]:
    """m + 1 boundaries splitting ``length`` pixels into m nearly equal runs."""
    if m > length:
        raise HarnessError(f"a {m}x{m} grid does not fit an input of {length} pixels")
    return [round(i * length / m) for i in range(m + 1)]


def grid_masks(height: int, width: int, m: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[m*m, H, W]`` boolean masks, one per grid cell, in row-major order."""
    rows, cols = edges(height, m), edges(width, m)
    masks = torch.zeros(m * m, height, width, dtype=torch.bool, device=device)
    for i in range(m):
        for j in range(m):
            masks[i * m + j, rows[i] : rows[i + 1], cols[j] : cols[j + 1]] = True
    return masks


def cells_to_mask(cells: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-image cell selections ``[B, m, m]`` (bool) -> pixel masks ``[B, H, W]``."""
    m = cells.shape[-1]
    rows = torch.tensor(edges(height, m), device=cells.device)
    cols = torch.tensor(edges(width, m), device=cells.device)
    # Cell index of every pixel row / column, so one gather expands the whole grid.
    row_cell = torch.searchsorted(rows[1:], torch.arange(height, device=cells.device), right=True)
    col_cell = torch.searchsorted(cols[1:], torch.arange(width, device=cells.device), right=True)
    return cells[:, row_cell][:, :, col_cell]


def square_positions(height: int, width: int, side: int) -> list[tuple[int, int]]:
    """Top-left corners of ``side`` x ``side`` squares tiling the plane with stride ``side``;
    the last row / column is moved inwards so every square lies inside the input."""
    if side < 1 or side > min(height, width):
        raise HarnessError(f"a {side}-pixel square does not fit an input of {height}x{width}")
    tops = sorted({min(t, height - side) for t in range(0, height, side)})
    lefts = sorted({min(l, width - side) for l in range(0, width, side)})
    return [(t, l) for t in tops for l in lefts]


def square_masks(height: int, width: int, side: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[P, H, W]`` masks of the squares of :func:`square_positions`."""
    positions = square_positions(height, width, side)
    masks = torch.zeros(len(positions), height, width, dtype=torch.bool, device=device)
    for k, (t, l) in enumerate(positions):
        masks[k, t : t + side, l : l + side] = True
    return masks


def apply_masks(x: torch.Tensor, masks: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``x`` ``[B, ..., H, W]`` with ``masks`` ``[B, H, W]`` set to ``fill`` in every channel."""
    if masks.shape[0] != x.shape[0] or masks.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"masks {tuple(masks.shape)} do not fit inputs {tuple(x.shape)}")
    view = masks.view(masks.shape[0], *([1] * (x.dim() - 3)), *masks.shape[-2:])
    return torch.where(view, torch.as_tensor(fill, dtype=x.dtype, device=x.device), x)
