"""Typed recipe schema: one recipe model per training stage, chosen by the recipe's ``stage``.

A recipe is the YAML file a user hands to ``embedtrain train``. Every section is a pydantic model with
``extra="forbid"``, so typos are caught before any model is loaded; :func:`load_recipe` turns pydantic's
errors into :class:`~embedtrain.errors.RecipeError` naming the file, line and field.

=================  ================================================================================
``stage``          what the recipe trains
=================  ================================================================================
``contrastive``    a sentence-transformer on ``datasets`` with ``loss`` (the default)
``tasks``          one LoRA adapter (and prompt) per task on a frozen base (``tasks:``)
``smae``           Starbucks masked-autoencoding pre-training on plain text
``distill``        a contrastive recipe plus teachers (``distill:``): embedding and score distillation
=================  ================================================================================

``stage`` may be left out: a recipe with a ``tasks:`` section is a ``tasks`` recipe, one with a ``distill:``
section a ``distill`` recipe, anything else is ``contrastive`` (the layout of recipes written before ``stage`` existed). Relative data paths are resolved
against the recipe file's folder, so a recipe works from any working directory; ``output_dir`` is
relative to the working directory, like every Hugging Face trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

from pydantic import Field, field_validator

from embedtrain.errors import RecipeError, suggest
from embedtrain.io.secrets import register_secret, secret_values
from embedtrain.schema.base import LocatedModel, read_config_data, validate_config
from embedtrain.schema.data import (
    NEGATIVE_FORMATS,
    DatasetConfig,
    EvaluatorConfig,
    PromptsConfig,
    TextDatasetConfig,
)
from embedtrain.schema.decoder import check_model_options
from embedtrain.schema.evaluation import EvalConfig, GeneralizationConfig
from embedtrain.schema.instructions import InstructionsConfig
from embedtrain.schema.distill import DistillConfig
from embedtrain.schema.loss import LossConfig
from embedtrain.schema.merge import MergeWithStartConfig
from embedtrain.schema.model import ModelConfig
from embedtrain.schema.smae import SmaeConfig
from embedtrain.schema.speed import SpeedConfig
from embedtrain.schema.tasks import TaskList

#: Keys that belong at the top level of a recipe, never under ``training:``.
TOP_LEVEL_ONLY = ("output_dir", "seed")


class RecipeBase(LocatedModel):
    """What every recipe has: a start model, training arguments, where the model goes, a seed, an eval."""

    stage: str
    model: ModelConfig = Field(default_factory=ModelConfig)
    #: Passed to the trainer's arguments class (``SentenceTransformerTrainingArguments`` or
    #: ``transformers.TrainingArguments``); names and values are checked before training.
    training: dict[str, Any] = Field(default_factory=dict)
    output_dir: str
    seed: int = 42
    #: MTEB evaluation of the final model after training (embedtrain.evaluation).
    eval: EvalConfig | None = None
    #: Before/after report on every available local task, trained-on vs not (embedtrain.evaluation.generalization).
    generalization: GeneralizationConfig = Field(default_factory=GeneralizationConfig)

    @field_validator("training")
    @classmethod
    def _no_top_level_keys(cls, training: dict[str, Any]) -> dict[str, Any]:
        for key in TOP_LEVEL_ONLY:
            if key in training:
                raise ValueError(f"set {key} at the top level of the recipe, not under 'training'")
        return training

    @field_validator("output_dir")
    @classmethod
    def _output_dir_named(cls, output_dir: str) -> str:
        if not output_dir.strip():
            raise ValueError("output_dir is empty; name the folder the run writes to")
        return output_dir

    @property
    def datasets_for_training(self) -> list:
        """Every dataset the recipe trains on (task recipes: all tasks' datasets, in order)."""
        return list(getattr(self, "datasets", []))

    @classmethod
    def arguments_class(cls) -> type:
        """The dataclass ``training:`` is passed to (sentence-transformers' training arguments by default)."""
        from sentence_transformers import SentenceTransformerTrainingArguments

        return SentenceTransformerTrainingArguments

    def check(self) -> None:
        """Rules across sections, checked once the recipe knows its file and lines (errors are located).

        Subclasses extend it; this part checks the names and values under ``training:`` and the model options.
        """
        from embedtrain.schema.training_args import check_training_section

        check_training_section(self, self.arguments_class())
        self.check_model_section()

    def check_model_section(self) -> None:
        """The ``model:`` options this stage can apply, and the rules between them (located errors)."""
        check_model_options(self, stage=self.stage)


class ContrastiveRecipe(RecipeBase):
    """Train a sentence-transformer on one or more datasets with a loss (``stage: contrastive``)."""

    stage: Literal["contrastive"] = "contrastive"
    datasets: list[DatasetConfig] = Field(default_factory=list, validate_default=True)
    loss: LossConfig
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    #: Task instructions (e5-mistral style) saved as checkpoint prompts, per MTEB task type and task name.
    instructions: InstructionsConfig | None = None
    #: Quick sentence-transformers evaluators run before and after training (``eval:`` runs MTEB).
    evaluators: list[EvaluatorConfig] = Field(default_factory=list)
    multi_dataset_sampler: Literal["proportional", "round_robin"] = "proportional"
    #: Temperature sampling over datasets: dataset i gives a share p_i ∝ n_i^(1/T) of the batches (T=1 is
    #: proportional, large T tends to uniform). Per-dataset ``weight`` values set the shares directly instead.
    sampling_temperature: float | None = Field(default=None, gt=0)
    #: Throughput settings (precision, bucketing...): how fast training computes, never what it learns.
    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    #: WiSE-FT after training: the saved model is a merge with the start model (embedtrain.soup.merge_start).
    merge_with_start: MergeWithStartConfig | None = None

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: list[DatasetConfig]) -> list[DatasetConfig]:
        if not datasets:
            raise ValueError("at least one dataset is required (or a 'tasks' section for per-task adapters)")
        seen: set[str] = set()
        for ds in datasets:
            if ds.name in seen:
                raise ValueError(f"dataset name '{ds.name}' is used twice; names must be unique")
            seen.add(ds.name)
        return datasets

    def check(self) -> None:
        super().check()
        for i, ds in enumerate(self.datasets):
            if ds.mining is not None and ds.mining.dynamic is not None and ds.format not in NEGATIVE_FORMATS:
                raise self.error(f"dynamic mining replaces hard negatives, but format '{ds.format}' has none; "
                                 f"use format {sorted(NEGATIVE_FORMATS)} (e.g. the output of `embedtrain mine`)",
                                 "datasets", i, "mining", "dynamic")
            if ds.instruction is not None and (ds.query_prompt is not None or ds.passage_prompt is not None):
                raise self.error("give either 'instruction' (formatted by instructions.template) or "
                                 "query_prompt/passage_prompt, not both", "datasets", i, "instruction")
        from embedtrain.schema.mixing import check_mixing

        check_mixing(self)
        if self.merge_with_start is not None:
            from embedtrain.schema.merge import check_merge_section

            check_merge_section(self)
        explicit = [k for k in ("bf16", "fp16") if str(self.training.get(k)).lower() in ("true", "1")]
        if explicit and self.speed.precision == "fp32":
            raise self.error(f"speed.precision is fp32 but training.{explicit[0]} is true; set one of them",
                             "speed", "precision")


