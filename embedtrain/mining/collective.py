"""Split work across training processes and gather the results on every process.

Dynamic re-mining must leave every process with the *same* negatives table, or processes would
train on different data and the checkpoints would disagree. :func:`sharded_map` gives each rank
a strided share of the items, runs the work locally and all-gathers the results in the original
order, so every rank then applies the same deterministic decisions to the same numbers.

:class:`Collective` is the minimal interface used (rank, world size, ``all_gather_object``);
:func:`current_collective` returns the torch.distributed one under ``accelerate launch`` /
``torchrun`` and a single-process one otherwise. Tests substitute their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Collective(Protocol):
    """The collective operations dynamic mining needs.

    ``lockstep`` is True when the model's weights are sharded across the processes (FSDP, DeepSpeed ZeRO-3):
    every forward pass is then a collective, so every rank must encode the same texts in the same batches and
    :func:`sharded_map` does all the work on every rank instead of splitting it.
    """

    rank: int
    world_size: int
    lockstep: bool

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, indexed by rank, on every rank."""
        ...

    def barrier(self) -> None:
        """Wait until every rank is here."""
        ...


class LocalCollective:
    """One process: gathering returns the object itself."""

    rank = 0
    world_size = 1
    lockstep = False

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        pass


class TorchCollective:
    """``torch.distributed`` process group (initialised by accelerate / torchrun)."""

    def __init__(self, lockstep: bool = False) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.lockstep = lockstep

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self._dist.barrier()


def current_collective() -> Collective:
    """The torch.distributed collective when running multi-process, else :class:`LocalCollective`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchCollective(lockstep=sharding_engine() in ("fsdp", "fsdp1", "deepspeed3"))
    return LocalCollective()


def launched_world_size() -> int:
    """Processes of the launch (``WORLD_SIZE`` set by ``accelerate launch`` / ``torchrun``; 1 otherwise)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def init_collective() -> Collective:
    """The process group of the launch (started through accelerate when launched with several processes)."""
    if launched_world_size() > 1:
        from accelerate import PartialState

        PartialState()  # initialises torch.distributed (gloo on CPUs, nccl on GPUs) from the launcher's env
    return current_collective()


def close_collective() -> None:
    """End the process group cleanly once every rank is done (no-op for one process).

    A process that exits right after a collective can abort ("terminate called without an active
    exception", SIGABRT) after the work has finished, turning a good run into a failed launch. Traced from
    a core dump (gloo, 2 CPU processes): the group's worker thread drops its reference to the last
    collective's tensors only *after* waking the caller, and dropping a tensor that Python also saw takes
    the GIL; if the main thread has meanwhile started interpreter shutdown, the worker is terminated inside
    that destructor. The barrier here waits with the GIL released, which lets the worker finish first; then
    the group is destroyed. Every multi-process entry point (the CLI, the test launch scripts) ends here.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on each machine's main process first, then on the other ranks (no-op for one process).

    The local main goes first (not only the global one) so that a cache on each machine's own disk is built
    once per machine; on a shared disk the others find it built (a file lock guards the build either way).
    """
    if launched_world_size() <= 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().local_main_process_first():
        yield


def sharding_engine() -> str | None:
    """How accelerate shards the model: ``"fsdp"`` (FSDP2), ``"fsdp1"``, ``"deepspeed3"`` (ZeRO-3),
    ``"deepspeed"`` (ZeRO-1/2: weights replicated) or None (one process, DDP)."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if not AcceleratorState._shared_state:
        return None
    state = AcceleratorState()
    kind = getattr(state, "distributed_type", None)
    if kind == DistributedType.FSDP:
        return "fsdp" if getattr(getattr(state, "fsdp_plugin", None), "fsdp_version", 1) == 2 else "fsdp1"
    if kind == DistributedType.DEEPSPEED:
        stage = getattr(getattr(state, "deepspeed_plugin", None), "zero_stage", 0)
        return "deepspeed3" if stage == 3 else "deepspeed"
    return None


def sharded_map(collective: Collective, items: Sequence[T], fn: Callable[[list[T]], Sequence[R]]) -> list[R]:
    """``fn`` over ``items`` split across ranks (rank r takes items r, r+W, ...); all results on all ranks.

    ``fn`` maps a list of items to a same-length list of results. Every rank must call this with
    the same ``items``.
    """
    world, rank = collective.world_size, collective.rank
    if getattr(collective, "lockstep", False):  # sharded weights: every rank runs the same forwards
        results = list(fn(list(items)))
        if len(results) != len(items):
            raise RuntimeError(f"sharded_map: fn returned {len(results)} results for {len(items)} items")
        return results
    mine = list(items[rank::world])
    results = list(fn(mine)) if mine else []
    if len(results) != len(mine):
        raise RuntimeError(f"sharded_map: fn returned {len(results)} results for {len(mine)} items")
    if world == 1:
        return results
    gathered = collective.all_gather_object(results)
    out: list[Any] = [None] * len(items)
    for r, part in enumerate(gathered):
        out[r::world] = part
    return out
