"""Sharding without duplicates and the collective helpers, on two real gloo processes."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from harness import distributed


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_index_exactly_once(n, world):
    shards = [distributed.shard_indices(n, r, world) for r in range(world)]
    flat = [i for shard in shards for i in shard]
    assert sorted(flat) == list(range(n))  # none missed, none twice
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [list(distributed.ShardSampler(n, r, world)) for r in range(world)] == shards


def test_bad_rank_is_refused():
    with pytest.raises(ValueError):
        distributed.shard_indices(10, 2, 2)


def test_single_process_helpers_are_identities(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.init_from_env()
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    assert distributed.gather_to_main({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast(5) == 5
    assert distributed.all_reduce_mean([1.0, 3.0]).tolist() == [1.0, 3.0]
    assert distributed.shard_indices(5) == [0, 1, 2, 3, 4]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = distributed.init_from_env(torch.device("cpu"))
    try:
        mine = distributed.shard_indices(11)
        gathered = distributed.gather_to_main(mine)
        shared = distributed.broadcast({"from": distributed.get_rank()} if info.is_main else None)
        mean = distributed.all_reduce_mean([float(rank), 10.0 * rank]).tolist()
        everyone = distributed.all_gather(rank * 2)
        queue.put((rank, gathered, shared, mean, everyone))
    finally:
        distributed.destroy()


def test_two_gloo_processes_gather_broadcast_reduce():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, *rest = queue.get(timeout=120)
        results[rank] = rest
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    gathered0, shared0, mean0, every0 = results[0]
    gathered1, shared1, mean1, every1 = results[1]
    assert gathered0 == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9]]
    assert gathered1 is None
    assert shared0 == shared1 == {"from": 0}
    assert mean0 == mean1 == [0.5, 5.0]
    assert every0 == every1 == [0, 2]
