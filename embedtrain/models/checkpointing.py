"""Activation (gradient) checkpointing of the Hugging Face model inside a sentence-transformer.

The non-reentrant variant is used: it needs no ``enable_input_require_grads`` hook when only adapters train
(LoRA), because it does not rely on the checkpointed block's inputs requiring gradients.
"""

from __future__ import annotations


def enable_checkpointing(hf_model) -> None:
    """Non-reentrant activation (gradient) checkpointing: frozen inputs (LoRA) need no extra hooks."""
    kwargs = {"use_reentrant": False}
    if hasattr(hf_model, "activation_checkpointing_enable"):  # transformers >= 5.20 name
        hf_model.activation_checkpointing_enable(kwargs)
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def is_checkpointing(hf_model) -> bool:
    """Whether activation checkpointing is on (either transformers name)."""
    if hasattr(type(hf_model), "is_activation_checkpointing"):
        return hf_model.is_activation_checkpointing
    return hf_model.is_gradient_checkpointing


def any_checkpointing(model) -> bool:
    """Whether a transformers model inside ``model`` (e.g. a sentence-transformer) has checkpointing on."""
    from transformers import PreTrainedModel

    return any(is_checkpointing(m) for m in model.modules() if isinstance(m, PreTrainedModel))
