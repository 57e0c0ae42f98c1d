"""What training needs to know about the process group (see :mod:`embedtrain.mining.collective`, which holds it).

* :func:`main_process_first` - under ``accelerate launch`` / ``torchrun`` the local main process of each
  machine runs the block first (preparing the data cache) and the other ranks run it after (opening what it
  wrote); a single process just runs it.
* :func:`sharding_engine` - how accelerate shards the model (FSDP, ZeRO-3...): what decides how the final
  model is gathered and which features need every rank in step.
* :func:`close_collective` - ends the process group once every rank is done, so a finished multi-process run
  exits 0 instead of aborting in the group's threads at interpreter exit.
"""

from __future__ import annotations

from embedtrain.mining.collective import launched_world_size as world_size
from embedtrain.mining.collective import close_collective, main_process_first, sharding_engine

__all__ = ["close_collective", "main_process_first", "sharding_engine", "world_size"]
