"""Typed recipe schema.

A recipe is the YAML file a user hands to ``embedtrain train``. Every section is a pydantic model
with ``extra="forbid"`` so typos are caught before any model is loaded; :func:`load_recipe` turns
pydantic's errors into :class:`~embedtrain.errors.RecipeError` naming the file, line and field.

Relative data paths are resolved against the recipe file's folder, so a recipe works from any
working directory; ``output_dir`` is relative to the working directory, like every HF trainer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from embedtrain.config.base import LocatedModel, StrictModel
from embedtrain.evaluation.config import EvalConfig
from embedtrain.mining.config import DatasetMiningConfig

DataFormat = Literal["pairs", "triplets", "hard_negatives", "scored_pairs"]
FileType = Literal["jsonl", "json", "parquet", "csv", "hf_disk", "hub"]


class ModelConfig(StrictModel):
    """Which model to start from.

    ``name_or_path`` is a local sentence-transformers / transformers folder, or the short name of a
    model that ships inside a Python package (``all-MiniLM-L6-v2``); nothing is downloaded.
    """

    name_or_path: str = "all-MiniLM-L6-v2"
    max_seq_length: int | None = Field(default=None, gt=0)
    device: str | None = None


class LossConfig(StrictModel):
    """A loss from the registry (:mod:`embedtrain.losses`) and its keyword parameters.

    Wrapper losses (Matryoshka and friends) take the loss they wrap in ``inner``.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    inner: LossConfig | None = None


class DatasetConfig(StrictModel):
    """One training dataset.

    ``columns`` maps a role of the format (``anchor``, ``positive``, ``negative``, ``negatives``,
    ``sentence1``, ``sentence2``, ``score``) to the column name in the file; roles left out are
    found by their usual names (``query``, ``pos``, ``label``...).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    path: str
    format: DataFormat
    file_type: FileType | None = None
    split: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    num_negatives: int | None = Field(default=None, gt=0)
    max_samples: int | None = Field(default=None, gt=0)
    query_prompt: str | None = None
    passage_prompt: str | None = None
    loss: LossConfig | None = None
    #: Hard-negative re-mining while training (embedtrain.mining), e.g. ``{dynamic: {every_steps: 100}}``.
    mining: DatasetMiningConfig | None = None


class PromptsConfig(StrictModel):
    """Model-level prompts saved into the checkpoint (``model.encode(..., prompt_name="query")``)."""

    query: str | None = None
    passage: str | None = None


class EvaluatorConfig(StrictModel):
    """A quick STS check run before and after training (cosine Spearman x 100).

    ``path`` is a scored-pairs file (``sentence1``, ``sentence2``, ``score``, mappable by ``columns``).
    """

    name: str
    type: Literal["sts"] = "sts"
    path: str
    file_type: FileType | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    max_samples: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=64, gt=0)


class Recipe(LocatedModel):
    """A full training recipe."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    #: Per-task LoRA adapters (embedtrain.adapters); a task recipe needs no top-level datasets/loss.
    tasks: TaskList | None = None
    datasets: list[DatasetConfig] = Field(default_factory=list, validate_default=True)
    loss: LossConfig | None = Field(default=None, validate_default=True)
    training: dict[str, Any] = Field(default_factory=dict)
    output_dir: str
    seed: int = 42
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    evaluators: list[EvaluatorConfig] = Field(default_factory=list)
    multi_dataset_sampler: Literal["proportional", "round_robin"] = "proportional"
    #: MTEB evaluation of the final model after training (embedtrain.evaluation).
    eval: EvalConfig | None = None

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: list[DatasetConfig], info: ValidationInfo) -> list[DatasetConfig]:
        if not datasets and info.data.get("tasks", ()) is None:
            raise ValueError("at least one dataset is required (or a 'tasks' section)")
        seen: set[str] = set()
        for ds in datasets:
            if ds.name in seen:
                raise ValueError(f"dataset name '{ds.name}' is used twice; names must be unique")
            seen.add(ds.name)
        return datasets

    @field_validator("loss")
    @classmethod
    def _loss_unless_tasks(cls, loss: LossConfig | None, info: ValidationInfo) -> LossConfig | None:
        if loss is None and info.data.get("tasks", ()) is None:
            raise ValueError("required field is missing")
        return loss

    @model_validator(mode="after")
    def _training_is_mapping(self) -> Recipe:
        if "output_dir" in self.training:
            raise ValueError("set output_dir at the top level of the recipe, not under 'training'")
        if "seed" in self.training:
            raise ValueError("set seed at the top level of the recipe, not under 'training'")
        return self


LossConfig.model_rebuild()

from embedtrain.adapters.config import TaskList  # noqa: E402  (builds on the classes above)

Recipe.model_rebuild()
