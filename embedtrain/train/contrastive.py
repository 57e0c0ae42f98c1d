"""``stage: contrastive``: a sentence-transformer trained on one or more datasets with losses from the registry.

sentence-transformers' ``SentenceTransformerTrainer`` does the training: duplicate-free batches, one dataset
per batch (``multi_dataset_sampler``), per-column prompts. Datasets with ``mining.dynamic`` read their
negatives through a re-minable table (:mod:`embedtrain.mining`). The final checkpoint stores the recipe's
prompts in its config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from embedtrain.evaluation.evaluators import (
    build_evaluators,
    check_best_metric,
    combined,
    main_metric,
    model_similarity,
    run_evaluators,
)
from embedtrain.losses import build_loss
from embedtrain.mining.attach import attach_dynamic_mining, build_miners, record_trained_rows
from embedtrain.models.checkpointing import any_checkpointing
from embedtrain.models.resolve import load_model
from embedtrain.schema import ContrastiveRecipe
from embedtrain.train.args import ST_TRAINING_DEFAULTS
from embedtrain.train.card import preset_widget_examples
from embedtrain.train.merge import check_merge_engine, merge_after_training, plan_merge
from embedtrain.train.mixing import mixing_extras
from embedtrain.train.prepare import PreparedDataset, checkpoint_prompts, prepare_contrastive, row_count
from embedtrain.train.runner import TrainingMode
from embedtrain.train.sharded import sharded_trainer
from embedtrain.train.throughput import (
    describe_speed,
    precision_arguments,
    prepare_loss,
    prepare_model,
    run_precision,
)

logger = logging.getLogger(__name__)


def load_start_model(recipe, mode: TrainingMode | None = None):
    """The recipe's starting model (local folder or packaged name; errors point at ``model.name_or_path``), set to
    the recipe's training length; ``mode.inference_length`` gets the model's own length (what it is saved with).

    With model options set (pooling, bidirectional, dtype, LoRA...: :class:`~embedtrain.schema.ModelOptions`)
    the model is built by :func:`embedtrain.models.decoder.build_decoder_embedder`; otherwise it loads as saved.
    The recipe's seed is set first, so freshly initialised weights (LoRA matrices, a latent-attention pooling,
    task adapters) are the same in every run of the recipe; the trainer seeds itself only after the model exists.

    ``model.keep_layers`` cuts the model to a shallower student (distillation) before training.
    """
    from transformers import set_seed

    from embedtrain.models.resolve import recipe_model_path
    from embedtrain.models.truncate import select_layers

    set_seed(recipe.seed)
    path = recipe_model_path(recipe)
    if recipe.model.decoder_options_set():
        from embedtrain.models.decoder import build_decoder_embedder

        model = build_decoder_embedder(path, recipe.model.loader_options(), device=recipe.model.device,
                                       trust_remote_code=recipe.model.trust_remote_code)
    else:
        model = load_model(path, device=recipe.model.device, trust_remote_code=recipe.model.trust_remote_code)
    if mode is not None:
        mode.inference_length = model.max_seq_length
    if recipe.model.max_seq_length is not None:
        model.max_seq_length = recipe.model.max_seq_length
    if recipe.model.keep_layers is not None:
        select_layers(model, recipe.model.keep_layers)
        logger.info("student: layers %s of %s", recipe.model.keep_layers, recipe.model.name_or_path)
    return model


class ContrastiveMode(TrainingMode):
    """Train a sentence-transformer on ``datasets`` with their losses."""

    stage = "contrastive"
    defaults = ST_TRAINING_DEFAULTS
    recipe: ContrastiveRecipe

    def prepare(self) -> None:
        super().prepare()
        self.prepared: list[PreparedDataset] = prepare_contrastive(self.recipe, self.model_shape)
        self.miners = build_miners(self.recipe, self.prepared)
        self.evaluators = build_evaluators(self.recipe)
        self.similarity = model_similarity(self.model_path)
        check_best_metric(self.recipe, self.recipe.evaluators, self.similarity)
        self.mixing, self.mixture = mixing_extras(self.recipe, self.prepared, ST_TRAINING_DEFAULTS["batch_sampler"])
        self.merge_plan = plan_merge(self.recipe)
        self.merge_selection = None

    def training_extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {"multi_dataset_batch_sampler": self.recipe.multi_dataset_sampler, **self.mixing}
        prompts = {p.config.name: p.prompts for p in self.prepared if p.prompts}
        if prompts and self.streamed:  # one streamed dataset is passed on its own: prompts by column
            prompts = self.prepared[0].prompts
        if prompts:
            extras["prompts"] = prompts
        if self.recipe.evaluators:
            extras["eval_strategy"] = "no"  # before and after only, unless training.eval_strategy says otherwise
            if self.recipe.training.get("load_best_model_at_end"):
                # the trainer would look for eval_loss, which evaluators do not report
                extras["metric_for_best_model"] = main_metric(self.recipe.evaluators[0], self.similarity)
        extras.update(precision_arguments(self.recipe))
        return extras

    def metric_sources(self) -> list:
        return [self.mixture] if self.mixture is not None else []

    def main_metrics(self) -> dict[str, str]:
        return {cfg.name: main_metric(cfg, self.similarity) for cfg in self.recipe.evaluators}

    @property
    def streamed(self) -> bool:
        """The recipe's (single) dataset is read while training (``streaming: true``)."""
        return any(getattr(p.config, "streaming", False) for p in self.prepared)

    def build_trainer(self, args, callbacks: list[TrainerCallback], resume_from: Path | None):
        from sentence_transformers import SentenceTransformerTrainer

        check_merge_engine(self.recipe)
        model = load_start_model(self.recipe, self)
        model.prompts = {**(model.prompts or {}), **checkpoint_prompts(self.recipe)}
        # before mining wraps the forward: it records merged outputs
        prepare_model(model, self.recipe.speed,
                      gradient_checkpointing=bool(args.gradient_checkpointing) or any_checkpointing(model))
        train_datasets = {p.config.name: p.dataset for p in self.prepared}
        losses = {p.config.name: build_loss(p.loss, model, p.loss_context) for p in self.prepared}
        mining = attach_dynamic_mining(self.miners, train_datasets, resume_from, model, losses,
                                       run_precision(self.recipe))
        for loss in losses.values():
            prepare_loss(loss, self.recipe.speed)
        logger.info("training %s on %s", self.recipe.model.name_or_path,
                    ", ".join(f"{n} ({row_count(d)})" for n, d in train_datasets.items()))
        if self.streamed:  # sentence-transformers takes an IterableDataset only on its own, not in a dict
            (train_datasets,), (losses,) = train_datasets.values(), losses.values()
        preset_widget_examples(model, train_datasets)
        trainer = sharded_trainer(SentenceTransformerTrainer)(
            model=model, args=args, train_dataset=train_datasets, loss=losses,
            evaluator=combined(self.evaluators) if args.eval_strategy != "no" else None,
            callbacks=[*callbacks, *mining])
        record_trained_rows(trainer, mining)
        return trainer

    def quick_scores(self, model) -> dict[str, float]:
        return run_evaluators(self.evaluators, model) if self.evaluators else {}

    def after_train(self, trainer) -> None:
        """Merge a ``model.lora`` adapter; then, with ``merge_with_start``, merge the weights with the start model's
        (main process only: the other processes save nothing)."""
        super().after_train(trainer)
        if self.merge_plan is not None and trainer.is_world_process_zero():
            with self.as_saved(trainer.model):  # dev and agreement at the length the model is saved with
                self.merge_selection = merge_after_training(self.recipe, self.merge_plan, trainer.model,
                                                            load_start_model(self.recipe))

    def details(self, trainer) -> dict[str, Any]:
        return {"merge_with_start": self.merge_selection} if self.merge_selection is not None else {}

    def record_extras(self) -> dict[str, Any]:
        if self.merge_selection is None:
            return {}
        return {"merge_with_start": {**self.merge_selection.to_json(), "table": self.merge_selection.table()}}

    def describe(self) -> list[str]:
        lines = [*(f"{p.config.name}: {row_count(p.dataset)}, columns {p.dataset.column_names}, loss {p.loss.name}"
                   for p in self.prepared), describe_speed(self.recipe)]
        config = self.recipe.merge_with_start
        if config is not None:
            lines.append(f"merge_with_start: alpha {config.alpha}"
                         + (f" from {sorted(config.grid)} on {config.dev}" if config.alpha == "auto" else "")
                         + f", {len(self.merge_plan.sentences)} general sentences")
        return lines
