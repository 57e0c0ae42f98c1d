"""The one training runner: recipe -> prepared data -> model + trainer -> train -> final checkpoint -> eval.

Every recipe stage runs through :func:`run`. What differs per stage (which data it reads, which model and
trainer it builds, how the final model is saved) is a :class:`TrainingMode`; everything else is here, once:
checking the output folder and resume point, progress display, quick scores before and after, the atomic
save of ``<output_dir>/final`` with the recipe beside it, the barrier between processes, and the recipe's
``eval:`` section on the saved model. Adding a stage is one new module with a ``TrainingMode`` subclass,
registered in :data:`MODES`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from embedtrain.io.checkpoints import (
    FINAL_DIR,
    atomic_save,
    plan_output_dir,
    rotate_checkpoints,
    save_with_recipe,
    seal,
)
from embedtrain.mining.collective import sharding_engine
from embedtrain.models.inspect import model_shape
from embedtrain.models.resolve import recipe_model_path
from embedtrain.models.truncate import layer_indices
from embedtrain.schema import Recipe
from embedtrain.train.args import build_training_args
from embedtrain.train.distributed import share_gradient_buckets
from embedtrain.train.sharded import SHARDED_ENGINES, full_weights, gather_full_state_dict

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
    #: True when ``--resume`` found the run already finished and trained nothing.
    already_finished: bool = False


class SealCheckpoints(TrainerCallback):
    """Marks every ``checkpoint-N`` complete once everything in it is written, then rotates old ones.

    It runs after every other ``on_save`` (dynamic-mining state included), so a checkpoint is resumable only
    when the model, optimizer, scheduler, RNG, trainer and mining state are all on disk
    (:func:`embedtrain.io.checkpoints.seal`). The trainer's own rotation is switched off (it runs before the
    checkpoint is complete and sorts by mtime); this one keeps the newest ``keep`` complete checkpoints.
    """

    def __init__(self, keep: int | None) -> None:
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank has written its part of the checkpoint
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            seal(folder)
            best = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
            for path in rotate_checkpoints(args.output_dir, self.keep, protect=best):
                logger.debug("removed old checkpoint %s", path)
        return control


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
        #: The start model's own max_seq_length (what it is used at), set when the model is loaded.
        self.inference_length: int | None = None

    # -- without a model ----------------------------------------------------------------------------
    @property
    def args_class(self) -> type:
        return self.recipe.arguments_class()

    def prepare(self) -> None:
        """Resolve the start model (without loading it) and check the data; subclasses extend this."""
        self.model_path = recipe_model_path(self.recipe)
        self.model_shape = student_shape(self.recipe, model_shape(self.model_path))
        if self.recipe.model.decoder_options_set():
            from embedtrain.models.decoder import check_recipe_model

            check_recipe_model(self.recipe, self.model_shape)

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
        """Put the trained model into the state it is saved in (a ``model.lora`` adapter is merged unless
        ``merge: false``)."""
        if self.recipe.model.lora is not None:
            from embedtrain.models.lora import finalize_lora

            finalize_lora(trainer.model, self.recipe.model.lora)

    def save_final(self, trainer, folder: str) -> None:
        """Write the final model into ``folder`` (a fresh temporary folder, swapped in atomically)."""
        with self.as_saved(trainer.model):
            save_with_recipe(trainer.model, self.recipe, folder)
        if self.recipe.model.lora is not None:  # a kept adapter: what its base folder's config lacks
            from embedtrain.models.lora import write_adapter_load_kwargs

            write_adapter_load_kwargs(trainer.model, folder)

    def saved_length(self) -> int | None:
        """The max_seq_length the final model is saved with: ``model.saved_max_seq_length``, else the start
        model's own; the recipe's ``model.max_seq_length`` is the length it *trains* at."""
        return getattr(self.recipe.model, "saved_max_seq_length", None) or self.inference_length

    @contextlib.contextmanager
    def as_saved(self, model):
        """Within the block, ``model`` encodes at its saved length (for the final save and quick checks)."""
        length = self.saved_length()
        training = getattr(model, "max_seq_length", None)
        if length is None or training is None or length == training:
            yield model
            return
        model.max_seq_length = length
        try:
            yield model
        finally:
            model.max_seq_length = training

    def details(self, trainer) -> dict[str, Any]:
        return {}

    def metric_sources(self) -> list:
        """Objects whose ``step_metrics()`` / ``log_metrics()`` the run logs and plots, besides those found on
        the trainer's losses and callbacks (:mod:`embedtrain.train.observe`)."""
        return []

    def main_metrics(self) -> dict[str, str]:
        """Evaluator name -> its main metric key (what the curves plot and the card reports)."""
        return {}

    def record_extras(self) -> dict[str, Any]:
        """Extra entries of the run record (``embedtrain_run.json``), e.g. the merge with the start model."""
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


