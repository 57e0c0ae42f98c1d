"""The ``model:`` section of a recipe: which model training starts from, and how it is loaded."""

from __future__ import annotations

from pydantic import Field

from embedtrain.schema.base import StrictModel
from embedtrain.schema.decoder import ModelOptions


class ModelSource(StrictModel):
    """Where the start model comes from (the first keys of ``model:``; see :class:`ModelConfig`)."""

    name_or_path: str = "all-MiniLM-L6-v2"
    max_seq_length: int | None = Field(default=None, gt=0)
    saved_max_seq_length: int | None = Field(default=None, gt=0)
    device: str | None = None
    trust_remote_code: bool = False


class ModelConfig(ModelOptions, ModelSource):
    """Which model to start from, and how it is loaded.

    ``name_or_path`` is a local sentence-transformers / transformers folder, or the short name of a
    model that ships inside a Python package (``all-MiniLM-L6-v2``). ``max_seq_length`` is the length texts
    are truncated to *during training*; the saved model keeps the start model's own length (what it is
    evaluated and used at) unless ``saved_max_seq_length`` names another one.

    ``trust_remote_code`` lets a model folder run its own Python code (``auto_map`` in its configs, custom
    module classes); it is off by default and nothing from a model folder runs without it.

    The other keys (``dtype``, ``attn_implementation``, ``pooling``, ``bidirectional``, ``padding_side``,
    ``gradient_checkpointing``, ``latent_attention``, ``lora``) say how the model is loaded, pooled and
    adapted -- mostly for decoder LLMs (:class:`~embedtrain.schema.decoder.ModelOptions`; docs/decoder.md).
    Left unset, they keep what the checkpoint does.
    """
