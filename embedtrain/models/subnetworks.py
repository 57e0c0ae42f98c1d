"""Embed a batch with many (layer, dim) sub-networks of a sentence-transformer in one forward pass.

2D-Matryoshka and Starbucks losses need, for every training step, the embedding that each
sub-network ``(L, D)`` (first ``L`` layers, first ``D`` dims) would produce. Running ``L``-layer
copies one after the other would cost ``sum(L)`` layer passes; instead :class:`SubnetworkEmbedder`
runs the transformer once with ``output_hidden_states``, takes the hidden states after layer ``L``
as the token embeddings, and sends them through the model's own remaining modules (pooling,
dense, normalize...) so the pooling mode and normalisation are exactly the model's.
The result is then cut to its first ``D`` dims, *without* renormalising, which is exactly what
``truncated_copy(model, layers=L, dim=D).encode(...)`` and an exported model return.

Some architectures apply a final transform after the last layer (e.g. a final norm); then the
hidden state after layer ``L`` is not what an ``L``-layer model would output. That is detected on
the first batch (the last hidden state differs from the model output) and the embedder falls back to
running the first ``L`` layers for each distinct ``L`` (slower, but exact).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from embedtrain.errors import CheckpointError
from embedtrain.models.truncate import embedding_dim, encoder_layers, first_layers

logger = logging.getLogger(__name__)

Pair = tuple[int, int]


def unwrap_model(model: Any) -> Any:
    """The SentenceTransformer inside DDP (``.module``) / ``torch.compile`` (``._orig_mod``) wrappers."""
    while hasattr(model, "_orig_mod") or (hasattr(model, "module") and not hasattr(model, "encode")):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


class SubnetworkEmbedder:
    """Sentence embeddings of several ``(layers, dim)`` sub-networks from one transformer pass.

    ``model`` is a SentenceTransformer whose first module is a Hugging Face ``Transformer``.
    """

    def __init__(self, model: Any) -> None:
        self.model = unwrap_model(model)
        first = self.model[0]
        if not hasattr(first, "auto_model"):
            raise CheckpointError(f"sub-network training needs a model whose first module is a transformer, "
                                  f"got {type(first).__name__}")
        self.num_layers = len(encoder_layers(self.model))
        self.dim = embedding_dim(self.model)
        #: None until the first batch shows whether hidden states equal L-layer outputs.
        self.hidden_states_exact: bool | None = None

    @property
    def full_pair(self) -> Pair:
        return (self.num_layers, self.dim)

    def _run_transformer(self, features: dict[str, Any], hidden: bool) -> dict[str, Any]:
        transformer = self.model[0]
        config = transformer.auto_model.config
        previous = config.output_hidden_states
        config.output_hidden_states = hidden
        try:
            return transformer(dict(features))
        finally:
            config.output_hidden_states = previous

    def _pool(self, out: dict[str, Any], token_embeddings: Tensor) -> Tensor:
        feats = {k: v for k, v in out.items() if k not in ("all_layer_embeddings", "sentence_embedding")}
        feats["token_embeddings"] = token_embeddings
        for module in list(self.model.children())[1:]:
            feats = module(feats)
        return feats["sentence_embedding"]

    def embed(self, features: dict[str, Any], pairs: Sequence[Pair]) -> list[Tensor]:
        """One ``(batch, D)`` tensor per pair, in the order of ``pairs``."""
        layers_needed = sorted({layer for layer, _ in pairs})
        need_hidden = any(layer != self.num_layers for layer in layers_needed)
        out = self._run_transformer(features, hidden=need_hidden)
        pooled: dict[int, Tensor] = {}
        if need_hidden:
            hidden = out.get("all_layer_embeddings")
            if hidden is None or len(hidden) != self.num_layers + 1:
                raise CheckpointError(f"{type(self.model[0].auto_model).__name__} does not return one hidden "
                                      "state per layer; sub-network training cannot use it")
            if self.hidden_states_exact is None:
                self.hidden_states_exact = bool(torch.equal(hidden[-1], out["token_embeddings"]))
                if not self.hidden_states_exact:
                    logger.warning("%s transforms its last hidden state; sub-network embeddings will run the "
                                   "first L layers separately for each L (exact, but slower)",
                                   type(self.model[0].auto_model).__name__)
        for layer in layers_needed:
            if layer == self.num_layers:
                tokens = out["token_embeddings"]
            elif self.hidden_states_exact:
                tokens = hidden[layer]
            else:
                with first_layers(self.model, layer):
                    tokens = self._run_transformer(features, hidden=False)["token_embeddings"]
            pooled[layer] = self._pool(out, tokens)
        return [pooled[layer][..., :dim] for layer, dim in pairs]
