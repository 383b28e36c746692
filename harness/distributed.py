"""Multi-process runs under ``torchrun``: process group, exact sharding, gathering on rank 0.

``torchrun --nproc-per-node N -m harness run ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`init_from_env`
joins the process group (NCCL when the run is on CUDA, gloo otherwise); a plain one-process
run needs no set-up and every helper here degrades to the single-process answer.

Evaluation shards never pad: :func:`shard_indices` hands each rank a disjoint stride of the
dataset, so every image is scored exactly once (``DistributedSampler`` repeats images to
even out the shards, which counts them twice in the metrics).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from harness.errors import HarnessError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank, world size and local rank from the torchrun environment (0, 1, 0 without it)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as exc:
        raise HarnessError(f"malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") from None


def init_from_env(device: torch.device | str | None = None, timeout_s: float = 6 * 3600) -> DistInfo:
    """Join the process group when started by torchrun with more than one process.

    ``device`` picks the backend: NCCL for CUDA, gloo for CPU. Calling it again, or in a
    one-process run, does nothing beyond returning the rank information. The long default
    timeout lets ranks wait at a barrier while rank 0 runs long analyses; a crashed rank
    still ends the job at once (torchrun stops the others).
    """
    info = env_info()
    if not info.distributed or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise HarnessError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise HarnessError(f"WORLD_SIZE > 1 but {var} is not set: start multi-process runs with torchrun")
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if on_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(
        backend="nccl" if on_cuda else "gloo",
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    return info


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def rank_device(device: torch.device) -> torch.device:
    """The device this rank uses: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if device.type == "cuda" and device.index is None and get_world_size() > 1:
        return torch.device("cuda", env_info().local_rank)
    return device


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """This rank's indices of ``range(n)``: a stride, disjoint across ranks, no padding.

    The union over ranks is exactly ``range(n)``; shards differ in length by at most one.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    return list(range(rank, n, world_size))


class ShardSampler(Sampler[int]):
    """A sampler over this rank's :func:`shard_indices` (in order, no shuffling, no padding)."""

    def __init__(self, n: int, rank: int | None = None, world_size: int | None = None):
        self.indices = shard_indices(n, rank, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _object_device() -> torch.device | None:
    # NCCL moves pickled objects through CUDA tensors on the current device; gloo uses the CPU.
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return None


def gather_to_main(obj: Any) -> list[Any] | None:
    """Collect one picklable object from every rank: the list (rank order) on rank 0, ``None`` elsewhere.

    In a one-process run this is ``[obj]``.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return [obj]
    if _object_device() is not None:
        # NCCL's gather_object needs per-rank device set-up that varies across versions;
        # all_gather_object works with every backend and costs little for score tables.
        everything = all_gather(obj)
        return everything if dist.get_rank() == 0 else None
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather(obj: Any) -> list[Any]:
    """Every rank's object, on every rank (rank order)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return [obj]
    everything = [None] * dist.get_world_size()
    dist.all_gather_object(everything, obj)
    return everything


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s object on every rank."""
    if not is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_object_device())
    return box[0]


def all_reduce_mean(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Element-wise mean over ranks of a small vector of numbers (losses, counts)."""
    tensor = torch.as_tensor(values, dtype=torch.float64).clone()
    if not is_initialized() or dist.get_world_size() == 1:
        return tensor
    device = _object_device()
    if device is not None:
        tensor = tensor.to(device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return (tensor / dist.get_world_size()).cpu()
