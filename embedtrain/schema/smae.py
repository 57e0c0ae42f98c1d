"""The ``smae:`` section of a ``stage: smae`` recipe (Starbucks masked-autoencoding pre-training)."""

from __future__ import annotations

from pydantic import Field, model_validator

from embedtrain.schema.base import StrictModel


class SmaeConfig(StrictModel):
    """What SMAE trains: per (layer, dim) pair, MLM on the sub-network and an MAE decoder on its CLS vector.

    Defaults are the Starbucks paper's (``smae/pretrain_smae.sh``): encoder mask 0.2, decoder mask 0.4,
    whole-word masking, per pair ``(MLM + MAE) / 2``. ``pairs`` default to the Starbucks list scaled to the
    model (see :mod:`embedtrain.models.subnetworks`); ``weights`` (one per pair) default to equal.
    ``mae: false`` trains the sub-network MLM only (and ``decoder_mlm_probability`` is unused).
    """

    pairs: list[list[int]] | None = None
    weights: list[float] | None = None
    mlm_probability: float = Field(default=0.2, gt=0.0, lt=1.0, description="Encoder mask rate.")
    mae: bool = Field(default=True, description="Also train the one-layer MAE decoder on each pair's CLS vector.")
    decoder_mlm_probability: float = Field(default=0.4, gt=0.0, lt=1.0, description="MAE decoder mask rate.")
    whole_word_mask: bool = Field(default=True, description="Mask whole words (False: single tokens).")

    @model_validator(mode="after")
    def _nested_masks(self) -> SmaeConfig:
        if self.mae and self.decoder_mlm_probability < self.mlm_probability:
            raise ValueError(f"decoder_mlm_probability ({self.decoder_mlm_probability}) must be at least "
                             f"mlm_probability ({self.mlm_probability}): the decoder's masks contain the encoder's")
        return self
