"""A masked-language-model head applied to the first ``D`` dims of a hidden state (for SMAE).

BERT-style MLM heads are ``dense (H->H) -> activation -> LayerNorm(H) -> decoder (H->vocab)``. To score
a sub-network whose hidden states are cut to their first ``D`` dims, the same head is *sliced*: the
top-left ``D x D`` block of ``dense``, the first ``D`` entries of the LayerNorm, and the first ``D``
input columns of the decoder (which is tied to the word embeddings, so the sub-network predicts
tokens with the first ``D`` dims of their embeddings). No new parameters are added, every sub-head
shares weights with the full head, and at ``D = H`` it is exactly the model's own head. (The
alternative, zero-padding the hidden state back to ``H``, would let the LayerNorm statistics and the
dense layer see ``H - D`` fake zeros; slicing keeps each sub-network a self-contained smaller model,
as in MatFormer-style nested training.)

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
    """The pieces of an MLM head that the sliced head needs."""

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


def sliced_mlm_logits(parts: MLMHeadParts, hidden: Tensor, dim: int) -> Tensor:
    """Vocabulary logits from the first ``dim`` dims of ``hidden`` through the sliced head."""
    if not 1 <= dim <= parts.width:
        raise ValueError(f"dim {dim} is outside 1..{parts.width}")
    x = hidden[..., :dim]
    dense_bias = parts.dense.bias[:dim] if parts.dense.bias is not None else None
    x = parts.activation(F.linear(x, parts.dense.weight[:dim, :dim], dense_bias))
    norm = parts.norm
    x = F.layer_norm(x, (dim,), norm.weight[:dim] if norm.weight is not None else None,
                     norm.bias[:dim] if norm.bias is not None else None, norm.eps)
    return F.linear(x, parts.decoder.weight[:, :dim], parts.bias)
