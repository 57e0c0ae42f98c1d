"""The ``smae:`` section of a ``stage: smae`` recipe (Starbucks masked-autoencoding pre-training)."""

from __future__ import annotations

from pydantic import Field

from embedtrain.schema.base import StrictModel


class SmaeConfig(StrictModel):
    """What SMAE trains: MLM at each (layer, dim) pair.

    ``pairs`` default to the Starbucks list scaled to the model (see :mod:`embedtrain.models.subnetworks`);
    ``weights`` (one per pair) default to equal.
    """

    pairs: list[list[int]] | None = None
    weights: list[float] | None = None
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0)
