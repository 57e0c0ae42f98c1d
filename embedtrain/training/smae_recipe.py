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
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from embedtrain.config.loading import _fields_at, _format_loc, _set_dotted, parse_overrides
from embedtrain.config.recipe import FileType, ModelConfig, StrictModel
from embedtrain.config.yaml_loader import line_for, load_yaml_with_lines
from embedtrain.errors import RecipeError, suggest


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


class SmaeRecipe(StrictModel):
    """A full SMAE pre-training recipe."""

    stage: Literal["smae"]
    model: ModelConfig = Field(default_factory=ModelConfig)
    datasets: list[TextDatasetConfig] = Field(min_length=1)
    smae: SmaeConfig = Field(default_factory=SmaeConfig)
    training: dict[str, Any] = Field(default_factory=dict)
    output_dir: str
    seed: int = 42

    _source: Path | None = PrivateAttr(default=None)
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    @field_validator("training")
    @classmethod
    def _no_top_level_keys(cls, training: dict[str, Any]) -> dict[str, Any]:
        for key in ("output_dir", "seed"):
            if key in training:
                raise ValueError(f"set {key} at the top level of the recipe, not under 'training'")
        return training

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._source.parent if self._source is not None else Path.cwd()

    def resolve_path(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def line_of(self, *loc: Any) -> int | None:
        return line_for(self._lines, loc) if self._lines else None


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
    path = Path(path)
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping (key: value) at the top level", file=path, line=1)
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value)
    try:
        recipe = SmaeRecipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown key '{loc[-1]}'." + suggest(str(loc[-1]), _fields_at(SmaeRecipe, loc))
        elif err["type"] == "missing":
            message = "required field is missing"
        raise RecipeError(message, file=path, line=line_for(lines, loc), field=_format_loc(loc)) from None
    recipe._source = path.resolve()
    recipe._lines = lines
    allowed = mlm_training_arg_names()
    for key in recipe.training:
        if key not in allowed:
            raise RecipeError(f"unknown training argument '{key}'." + suggest(key, allowed), file=recipe.source,
                              line=recipe.line_of("training", key), field=f"training.{key}")
    return recipe


def mlm_training_arg_names() -> set[str]:
    """Field names accepted by ``transformers.TrainingArguments``."""
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
