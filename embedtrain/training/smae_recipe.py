"""Recipe schema for the Starbucks masked-autoencoding (SMAE) pre-training stage.

An SMAE recipe is a YAML file with ``stage: smae`` at the top level; ``embedtrain train`` sends it to
:func:`embedtrain.training.smae.train_smae` instead of the contrastive trainer. Example::

    stage: smae
    model: {name_or_path: all-MiniLM-L6-v2, max_seq_length: 128}
    datasets:
      - {name: sentences, path: corpus.jsonl, format: text}      # one text per row
    smae: {pairs: null, mlm_probability: 0.15}                      # null: default pairs
    training: {max_steps: 1000, per_device_train_batch_size: 32, learning_rate: 5.0e-5}
    output_dir: runs/smae

Errors name the file, line and field, like contrastive recipes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator

from embedtrain.config.base import LocatedModel, StrictModel, check_known_keys, load_config_file, parse_overrides
from embedtrain.config.recipe import FileType, ModelConfig


class TextDatasetConfig(StrictModel):
    """A plain-text dataset: one text per row, found in column ``text`` (or mapped with ``columns``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    path: str
    format: Literal["text"] = "text"
    file_type: FileType | None = None
    split: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    max_samples: int | None = Field(default=None, gt=0)


class SmaeConfig(StrictModel):
    """What SMAE trains: MLM at each (layer, dim) pair.

    ``pairs`` default to the Starbucks list scaled to the model (see
    :mod:`embedtrain.models.subnetwork_pairs`); ``weights`` (one per pair) default to equal.
    """

    pairs: list[list[int]] | None = None
    weights: list[float] | None = None
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0)


class SmaeRecipe(LocatedModel):
    """A full SMAE pre-training recipe."""

    stage: Literal["smae"]
    model: ModelConfig = Field(default_factory=ModelConfig)
    datasets: list[TextDatasetConfig] = Field(min_length=1)
    smae: SmaeConfig = Field(default_factory=SmaeConfig)
    training: dict[str, Any] = Field(default_factory=dict)
    output_dir: str
    seed: int = 42

    @field_validator("training")
    @classmethod
    def _no_top_level_keys(cls, training: dict[str, Any]) -> dict[str, Any]:
        for key in ("output_dir", "seed"):
            if key in training:
                raise ValueError(f"set {key} at the top level of the recipe, not under 'training'")
        return training


def is_smae_recipe(path: str | Path, overrides: list[str] | None = None) -> bool:
    """Whether the YAML at ``path`` (after ``--set`` overrides) declares ``stage: smae``."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False  # the normal loader reports the syntax error with its line
    stage = data.get("stage") if isinstance(data, dict) else None
    for key, value in parse_overrides(overrides):
        if key == "stage":
            stage = value
    return stage == "smae"


def load_smae_recipe(path: str | Path, overrides: list[str] | None = None) -> SmaeRecipe:
    """Load and validate an SMAE recipe; errors name file, line and field."""
    recipe = load_config_file(SmaeRecipe, path, overrides)
    check_known_keys(recipe, "training", recipe.training, mlm_training_arg_names(), "training argument")
    return recipe


def mlm_training_arg_names() -> set[str]:
    """Field names accepted by ``transformers.TrainingArguments``."""
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
