"""The ``model:`` section of a recipe: which model training starts from, and how it is loaded."""

from __future__ import annotations

from pydantic import Field, field_validator

from embedtrain.schema.base import StrictModel
from embedtrain.schema.decoder import ModelOptions


class ModelSource(StrictModel):
    """Where the start model comes from (the first keys of ``model:``; see :class:`ModelConfig`)."""

    name_or_path: str = "all-MiniLM-L6-v2"
    max_seq_length: int | None = Field(default=None, gt=0)
    saved_max_seq_length: int | None = Field(default=None, gt=0)
    device: str | None = None
    trust_remote_code: bool = False
    #: Train a shallower student cut from the start model: ``3`` keeps the first 3 transformer layers,
    #: ``[0, 2, 4]`` keeps those layers (0-based, in that order). The saved model has only these layers.
    keep_layers: int | list[int] | None = None

    @field_validator("keep_layers")
    @classmethod
    def _layers_positive(cls, keep: int | list[int] | None) -> int | list[int] | None:
        if isinstance(keep, int) and keep < 1:
            raise ValueError("keep_layers must be >= 1 (the number of first layers to keep) or a list of layers")
        if isinstance(keep, list) and (not keep or any(i < 0 for i in keep) or len(set(keep)) != len(keep)):
            raise ValueError("keep_layers as a list must name distinct layer indices >= 0")
        return keep


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

    ``keep_layers`` starts training from a layer-truncated copy of the model (a smaller distillation student,
    see docs/distillation.md); checked against the model's depth before it is loaded.
    """
