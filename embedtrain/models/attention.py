"""Attention whose probability matrix is recomputed in the backward pass instead of kept.

Why: BERT-family embedders train with attention dropout (0.1 in MiniLM, MPNet, BGE...). PyTorch's fused
attention kernel on the CPU has no dropout, so with dropout ``sdpa`` falls back to its math path, which keeps
for the backward pass, in every layer, the attention scores, their softmax, the dropout mask and the dropped
probabilities: about ``3.25 x batch x heads x seq^2`` floats a layer. For all-MiniLM-L6-v2 at 16 passages of
128 tokens that is ~40 MB a layer, ~250 MB of a step's activations, most of what grows with the sequence length.

:func:`recomputed_sdpa_attention` runs the same ``sdpa`` attention under non-reentrant activation checkpointing
(the attention core only: q, k and v are kept as they would be anyway; the scores and probabilities are
recomputed in the backward pass). The random-number state is restored for the recomputation, so the dropout
mask is the same one and the gradients are those of plain ``sdpa``; the cost is the attention core computed
once more (two batched ``seq x seq`` matrix products and a softmax a layer: a few percent of a step at 128
tokens). This is "selective activation recomputation" (Korthikanti et al., 2022, *Reducing Activation
Recomputation in Large Transformer Models*), applied where the fused kernel cannot run.

:func:`install` registers the function with transformers' attention registry under :data:`NAME` (with
``sdpa``'s mask format) and switches a model that uses ``sdpa`` to it; :func:`uninstall` switches it back, so
the saved model and inference use plain ``sdpa``. It only recomputes when it helps: in training, with dropout,
on a device other than CUDA (whose fused kernels apply dropout themselves); otherwise it is ``sdpa``.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint
from transformers.integrations.sdpa_attention import sdpa_attention_forward

#: The attention implementation's name in transformers' registry.
NAME = "embedtrain_sdpa_recompute"


def recomputed_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, dropout: float = 0.0, **kwargs):
    """transformers' ``sdpa`` attention; in training with dropout outside CUDA, recomputed in the backward pass."""
    if dropout > 0 and module.training and torch.is_grad_enabled() and query.device.type != "cuda":
        return checkpoint(sdpa_attention_forward, module, query, key, value, attention_mask, dropout=dropout,
                          use_reentrant=False, preserve_rng_state=True, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(NAME, recomputed_sdpa_attention)
        AttentionMaskInterface.register(NAME, sdpa_mask)


def _configs(model: torch.nn.Module) -> list:
    """The configs (model and sub-models) in ``model`` that carry an attention implementation."""
    found, seen = [], set()
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and id(config) not in seen and hasattr(config, "_attn_implementation"):
            seen.add(id(config))
            found.append(config)
    return found


def install(model: torch.nn.Module) -> bool:
    """Switch the transformers model(s) in ``model`` (a sentence-transformer or a transformers model) from
    ``sdpa`` to :data:`NAME`; False when one does not use ``sdpa`` (eager, flash attention...): then nothing
    changes."""
    configs = _configs(model)
    if not configs or any(c._attn_implementation != "sdpa" for c in configs):
        return False
    _register()
    for config in configs:
        config._attn_implementation = NAME
    return True


def uninstall(model: torch.nn.Module) -> bool:
    """Switch the transformers model(s) in ``model`` back to plain ``sdpa`` (True if one used :data:`NAME`)."""
    changed = False
    for config in _configs(model):
        if config._attn_implementation == NAME:
            config._attn_implementation = "sdpa"
            changed = True
    return changed
