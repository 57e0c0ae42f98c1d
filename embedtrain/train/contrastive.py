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

from embedtrain.evaluation.evaluators import build_sts_evaluators, combined, run_sts
from embedtrain.losses import build_loss
from embedtrain.mining.attach import attach_dynamic_mining, build_miners
from embedtrain.models.resolve import load_model
from embedtrain.schema import ContrastiveRecipe
from embedtrain.train.args import ST_TRAINING_DEFAULTS
from embedtrain.train.prepare import PreparedDataset, checkpoint_prompts, prepare_contrastive
from embedtrain.train.runner import TrainingMode

logger = logging.getLogger(__name__)


def load_start_model(recipe):
    """The recipe's starting model (local folder or packaged name; errors point at ``model.name_or_path``),
    cut to ``model.keep_layers`` when the recipe trains a shallower student."""
    from embedtrain.models.resolve import recipe_model_path
    from embedtrain.models.truncate import select_layers

    model = load_model(recipe_model_path(recipe), device=recipe.model.device,
                       max_seq_length=recipe.model.max_seq_length, trust_remote_code=recipe.model.trust_remote_code)
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
        self.evaluators = build_sts_evaluators(self.recipe)

    def training_extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {"multi_dataset_batch_sampler": self.recipe.multi_dataset_sampler}
        prompts = {p.config.name: p.prompts for p in self.prepared if p.prompts}
        if prompts:
            extras["prompts"] = prompts
        if self.recipe.evaluators:
            extras["eval_strategy"] = "no"
        return extras

    def describe(self) -> list[str]:
        return [f"{p.config.name}: {len(p.dataset)} rows, columns {p.dataset.column_names}, loss {p.loss.name}"
                for p in self.prepared]

    def build_trainer(self, args, callbacks: list[TrainerCallback], resume_from: Path | None):
        from sentence_transformers import SentenceTransformerTrainer

        model = load_start_model(self.recipe)
        model.prompts = {**(model.prompts or {}), **checkpoint_prompts(self.recipe)}
        train_datasets = {p.config.name: p.dataset for p in self.prepared}
        callbacks = [*callbacks, *attach_dynamic_mining(self.miners, train_datasets, resume_from)]
        losses = {p.config.name: build_loss(p.loss, model, p.loss_context) for p in self.prepared}
        logger.info("training %s on %s", self.recipe.model.name_or_path,
                    ", ".join(f"{n} ({len(d)} rows)" for n, d in train_datasets.items()))
        return SentenceTransformerTrainer(
            model=model, args=args, train_dataset=train_datasets, loss=losses,
            evaluator=combined(self.evaluators) if args.eval_strategy != "no" else None, callbacks=callbacks)

    def quick_scores(self, model) -> dict[str, float]:
        return run_sts(self.evaluators, model) if self.evaluators else {}
