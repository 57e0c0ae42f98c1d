"""Sub-networks of a sentence-transformer for 2D-Matryoshka / Starbucks training: which ``(layers, dim)``
pairs to train (lists, defaults, checks) and how to embed a batch with many of them in one pass.

A *sub-network* ``(L, D)`` of a sentence-transformer is its first ``L`` transformer layers with the
embedding cut to its first ``D`` dimensions (what :func:`embedtrain.models.truncate.truncated_copy`
builds and ``embedtrain export`` saves).

Default list (scaling rule)
---------------------------
The Starbucks paper trains BERT-base (12 layers, 768 dims) on
``(2,32) (4,64) (6,128) (8,256) (10,512) (12,768)``. For a model with ``N`` layers and width ``H``
each reference pair ``(l, d)`` becomes ``(max(1, round(l * N / 12)), max(1, round(d * H / 768)))``:
layers scale with depth, dims with width, so the list keeps its shape (the last pair is always the
full model). Pairs that collapse onto the same (layer, dim) after rounding are kept once.
all-MiniLM-L6-v2 (6 layers, 384 dims) gets ``(1,16) (2,32) (3,64) (4,128) (5,256) (6,384)``.

Embedding
---------
2D-Matryoshka and Starbucks losses need, for every training step, the embedding that each
sub-network ``(L, D)`` (first ``L`` layers, first ``D`` dims) would produce. Running ``L``-layer
copies one after the other would cost ``sum(L)`` layer passes; instead :class:`SubnetworkEmbedder`
runs the transformer once with ``output_hidden_states``, takes the hidden states after layer ``L``
as the token embeddings, and sends them through the model's own remaining modules (pooling,
dense, normalize...) so the pooling mode and normalisation are exactly the model's.
The result is then cut to its first ``D`` dims, *without* renormalising, which is exactly what
``truncated_copy(model, layers=L, dim=D).encode(...)`` and an exported model return.

Some architectures apply a final transform after the last layer (e.g. the final RMSNorm of Llama and
other decoder LLMs); then the hidden state after layer ``L`` is not what an ``L``-layer model would
output. transformers may even return the *transformed* state as the last hidden state and untransformed
ones before it, so the check runs on the first batch that needs a shallower sub-network: in eval mode
(no dropout) and without gradients, the hidden state after layer ``L`` is compared with the output of
the first ``L`` layers run on their own. When they differ, the embedder runs the first ``L`` layers for
each distinct ``L`` (slower, but exact).
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

#: A sub-network: its first ``layers`` transformer layers, embeddings cut to the first ``dim`` dims.
Pair = tuple[int, int]

#: The Starbucks paper's list for a 12-layer, 768-dim model.
REFERENCE_PAIRS: tuple[Pair, ...] = ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))
REFERENCE_LAYERS = 12
REFERENCE_DIM = 768


def _round_half_up(x: float) -> int:
    """Round .5 up (Python's ``round`` rounds half to even, which makes the rule harder to state)."""
    return int(x + 0.5)


def default_pairs(num_layers: int, dim: int) -> list[Pair]:
    """The reference Starbucks pairs scaled to a model of ``num_layers`` layers and width ``dim``."""
    if num_layers < 1 or dim < 1:
        raise ValueError(f"model must have >= 1 layer and >= 1 dim, got {num_layers} layers, {dim} dims")
    pairs: list[Pair] = []
    for ref_layer, ref_dim in REFERENCE_PAIRS:
        pair = (max(1, _round_half_up(ref_layer * num_layers / REFERENCE_LAYERS)),
                max(1, _round_half_up(ref_dim * dim / REFERENCE_DIM)))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def default_layers(num_layers: int) -> list[int]:
    """Layer choices of the default pairs (for 2DMSE sampling)."""
    return sorted({layer for layer, _ in default_pairs(num_layers, REFERENCE_DIM)})


def default_dims(dim: int) -> list[int]:
    """Dim choices of the default pairs (for 2DMSE sampling)."""
    return sorted({d for _, d in default_pairs(REFERENCE_LAYERS, dim)})


def validate_pairs(pairs: Sequence[Sequence[int]], num_layers: int, dim: int) -> list[Pair]:
    """Check a user-given pair list against a model; return it as a list of ``(layer, dim)`` tuples.

    Rules: each item is two integers ``[layer, dim]`` with ``1 <= layer <= num_layers`` and
    ``1 <= dim <= dim``; the list runs from small to large (layers and dims never decrease) and has
    no duplicates. Raises :class:`ValueError` naming the offending item.
    """
    if not pairs:
        raise ValueError("the pair list is empty")
    out: list[Pair] = []
    for i, item in enumerate(pairs):
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise ValueError(f"pairs[{i}] must be [layer, dim] (two integers), got {item!r}")
        layer, d = int(item[0]), int(item[1])
        if not 1 <= layer <= num_layers:
            raise ValueError(f"pairs[{i}] = [{layer}, {d}]: layer {layer} is outside 1..{num_layers} "
                             f"(the model has {num_layers} layers)")
        if not 1 <= d <= dim:
            raise ValueError(f"pairs[{i}] = [{layer}, {d}]: dim {d} is outside 1..{dim} "
                             f"(the model's embeddings have {dim} dims)")
        if out:
            prev_layer, prev_dim = out[-1]
            if (layer, d) == (prev_layer, prev_dim) or (layer, d) in out:
                raise ValueError(f"pairs[{i}] = [{layer}, {d}] is listed twice")
            if layer < prev_layer or d < prev_dim:
                raise ValueError(f"pairs must go from small to large: pairs[{i}] = [{layer}, {d}] comes after "
                                 f"[{prev_layer}, {prev_dim}] (layers and dims may not decrease)")
        out.append((layer, d))
    return out


def validate_choices(values: Sequence[int], upper: int, what: str) -> list[int]:
    """Check a list of layer counts or dims (each in ``1..upper``); return it sorted and de-duplicated."""
    if not values:
        raise ValueError(f"the list of {what} is empty")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{what} must be integers, got {v!r}")
        if not 1 <= v <= upper:
            raise ValueError(f"{what} value {v} is outside 1..{upper}")
    return sorted(set(values))


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

    def _hidden_state_is_output(self, features: dict[str, Any], layer: int) -> bool:
        """Whether the hidden state after ``layer`` equals what the first ``layer`` layers alone output.

        Runs the Hugging Face model directly (not the sentence-transformers module) in eval mode (dropout off)
        without gradients, so only the architecture can make them differ.
        """
        hf_model = self.model[0].auto_model
        inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        was_training = hf_model.training
        hf_model.eval()
        try:
            with torch.no_grad():
                hidden = hf_model(**inputs, output_hidden_states=True).hidden_states[layer]
                with first_layers(self.model, layer):
                    direct = hf_model(**inputs).last_hidden_state
        finally:
            hf_model.train(was_training)
        return bool(torch.allclose(hidden, direct, rtol=1e-4, atol=1e-5))

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
                shallow = next(layer for layer in layers_needed if layer != self.num_layers)
                self.hidden_states_exact = self._hidden_state_is_output(features, shallow)
                if not self.hidden_states_exact:
                    logger.warning("%s: the hidden state after layer %d is not what the first %d layers output "
                                   "(a final norm?); sub-network embeddings will run the first L layers separately "
                                   "for each L (exact, but slower)", type(self.model[0].auto_model).__name__,
                                   shallow, shallow)
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
