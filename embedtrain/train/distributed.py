"""What training needs to know about the process group: who prepares shared files first, which engine shards.

* :func:`main_process_first` - under ``accelerate launch`` / ``torchrun`` the local main process of each
  machine runs the block first (preparing the data cache) and the other ranks run it after (opening what it
  wrote); a single process just runs it.
* :func:`sharding_engine` - ``"fsdp"`` (FSDP2), ``"fsdp1"``, ``"deepspeed"`` or None, from accelerate's state:
  what decides how the final model is gathered and which features need every rank in step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def world_size() -> int:
    """Processes of the launch (1 outside ``accelerate launch`` / ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on each machine's main process first, then on the other ranks (no-op for one process).

    The local main goes first (not only the global one) so that a cache on each machine's own disk is built
    once per machine; on a shared disk the others find it built (a file lock guards the build either way).
    """
    if world_size() <= 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().local_main_process_first():
        yield


def sharding_engine() -> str | None:
    """``"fsdp"`` (FSDP2), ``"fsdp1"``, ``"deepspeed"`` or None (DDP / one process), as accelerate set it up."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if not AcceleratorState._shared_state:
        return None
    state = AcceleratorState()
    kind = getattr(state, "distributed_type", None)
    if kind == DistributedType.FSDP:
        plugin = getattr(state, "fsdp_plugin", None)
        return "fsdp" if getattr(plugin, "fsdp_version", 1) == 2 else "fsdp1"
    if kind == DistributedType.DEEPSPEED:
        return "deepspeed"
    return None
