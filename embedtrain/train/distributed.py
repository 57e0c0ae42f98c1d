"""What training needs to know about the process group (see :mod:`embedtrain.mining.collective`, which holds it).

* :func:`main_process_first` - under ``accelerate launch`` / ``torchrun`` the local main process of each
  machine runs the block first (preparing the data cache) and the other ranks run it after (opening what it
  wrote); a single process just runs it.
* :func:`sharding_engine` - how accelerate shards the model (FSDP, ZeRO-3...): what decides how the final
  model is gathered and which features need every rank in step.
* :func:`share_gradient_buckets` - under DDP, gradients live in the all-reduce buckets instead of beside them.
* :func:`close_collective` - ends the process group once every rank is done, so a finished multi-process run
  exits 0 instead of aborting in the group's threads at interpreter exit.
"""

from __future__ import annotations

from embedtrain.mining.collective import launched_world_size as world_size
from embedtrain.mining.collective import close_collective, main_process_first, sharding_engine

__all__ = ["close_collective", "main_process_first", "share_gradient_buckets", "sharding_engine", "world_size"]


def share_gradient_buckets(trainer) -> bool:
    """Make DDP keep each parameter's gradient as a view into its all-reduce bucket (``gradient_as_bucket_view``).

    By default DDP holds every gradient twice, in ``param.grad`` and in the flat buckets it all-reduces, and
    copies between them after each reduction. As views there is one copy: a model's worth of gradient memory
    less per process (91 MB for all-MiniLM-L6-v2; 0.4-1.3 GB for base/large models) and no copy. The
    optimizer and the gradients are unchanged (PyTorch's DDP documentation recommends it). transformers'
    trainer does not expose the setting, so it is set on the accelerator's DDP handler before training wraps
    the model; other engines (FSDP, DeepSpeed) and single processes ignore it. False when the trainer has no
    DDP handler.
    """
    handler = getattr(getattr(trainer, "accelerator", None), "ddp_handler", None)
    if handler is None:
        return False
    handler.gradient_as_bucket_view = True
    return True
