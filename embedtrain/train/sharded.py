"""Saving sentence-transformers checkpoints when the weights are sharded across processes (FSDP, DeepSpeed ZeRO-3).

Under FSDP (and ZeRO-3) no process holds the whole model: ``transformers`` gathers the full state dict on every
rank and hands it to the trainer's ``_save(output_dir, state_dict)``. sentence-transformers' trainer ignores
that argument and calls ``model.save_pretrained`` on the sharded modules (safetensors then fails on the sharded
tensors) from every rank. :func:`sharded_trainer` returns a trainer class that writes from the main process
only and, given a gathered state dict, swaps those full tensors into the modules for the duration of the save
(:func:`full_weights`), so the checkpoint is the ordinary sentence-transformers folder.

:func:`gather_full_state_dict` does the same gathering for the final model (every rank must call it; it is a
collective); the runner saves inside :func:`full_weights` on the main process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from embedtrain.mining.collective import sharding_engine

logger = logging.getLogger(__name__)

_CLASSES: dict[type, type] = {}
#: Engines under which no process holds the whole model (see :func:`~embedtrain.mining.collective.sharding_engine`).
SHARDED_ENGINES = ("fsdp", "fsdp1", "deepspeed3")


def sharded_trainer(base: type) -> type:
    """``base`` (a sentence-transformers trainer class) with a ``_save`` that handles gathered state dicts."""
    if base in _CLASSES:
        return _CLASSES[base]

    class ShardedSaveTrainer(base):  # type: ignore[misc, valid-type]
        __doc__ = f"{base.__name__} that saves FSDP / ZeRO-3 sharded models from their gathered state dict."

        def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
            if not self.args.should_save:  # transformers calls _save on every rank when the model is sharded
                return
            sharded = sharding_engine() in SHARDED_ENGINES
            with full_weights(self.model, state_dict if sharded else None):
                super()._save(output_dir)

    ShardedSaveTrainer.__name__ = ShardedSaveTrainer.__qualname__ = f"Sharded{base.__name__}"
    _CLASSES[base] = ShardedSaveTrainer
    return ShardedSaveTrainer


def gather_full_state_dict(trainer) -> dict[str, Any] | None:
    """The full (unsharded) state dict on the main process when the model is sharded; None otherwise.

    Must run on every rank (the gather is a collective).
    """
    engine = sharding_engine()
    if engine is None:
        return None
    if engine == "deepspeed":  # ZeRO-1/2: every rank holds the whole model
        return None
    if engine == "deepspeed3":
        return trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return trainer.accelerator.get_state_dict(trainer.model)


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called")


@contextlib.contextmanager
def full_weights(model: torch.nn.Module, state_dict: dict[str, Any] | None) -> Iterator[torch.nn.Module]:
    """Within the block, ``model``'s parameters and buffers are the tensors of ``state_dict`` (by name), and the
    FSDP modules' forward hooks are off, so a forward pass on one process (sentence-transformers encodes a
    usage example for the model card while saving) computes with the full weights instead of waiting for the
    other ranks to join an all-gather.

    The sharded parameters and the hooks are put back afterwards, untouched, so training can go on. With
    ``state_dict=None`` this does nothing.
    """
    if not state_dict:
        yield model
        return
    swapped: list[tuple[torch.nn.Module, str, bool, Any]] = []
    hooks: list[tuple[torch.nn.Module, str, Any]] = []
    try:
        for name, tensor in state_dict.items():
            module_name, _, attr = name.rpartition(".")
            try:
                module = model.get_submodule(module_name) if module_name else model
            except AttributeError:
                continue
            if attr in module._parameters:
                swapped.append((module, attr, True, module._parameters[attr]))
                module._parameters[attr] = torch.nn.Parameter(tensor.detach(), requires_grad=False)
            elif attr in module._buffers:
                swapped.append((module, attr, False, module._buffers[attr]))
                module._buffers[attr] = tensor.detach()
        for module in model.modules():
            if _is_fsdp_module(module):
                for attr in _HOOK_DICTS:
                    if hasattr(module, attr):
                        hooks.append((module, attr, getattr(module, attr)))
                        setattr(module, attr, type(getattr(module, attr))())
        yield model
    finally:
        for module, attr, original in reversed(hooks):
            setattr(module, attr, original)
        for module, attr, is_param, original in reversed(swapped):
            (module._parameters if is_param else module._buffers)[attr] = original


def _is_fsdp_module(module: torch.nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return False
    return isinstance(module, FSDPModule)
