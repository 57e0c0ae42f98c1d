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
from embedtrain.mining.attach import attach_dynamic_mining, build_miners, record_trained_rows
from embedtrain.models.resolve import load_model
from embedtrain.schema import ContrastiveRecipe
from embedtrain.train.args import ST_TRAINING_DEFAULTS
from embedtrain.train.prepare import PreparedDataset, checkpoint_prompts, prepare_contrastive
from embedtrain.train.runner import TrainingMode

logger = logging.getLogger(__name__)


def load_start_model(recipe, mode: TrainingMode | None = None):
    """The recipe's starting model (local folder or packaged name; errors point at ``model.name_or_path``), set to
    the recipe's training length; ``mode.inference_length`` gets the model's own length (what it is saved with).

    With model options set (pooling, bidirectional, dtype, LoRA...: :class:`~embedtrain.schema.ModelOptions`)
    the model is built by :func:`embedtrain.models.decoder.build_decoder_embedder`; otherwise it loads as saved.
    The recipe's seed is set first, so freshly initialised weights (LoRA matrices, a latent-attention pooling,
    task adapters) are the same in every run of the recipe; the trainer seeds itself only after the model exists.
    """
    from transformers import set_seed

    from embedtrain.models.resolve import recipe_model_path

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

        model = load_start_model(self.recipe, self)
        model.prompts = {**(model.prompts or {}), **checkpoint_prompts(self.recipe)}
        train_datasets = {p.config.name: p.dataset for p in self.prepared}
        mining = attach_dynamic_mining(self.miners, train_datasets, resume_from)
        losses = {p.config.name: build_loss(p.loss, model, p.loss_context) for p in self.prepared}
        logger.info("training %s on %s", self.recipe.model.name_or_path,
                    ", ".join(f"{n} ({len(d)} rows)" for n, d in train_datasets.items()))
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=train_datasets, loss=losses,
            evaluator=combined(self.evaluators) if args.eval_strategy != "no" else None,
            callbacks=[*callbacks, *mining])
        record_trained_rows(trainer, mining)
        return trainer

    def quick_scores(self, model) -> dict[str, float]:
        return run_sts(self.evaluators, model) if self.evaluators else {}
