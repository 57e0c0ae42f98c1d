"""The ``speed:`` section of a contrastive recipe: how fast training computes, never what it trains on.

Every setting here is on by default where it was measured to help (docs/throughput.md) and leaves the
batches, the loss and the data as they are:

* ``precision``: ``auto`` trains in bf16 autocast where the hardware computes bf16 natively (AVX512-BF16 or
  AMX CPUs, Ampere+ GPUs) and in float32 elsewhere; ``bf16`` / ``fp32`` force one. An explicit
  ``training.bf16`` or ``training.fp16`` in the recipe wins over ``auto``.
* ``bucketing``: embed each batch in length-sorted chunks trimmed to their own longest row, so short rows
  are not padded to the batch's longest (the batch itself stays the sampler's random, duplicate-free one).
* ``sort_cached_batches``: GradCache losses (``cached_mnrl``, ``cached_gist``) split a batch into
  mini-batches of rows of similar length (the loss does not depend on row order).
* ``attention_dropout``: set the model's attention-probability dropout (``null``: keep the model's own).
  With 0, CPUs and GPUs run the fused attention kernel instead of materialising the attention matrix;
  it changes regularisation, so it is off unless asked for.
* ``recompute_attention``: keep only q, k and v of each attention layer for the backward pass and recompute
  the attention probabilities there (the same dropout mask: the gradients do not change), where the fused
  kernel cannot run (training with attention dropout outside CUDA). Memory for compute: on all-MiniLM-L6-v2
  (16 passages of 128 tokens, 2 CPU ranks) 130-170 MB less peak per process at ~6% more time a step
  (docs/scale.md), so it is off unless asked for. With gradient checkpointing it is skipped (whole
  layers are recomputed already).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from embedtrain.schema.base import StrictModel


class SpeedConfig(StrictModel):
    """Throughput settings of a training run (see the module docstring)."""

    precision: Literal["auto", "bf16", "fp32"] = Field(default="auto", description=(
        "auto: bf16 autocast where the hardware has native bf16, else fp32; an explicit training.bf16/fp16 wins."))
    bucketing: bool = Field(default=True, description="Embed each batch in length-sorted chunks (less padding).")
    bucket_overhead_tokens: int | None = Field(default=None, gt=0, description=(
        "Cost of one extra forward pass in padded tokens (default: measured per device type)."))
    sort_cached_batches: bool = Field(default=True, description=(
        "GradCache losses: mini-batches of rows of similar length."))
    attention_dropout: float | None = Field(default=None, ge=0, lt=1, description=(
        "Override the model's attention dropout (0 lets the fused attention kernel run); null keeps it."))
    recompute_attention: bool = Field(default=False, description=(
        "Recompute attention probabilities in the backward pass instead of keeping them (same gradients; "
        "less memory, a little more time) where the fused kernel cannot run."))