def record_run(mode: TrainingMode, trainer, collector, folder: str, before: dict[str, float],
               after: dict[str, float]) -> None:
    """Write the curves PNG and ``embedtrain_run.json`` beside the final model (a failure only warns)."""
    from embedtrain.train.observe import write_run_record

    mains = mode.main_metrics()
    evaluators = {}
    if before or after:
        evaluators = {"before": before, "after": after, "main_metrics": mains,
                      "before_points": {mains[n]: v / 100.0 for n, v in before.items() if n in mains}}
    rounds = [r for s in collector.sources if hasattr(s, "rounds") for r in s.rounds()]
    try:
        write_run_record(folder, recipe=mode.recipe, trainer=trainer, collector=collector,
                         prepared=getattr(mode, "prepared", None), mixture=getattr(mode, "mixture", None),
                         evaluators=evaluators, mining_rounds=rounds, main_metrics=list(mains.values()),
                         extras=mode.record_extras())
    except Exception as exc:  # the model is saved either way; the record is a convenience
        logger.warning("could not write the run record (curves, embedtrain_run.json): %s: %s",
                       type(exc).__name__, exc)


def run(recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
        callbacks: list[TrainerCallback] | None = None,
        progress: Callable[[], TrainerCallback] | None = None) -> TrainResult:
    """Train ``recipe`` and return where the model went.

    ``callbacks`` are extra ``transformers`` trainer callbacks; ``progress`` makes the callback that replaces
    transformers' tqdm bar (the CLI passes a rich progress display).
    """
    mode = prepare(recipe)
    args = mode.training_args()
    plan = plan_output_dir(recipe, resume, overwrite, max_steps=getattr(args, "max_steps", None),
                           num_train_epochs=getattr(args, "num_train_epochs", None))
    final_dir = Path(recipe.output_dir) / FINAL_DIR
    if plan.finished:
        logger.warning("--resume: the run in %s already finished (%s is complete, step %d); nothing to do. Pass "
                       "--overwrite to train it again.", recipe.output_dir, final_dir, plan.global_step)
        return TrainResult(Path(recipe.output_dir), final_dir, plan.global_step, resumed_from=plan.resume_from,
                           already_finished=True)
    resume_from = plan.resume_from
    keep, args.save_total_limit = args.save_total_limit, None  # rotation happens once a checkpoint is sealed
    trainer = mode.build_trainer(args, list(callbacks or []), resume_from)
    share_gradient_buckets(trainer)
    if progress is not None:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(progress())
    from embedtrain.train.observe import attach

    collector = attach(trainer, mode.metric_sources())
    trainer.add_callback(SealCheckpoints(keep))  # last: after every other callback has written its state

    model = trainer.model
    is_main = trainer.is_world_process_zero()
    before = {}
    if is_main and resume_from is None:
        with mode.as_saved(model):
            before = mode.quick_scores(model)
    for name, value in before.items():
        logger.info("before training: %s %.2f", name, value)

    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    from embedtrain.train.throughput import restore_model

    restore_model(trainer.model)  # computes as saved from here on: float32, plain sdpa attention
    mode.after_train(trainer)

    after: dict[str, float] = {}
    full_state = gather_full_state_dict(trainer)  # FSDP / ZeRO-3: a collective, on every rank
    if is_main or full_state is not None or sharding_engine() in SHARDED_ENGINES:
        # with sharded weights every forward is a collective: every rank runs the quick checks
        with mode.as_saved(trainer.model):
            scores = mode.quick_scores(trainer.model)
        if is_main:
            after = scores
    if is_main:

        def save(tmp: str) -> None:
            with full_weights(trainer.model, full_state):
                mode.save_final(trainer, tmp)
            record_run(mode, trainer, collector, tmp, before, after)

        atomic_save(save, final_dir)
        logger.info("saved final model to %s", final_dir)
        trained_at, saved_at = getattr(trainer.model, "max_seq_length", None), mode.saved_length()
        if saved_at is not None and trained_at is not None and saved_at != trained_at:
            logger.info("trained at max_seq_length %d; saved with %d (the length it is evaluated and used at; "
                        "set model.saved_max_seq_length to change it)", trained_at, saved_at)
        for name, value in after.items():
            logger.info("after training: %s %.2f", name, value)
    trainer.accelerator.wait_for_everyone()
    details = mode.details(trainer)
    if is_main:  # MTEB on the saved model, after the barrier
        from embedtrain.evaluation.after_training import evaluate_after_training, generalization_after_training

        if recipe.eval is not None:
            evaluate_after_training(recipe, final_dir)
        report = generalization_after_training(recipe, mode.model_path, final_dir)
        if report is not None:
            details["generalization"] = report
    return TrainResult(Path(recipe.output_dir), final_dir, trainer.state.global_step, before, after, resume_from,
                       is_main, details)
