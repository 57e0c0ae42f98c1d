"""What training needs to know about the process group: who prepares shared files first, which engine shards.

* :func:`main_process_first` - under ``accelerate launch`` / ``torchrun`` the local main process of each
  machine runs the block first (preparing the data cache) and the other ranks run it after (opening what it
  wrote); a single process just runs it.
* :func:`~embedtrain.mining.collective.sharding_engine` - how accelerate shards the model (FSDP, ZeRO-3...):
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
