"""Recipe -> SentenceTransformerTrainer -> checkpoint.

:func:`train` is the whole training job: validate data and losses, load the model, build the
trainer (duplicate-free batches, one dataset per batch, per-column prompts), optionally resume,
train, and write ``<output_dir>/final`` atomically with the prompts in its config and the recipe
beside it. STS evaluators from the recipe run before and after training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from embedtrain.config.recipe import Recipe
from embedtrain.errors import RecipeError
from embedtrain.losses import build_loss
from embedtrain.mining.attach import attach_dynamic_mining
from embedtrain.models.resolve import load_model, recipe_model_path
from embedtrain.training.checkpoints import FINAL_DIR, atomic_save, check_output_dir, save_with_recipe
from embedtrain.training.progress import RichProgressCallback
from embedtrain.training.prepare import PreparedDataset, checkpoint_prompts, prepare_data
from embedtrain.training.sts_check import build_sts_evaluators, combined, run_sts

logger = logging.getLogger(__name__)

#: Defaults applied under the recipe's ``training:`` section (the recipe wins).
TRAINING_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 32,
    "num_train_epochs": 1,
    "learning_rate": 2e-5,
    "warmup_ratio": 0.1,
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 3,
    "report_to": "none",
    "batch_sampler": "no_duplicates",
    "dataloader_drop_last": False,
}


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


def build_training_args(recipe: Recipe, prompts: dict[str, dict[str, str]]) -> SentenceTransformerTrainingArguments:
    """Training arguments from defaults + the recipe's ``training:`` section."""
    kwargs = {**TRAINING_DEFAULTS, **recipe.training}
    kwargs.setdefault("multi_dataset_batch_sampler", recipe.multi_dataset_sampler)
    if prompts and "prompts" not in recipe.training:
        kwargs["prompts"] = prompts
    if recipe.evaluators and "eval_strategy" not in recipe.training:
        kwargs["eval_strategy"] = "no"
    if world_size() > 1 and "use_cpu" not in recipe.training and not _has_accelerator():
        # Under torchrun/accelerate without GPUs the trainer must be told to use gloo on the CPU,
        # otherwise every process trains alone on the whole dataset.
        kwargs["use_cpu"] = True
    try:
        return SentenceTransformerTrainingArguments(output_dir=recipe.output_dir, seed=recipe.seed, **kwargs)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"invalid training arguments: {exc}", file=recipe.source,
                          line=recipe.line_of("training"), field="training") from None


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
          callbacks: list[TrainerCallback] | None = None, rich_progress: bool = False) -> TrainResult:
    """Run the training job described by ``recipe`` and return where the model went.

    ``callbacks`` are extra ``transformers`` trainer callbacks; ``rich_progress`` swaps the tqdm bar for
    :class:`~embedtrain.training.progress.RichProgressCallback` (the CLI does this).
    """
    if recipe.tasks is not None:  # per-task LoRA adapters: a trainer of their own
        from embedtrain.adapters.training import train_tasks

        return train_tasks(recipe, resume=resume, overwrite=overwrite, callbacks=callbacks, rich_progress=rich_progress)
    prepared = prepare_data(recipe)
    resume_from = check_output_dir(recipe, resume, overwrite)
    evaluators = build_sts_evaluators(recipe)
    model = load_start_model(recipe)
    model.prompts = {**(model.prompts or {}), **checkpoint_prompts(recipe)}

    train_datasets = {p.config.name: p.dataset for p in prepared}
    # datasets with mining.dynamic read their negatives through a re-minable table (embedtrain.mining)
    callbacks = [*(callbacks or []), *attach_dynamic_mining(recipe, prepared, train_datasets, resume_from)]
    losses = {p.config.name: build_loss(p.loss, model, p.loss_context) for p in prepared}
    prompts = {p.config.name: p.prompts for p in prepared if p.prompts}
    args = build_training_args(recipe, prompts)
    logger.info("training %s on %s", recipe.model.name_or_path,
                ", ".join(f"{n} ({len(d)} rows)" for n, d in train_datasets.items()))

    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_datasets, loss=losses,
        evaluator=combined(evaluators) if args.eval_strategy != "no" else None,
        callbacks=callbacks,
    )
    return run_training(recipe, trainer, resume_from=resume_from, rich_progress=rich_progress,
                        score=(lambda m: run_sts(evaluators, m)) if evaluators else None)


def load_start_model(recipe: Recipe):
    """The recipe's starting model (local folder or packaged name; errors point at ``model.name_or_path``)."""
    model_path = recipe_model_path(recipe)
    return load_model(model_path, device=recipe.model.device, max_seq_length=recipe.model.max_seq_length)


def run_training(recipe: Recipe, trainer: SentenceTransformerTrainer, *, resume_from: Path | None,
                 rich_progress: bool = False, score: Callable[[Any], dict[str, float]] | None = None,
                 after_train: Callable[[], None] | None = None) -> TrainResult:
    """The part every trainer of a recipe shares, once ``trainer`` is built.

    Optional rich progress; ``score(model)`` (quick STS checks) before training on a fresh run and after it;
    train (resuming from ``resume_from``); ``after_train()`` to put the model in its saving state; the
    final model written atomically to ``<output_dir>/final`` with the recipe beside it (main process only);
    then, after all processes are done, the recipe's MTEB ``eval:`` section on the saved model.
    """
    model = trainer.model
    if rich_progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(RichProgressCallback())
    is_main = trainer.is_world_process_zero()
    before = score(model) if score is not None and is_main and resume_from is None else {}
    for name, value in before.items():
        logger.info("before training: %s cosine Spearman %.2f", name, value)

    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if after_train is not None:
        after_train()

    final_dir = Path(recipe.output_dir) / FINAL_DIR
    after: dict[str, float] = {}
    if is_main:
        atomic_save(lambda tmp: save_with_recipe(model, recipe, tmp), final_dir)
        logger.info("saved final model to %s", final_dir)
        after = score(model) if score is not None else {}
        for name, value in after.items():
            logger.info("after training: %s cosine Spearman %.2f", name, value)
    trainer.accelerator.wait_for_everyone()
    if is_main and recipe.eval is not None:  # MTEB on the saved model (embedtrain.evaluation), after the barrier
        from embedtrain.evaluation import evaluate_after_training

        evaluate_after_training(recipe, final_dir)
    return TrainResult(Path(recipe.output_dir), final_dir, trainer.state.global_step, before, after, resume_from,
                       is_main)


def world_size() -> int:
    """Number of processes in this launch (1 outside ``accelerate launch`` / ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


__all__ = ["PreparedDataset", "TrainResult", "build_training_args", "load_start_model", "run_training", "train"]