class TaskRecipe(RecipeBase):
    """Per-task LoRA adapters on a frozen base, jina-embeddings-v3 style (``stage: tasks``).

    ``loss`` is the default loss of every task dataset that names none (nor its task).
    """

    stage: Literal["tasks"] = "tasks"
    tasks: TaskList
    loss: LossConfig | None = None
    #: Not used by a task recipe: accepted only to say where these sections belong instead.
    datasets: list[DatasetConfig] = Field(default_factory=list, exclude=True)
    evaluators: list[EvaluatorConfig] = Field(default_factory=list, exclude=True)

    def check_model_section(self) -> None:
        from embedtrain.schema.decoder import MODEL_OPTION_FIELDS

        check_model_options(self, stage="tasks", allowed=tuple(f for f in MODEL_OPTION_FIELDS if f != "lora"))

    def check(self) -> None:
        super().check()
        if self.datasets:
            raise self.error("a recipe with 'tasks' trains only the tasks' datasets; move these datasets under a "
                             "task (tasks[i].datasets)", "datasets")
        if self.evaluators:
            raise self.error("put evaluators under the task whose adapter they should use (tasks[i].evaluators)",
                             "evaluators")
        for i, task in enumerate(self.tasks):
            for j, ds in enumerate(task.datasets):
                if ds.loss is None and task.loss is None and self.loss is None:
                    raise self.error("no loss for this dataset: set 'loss' on the dataset, its task or the recipe",
                                     "tasks", i, "datasets", j)
                if ds.instruction is not None:
                    raise self.error("task datasets take their task's prompt (tasks[i].prompt), not an "
                                     "instruction", "tasks", i, "datasets", j, "instruction")
        from embedtrain.schema.mixing import check_mixing

        check_mixing(self)

    @property
    def datasets_for_training(self) -> list:
        return [ds for task in self.tasks for ds in task.datasets]


