"""The ``loss:`` section of a recipe (and of a dataset or task): a registered loss and its parameters."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from embedtrain.schema.base import StrictModel


class LossConfig(StrictModel):
    """A loss from the registry (``embedtrain losses``) and its keyword parameters.

    Wrapper losses (Matryoshka and friends) take the loss they wrap in ``inner``.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    inner: LossConfig | None = None


LossConfig.model_rebuild()
