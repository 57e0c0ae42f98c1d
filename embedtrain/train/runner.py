"""The one training runner: recipe -> prepared data -> model + trainer -> train -> final checkpoint -> eval.

Every recipe stage runs through :func:`run`. What differs per stage (which data it reads, which model and
trainer it builds, how the final model is saved) is a :class:`TrainingMode`; everything else is here, once:
checking the output folder and resume point, progress display, quick scores before and after, the atomic
save of ``<output_dir>/final`` with the recipe beside it, the barrier between processes, and the recipe's
``eval:`` section on the saved model. Adding a stage is one new module with a ``TrainingMode`` subclass,
registered in :data:`MODES`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from embedtrain.io.checkpoints import FINAL_DIR, atomic_save, check_output_dir, save_with_recipe
from embedtrain.models.inspect import model_shape
from embedtrain.models.resolve import recipe_model_path
from embedtrain.models.truncate import layer_indices
from embedtrain.schema import Recipe
from embedtrain.train.args import build_training_args

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    final_dir: Path
    global_step: int
    scores_before: dict[str, float] = field(default_factory=dict)
    scores_after: dict[str, float] = field(default_factory=dict)
    resumed_from: Path | None = None
    #: False on the non-zero ranks of a multi-process launch (they save and report nothing).
    is_main_process: bool = True
    #: Stage-specific figures (e.g. SMAE's mean loss per (layers, dims) pair).
    details: dict[str, Any] = field(default_factory=dict)


class TrainingMode:
    """How one recipe stage trains; :func:`run` does everything the stages share.

    A mode is built for one recipe. :meth:`prepare` reads and checks everything without loading a model (it is
    all ``embedtrain validate`` runs); :meth:`build_trainer` loads the model and returns a Hugging Face
    ``Trainer``; the other hooks have sensible defaults.
    """

    #: The recipe ``stage`` this mode trains.
    stage: ClassVar[str]
    #: Differences from :data:`embedtrain.train.args.TRAINING_DEFAULTS` for this stage.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.model_path: Path | None = None
        self.model_shape: tuple[int, int] | None = None

    # -- without a model ----------------------------------------------------------------------------
    @property
    def args_class(self) -> type:
        return self.recipe.arguments_class()

    def prepare(self) -> None:
        """Resolve the start model (without loading it) and check the data; subclasses extend this."""
        self.model_path = recipe_model_path(self.recipe)
        self.model_shape = student_shape(self.recipe, model_shape(self.model_path))

    def training_extras(self) -> dict[str, Any]:
        """Argument values derived from the recipe (prompts, samplers); the recipe's own ``training:`` wins."""
        return {}

    def training_args(self):
        return build_training_args(self.recipe, self.args_class, self.defaults, self.training_extras())

    def describe(self) -> list[str]:
        """One line per prepared dataset, for ``embedtrain validate``."""
        return []

    # -- with a model ---------------------------------------------------------------------------------
    def build_trainer(self, args, callbacks: list[TrainerCallback], resume_from: Path | None):
        raise NotImplementedError

    def quick_scores(self, model) -> dict[str, float]:
        """Quick checks (the recipe's ``evaluators:``) run before and after training; {} when there are none."""
        return {}

    def after_train(self, trainer) -> None:
        """Put the trained model into the state it is saved in."""

    def save_final(self, trainer, folder: str) -> None:
        """Write the final model into ``folder`` (a fresh temporary folder, swapped in atomically)."""
        save_with_recipe(trainer.model, self.recipe, folder)

    def details(self, trainer) -> dict[str, Any]:
        return {}


def student_shape(recipe: Recipe, shape: tuple[int, int] | None) -> tuple[int, int] | None:
    """The start model's ``(layers, dim)`` after the recipe's ``model.keep_layers`` (checked against its depth)."""
    keep = recipe.model.keep_layers
    if keep is None or shape is None:
        return shape
    try:
        return len(layer_indices(keep, shape[0])), shape[1]
    except ValueError as exc:
        raise recipe.error(str(exc), "model", "keep_layers") from None


#: stage -> "module:Class" of its mode (imported on first use, so validating a recipe loads only its stage).
MODES: dict[str, str] = {
    "contrastive": "embedtrain.train.contrastive:ContrastiveMode",
    "tasks": "embedtrain.train.tasks:TaskMode",
    "smae": "embedtrain.train.smae:SmaeMode",
    "distill": "embedtrain.train.distill:DistillMode",
}


def mode_for(recipe: Recipe) -> TrainingMode:
    """The :class:`TrainingMode` of the recipe's stage."""
    module, _, name = MODES[recipe.stage].partition(":")
    return getattr(importlib.import_module(module), name)(recipe)


def prepare(recipe: Recipe) -> TrainingMode:
    """Everything ``train`` checks before loading a model: data, losses, training arguments, eval section."""
    mode = mode_for(recipe)
    mode.prepare()
    mode.training_args()
    if recipe.eval is not None:
        from embedtrain.evaluation.after_training import check_eval_section

        check_eval_section(recipe)
    return mode


def run(recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
        callbacks: list[TrainerCallback] | None = None,
        progress: Callable[[], TrainerCallback] | None = None) -> TrainResult:
    """Train ``recipe`` and return where the model went.

    ``callbacks`` are extra ``transformers`` trainer callbacks; ``progress`` makes the callback that replaces
    transformers' tqdm bar (the CLI passes a rich progress display).
    """
    mode = prepare(recipe)
    args = mode.training_args()
    resume_from = check_output_dir(recipe, resume, overwrite)
    trainer = mode.build_trainer(args, list(callbacks or []), resume_from)
    if progress is not None:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(progress())

    model = trainer.model
    is_main = trainer.is_world_process_zero()
    before = mode.quick_scores(model) if is_main and resume_from is None else {}
    for name, value in before.items():
        logger.info("before training: %s %.2f", name, value)

    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    mode.after_train(trainer)

    final_dir = Path(recipe.output_dir) / FINAL_DIR
    after: dict[str, float] = {}
    if is_main:
        atomic_save(lambda tmp: mode.save_final(trainer, tmp), final_dir)
        logger.info("saved final model to %s", final_dir)
        after = mode.quick_scores(trainer.model)
        for name, value in after.items():
            logger.info("after training: %s %.2f", name, value)
    trainer.accelerator.wait_for_everyone()
    if is_main and recipe.eval is not None:  # MTEB on the saved model, after the barrier
        from embedtrain.evaluation.after_training import evaluate_after_training

        evaluate_after_training(recipe, final_dir)
    return TrainResult(Path(recipe.output_dir), final_dir, trainer.state.global_step, before, after, resume_from,
                       is_main, mode.details(trainer))
