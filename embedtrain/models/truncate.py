"""Sub-networks of a sentence-transformer: the first ``L`` transformer layers and/or the first ``D`` dims.

Used by 2D-Matryoshka / Starbucks evaluation grids, by ``embedtrain export`` and by ``model.keep_layers``
(a shallower student cut from the start model, :func:`select_layers`). Layers are dropped
from the Hugging Face encoder itself (so the result saves and loads as an ordinary, smaller model);
dimensions are cut with sentence-transformers' ``truncate_dim``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from embedtrain.errors import CheckpointError


def encoder_layers(model) -> nn.ModuleList:
    """The list of transformer blocks of the first (Transformer) module of ``model``.

    Looks for the ``nn.ModuleList`` whose length is ``config.num_hidden_layers`` (BERT, RoBERTa,
    XLM-R, MPNet, DistilBERT, ModernBERT... all keep their blocks in one such list).
    """
    hf_model = model[0].auto_model
    n = getattr(hf_model.config, "num_hidden_layers", None)
    for _, module in hf_model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and n:
            return module
    raise CheckpointError(f"cannot find the transformer layers of {type(hf_model).__name__}")


def num_layers(model) -> int:
    """Number of transformer layers of ``model``."""
    return len(encoder_layers(model))


def keep_first_layers(model, n: int) -> None:
    """Drop all but the first ``n`` transformer layers of ``model``, in place."""
    layers = encoder_layers(model)
    total = len(layers)
    if not 1 <= n <= total:
        raise CheckpointError(f"cannot keep {n} layers of a {total}-layer model")
    hf_model = model[0].auto_model
    for _ in range(total - n):
        del layers[-1]
    hf_model.config.num_hidden_layers = n
    # Some architectures keep per-layer metadata (e.g. attention types) sized to the layer count.
    layer_types = getattr(hf_model.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == total:
        hf_model.config.layer_types = layer_types[:n]


def layer_indices(keep: int | Sequence[int], total: int) -> list[int]:
    """The layers a ``keep_layers`` setting keeps of a ``total``-layer model, in order.

    An int ``n`` keeps the first ``n`` layers; a list keeps those layers (0-based, distinct, in the order
    given), e.g. ``[0, 2, 4]`` for a DistilBERT-style "every other layer" student. Raises ``ValueError``.
    """
    if isinstance(keep, int):
        if not 1 <= keep <= total:
            raise ValueError(f"cannot keep {keep} layers of a {total}-layer model (1..{total})")
        return list(range(keep))
    indices = [int(i) for i in keep]
    if not indices:
        raise ValueError("the list of layers to keep is empty")
    if any(not 0 <= i < total for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"layer indices must be distinct and in 0..{total - 1}, got {indices}")
    return indices


def select_layers(model, keep: int | Sequence[int]) -> None:
    """Keep only the transformer layers ``keep`` selects (see :func:`layer_indices`) of ``model``, in place.

    The result saves and loads as an ordinary, shallower model: ``num_hidden_layers`` (and per-layer metadata
    such as ``layer_types``) follow, and blocks that number themselves (``layer_idx``, for KV caches) are
    renumbered. Embeddings, pooling and any Dense / Normalize modules are kept, so a student cut from a
    teacher starts in the teacher's embedding space and width.
    """
    layers = encoder_layers(model)
    total = len(layers)
    try:
        indices = layer_indices(keep, total)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if indices == list(range(len(indices))):
        if len(indices) < total:
            keep_first_layers(model, len(indices))
        return
    chosen = [layers[i] for i in indices]
    for new_index, block in enumerate(chosen):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    while len(layers):
        del layers[-1]
    for block in chosen:
        layers.append(block)
    config = model[0].auto_model.config
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == total:
        config.layer_types = [layer_types[i] for i in indices]
    config.num_hidden_layers = len(indices)


@contextmanager
def first_layers(model: Any, n: int) -> Iterator[None]:
    """Temporarily keep only the first ``n`` transformer layers of ``model`` (restored on exit)."""
    layers = encoder_layers(model)
    config = model[0].auto_model.config
    total = len(layers)
    if n == total:
        yield
        return
    tail = [layers[i] for i in range(n, total)]
    layer_types = getattr(config, "layer_types", None)
    keep_first_layers(model, n)
    try:
        yield
    finally:
        layers.extend(tail)
        config.num_hidden_layers = total
        if isinstance(layer_types, list):
            config.layer_types = layer_types


def embedding_dim(model: Any) -> int:
    """Full (untruncated) output width of a SentenceTransformer, whatever its ``truncate_dim``."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    truncate = getattr(model, "truncate_dim", None)
    try:
        model.truncate_dim = None
        return int(getter())
    finally:
        model.truncate_dim = truncate


def plain_copy(model):
    """A deep copy of ``model`` that runs its class's own ``forward``.

    Wrappers installed on the instance (length bucketing, recording hooks) are closures over the *original*
    model; a deep copy would keep calling them, i.e. compute with the original's weights. They are dropped.
    """
    copied = copy.deepcopy(model)
    copied.__dict__.pop("forward", None)
    return copied


def truncated_copy(model, *, layers: int | None = None, dim: int | None = None):
    """A deep copy of ``model`` with only the first ``layers`` layers and ``dim`` output dims.

    ``None`` keeps the full depth / width. The original model is not modified.
    """
    small = plain_copy(model)
    if layers is not None and layers != num_layers(small):
        keep_first_layers(small, layers)
    if dim is not None:
        full = embedding_dim(small)
        if not 1 <= dim <= full:
            raise CheckpointError(f"cannot truncate a {full}-dim embedding to {dim} dims")
        small.truncate_dim = dim if dim != full else None
    return small
