"""A masked-language-model head read from the first ``D`` dims of a hidden state (for SMAE).

BERT-style MLM heads are ``dense (H->H) -> activation -> LayerNorm(H) -> decoder (H->vocab)``. Starbucks'
SMAE (``smae/modelling.py`` of the reference code) scores a sub-network whose hidden states are cut to their
first ``D`` dims with the *same* head, reading only the first ``D`` input columns of ``dense`` (its full bias,
all ``H`` outputs), then the full LayerNorm and decoder. That equals the full head applied to the hidden
state with its last ``H - D`` dims set to zero. No parameters are added, every sub-network shares the full
head, and at ``D = H`` it is exactly the model's own head. The transformed ``H``-dim vector
(:func:`subdim_transform`) is also what SMAE's MAE decoder receives as the sentence (CLS) representation.

(An earlier embedtrain variant sliced the head to a ``D``-wide model: ``dense[:D, :D]``, ``LayerNorm[:D]``,
``decoder[:, :D]``. It was replaced by the reference form; no experiment showed it better, and the MAE decoder
needs an ``H``-dim input.)

Supported heads: BERT family (``cls.predictions``) and RoBERTa / XLM-R / MPNet / CamemBERT family
(``lm_head``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from embedtrain.errors import CheckpointError


@dataclass
class MLMHeadParts:
    """The pieces of an MLM head that the sub-dimension head needs."""

    dense: nn.Linear
    activation: Callable[[Tensor], Tensor]
    norm: nn.LayerNorm
    decoder: nn.Linear
    bias: Tensor | None

    @property
    def width(self) -> int:
        return self.dense.in_features


def mlm_head_parts(mlm_model: nn.Module) -> MLMHeadParts:
    """Find the MLM head of a ``*ForMaskedLM`` model; raise :class:`CheckpointError` if it is unknown."""
    cls_head = getattr(mlm_model, "cls", None)
    predictions = getattr(cls_head, "predictions", None)
    if predictions is not None and hasattr(predictions, "transform"):  # BERT family
        t = predictions.transform
        decoder = predictions.decoder
        bias = decoder.bias if decoder.bias is not None else getattr(predictions, "bias", None)
        return MLMHeadParts(t.dense, t.transform_act_fn, t.LayerNorm, decoder, bias)
    lm_head = getattr(mlm_model, "lm_head", None)
    if lm_head is not None and all(hasattr(lm_head, a) for a in ("dense", "layer_norm", "decoder")):
        decoder = lm_head.decoder
        bias = decoder.bias if decoder.bias is not None else getattr(lm_head, "bias", None)
        return MLMHeadParts(lm_head.dense, F.gelu, lm_head.layer_norm, decoder, bias)
    raise CheckpointError(f"SMAE supports BERT- and RoBERTa-style MLM heads; {type(mlm_model).__name__} "
                          "has neither 'cls.predictions' nor 'lm_head'")


def subdim_transform(parts: MLMHeadParts, hidden: Tensor, dim: int) -> Tensor:
    """The head's transform (dense, activation, LayerNorm) of the first ``dim`` dims of ``hidden``: ``H`` dims."""
    if not 1 <= dim <= parts.width:
        raise ValueError(f"dim {dim} is outside 1..{parts.width}")
    x = F.linear(hidden[..., :dim], parts.dense.weight[:, :dim], parts.dense.bias)
    return parts.norm(parts.activation(x))


def decode(parts: MLMHeadParts, transformed: Tensor) -> Tensor:
    """Vocabulary logits of an already transformed ``H``-dim vector."""
    return F.linear(transformed, parts.decoder.weight, parts.bias)


def subdim_mlm_logits(parts: MLMHeadParts, hidden: Tensor, dim: int) -> Tensor:
    """Vocabulary logits from the first ``dim`` dims of ``hidden`` (Starbucks' sub-dimension MLM head)."""
    return decode(parts, subdim_transform(parts, hidden, dim))
