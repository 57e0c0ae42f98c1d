"""Sub-networks of a sentence-transformer: the first ``L`` transformer layers and/or the first ``D`` dims.

Used by 2D-Matryoshka / Starbucks evaluation grids and by ``embedtrain export``. Layers are dropped
from the Hugging Face encoder itself (so the result saves and loads as an ordinary, smaller model);
dimensions are cut with sentence-transformers' ``truncate_dim``.
"""

from __future__ import annotations

import copy

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


def truncated_copy(model, *, layers: int | None = None, dim: int | None = None):
    """A deep copy of ``model`` with only the first ``layers`` layers and ``dim`` output dims.

    ``None`` keeps the full depth / width. The original model is not modified.
    """
    small = copy.deepcopy(model)
    if layers is not None and layers != num_layers(small):
        keep_first_layers(small, layers)
    if dim is not None:
        full = small.get_embedding_dimension() if hasattr(small, "get_embedding_dimension") \
            else small.get_sentence_embedding_dimension()
        if not 1 <= dim <= full:
            raise CheckpointError(f"cannot truncate a {full}-dim embedding to {dim} dims")
        small.truncate_dim = dim if dim != full else None
    return small