class SmaeRecipe(RecipeBase):
    """Starbucks masked-autoencoding pre-training on plain text (``stage: smae``)::

        stage: smae
        model: {name_or_path: all-MiniLM-L6-v2, max_seq_length: 128}
        datasets:
          - {name: sentences, path: corpus.jsonl, format: text}      # one text per row
        smae: {pairs: null, mlm_probability: 0.15}                      # null: default pairs
        training: {max_steps: 1000, per_device_train_batch_size: 32, learning_rate: 5.0e-5}
        output_dir: runs/smae
    """

    stage: Literal["smae"]
    datasets: list[TextDatasetConfig] = Field(min_length=1)
    smae: SmaeConfig = Field(default_factory=SmaeConfig)

    def check_model_section(self) -> None:
        check_model_options(self, stage="smae", allowed=())  # SMAE trains its own masked-LM head on the encoder

    def check(self) -> None:
        super().check()
        if self.model.keep_layers is not None:
            raise self.error("stage smae does not cut the model; save a shallower one first "
                             "(embedtrain export MODEL OUT --layers N) and start from it", "model", "keep_layers")

    @classmethod
    def arguments_class(cls) -> type:
        from transformers import TrainingArguments

        return TrainingArguments


class DistillRecipe(ContrastiveRecipe):
    """A contrastive recipe whose datasets may also learn from teachers (``stage: distill``)::

        stage: distill
        model: {name_or_path: all-MiniLM-L6-v2, keep_layers: 3}       # the student
        distill:
          teachers: [{name: minilm, model: all-MiniLM-L6-v2}]
        datasets:
          - {name: unlabeled, path: sentences.jsonl, format: text}
        loss: {name: embed_distill}
        output_dir: runs/distilled

    Teacher embeddings are pre-computed once before training and reused across runs; see
    :mod:`embedtrain.schema.distill` and docs/distillation.md.
    """

    stage: Literal["distill"] = "distill"  # type: ignore[assignment]
    distill: DistillConfig


#: Any recipe.
Recipe = Union[ContrastiveRecipe, TaskRecipe, SmaeRecipe, DistillRecipe]  # noqa: UP007 - a runtime alias
RECIPE_CLASSES: dict[str, type[RecipeBase]] = {
    "contrastive": ContrastiveRecipe,
    "tasks": TaskRecipe,
    "smae": SmaeRecipe,
    "distill": DistillRecipe,
}


def recipe_stage(data: dict[str, Any], *, path: str | Path | None = None, line: int | None = None,
                 origin: str | None = None) -> str:
    """The stage a recipe mapping declares (or implies, for recipes without ``stage``).

    ``path``/``line`` place an error about an unknown stage; ``origin`` is the ``--set`` argument that set it.
    """
    stage = data.get("stage")
    if stage is None:
        return "tasks" if "tasks" in data else "distill" if "distill" in data else "contrastive"
    if stage not in RECIPE_CLASSES:
        message = f"unknown stage {stage!r}." + suggest(str(stage), RECIPE_CLASSES) + f" Stages: {sorted(RECIPE_CLASSES)}"
        if origin is not None:
            raise RecipeError(message, field=f"stage (from --set '{origin}')")
        raise RecipeError(message, file=path, line=line, field="stage")
    return str(stage)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe of any stage; raise :class:`RecipeError` naming file, line and field.

    ``overrides`` are ``dotted.key=value`` strings applied on top of the file (``training.max_steps=10``).
    Only the schema is checked here; :func:`embedtrain.api.validate` also reads every data row and checks
    training arguments, losses and models, all before a model is loaded.
    """
    data, lines, overridden = read_config_data(path, overrides, what="a recipe")
    stage = recipe_stage(data, path=path, line=lines.get(("stage",)), origin=overridden.get(("stage",)))
    for secret in secret_values(data):  # scrubbed from every log line from now on
        register_secret(secret)
    recipe = validate_config(RECIPE_CLASSES[stage], data, path, lines, overridden)
    recipe.check()
    return recipe  # type: ignore[return-value]
