"""Starbucks masked-autoencoding (SMAE) pre-training: masked-LM on (layer, dim) sub-networks.

Before 2D-Matryoshka fine-tuning, SMAE teaches the backbone to be a good language model *at every
size it will be cut to*: each step, tokens are masked (``DataCollatorForLanguageModeling``) and for
each pair ``(L, D)`` the hidden states after layer ``L``, cut to their first ``D`` dims, predict the
masked tokens through the model's MLM head sliced to ``D`` dims
(:mod:`embedtrain.models.mlm_head`). The loss is the weighted mean of the per-pair cross-entropies.
The encoder runs once per step (all pairs read its hidden states), and vocabulary logits are only
computed at masked positions.

This is the MLM part of the paper's SMAE; its extra bottleneck decoder is not implemented.

The output, ``<output_dir>/final``, is a sentence-transformers checkpoint with the start model's
pooling/normalisation and the pre-trained encoder, ready to be ``model.name_or_path`` of a following
contrastive recipe (e.g. with the ``starbucks`` loss). The MLM head is kept in the ``checkpoint-N``
folders (used by ``--resume``) but not in ``final``.
"""

from __future__ import annotations

import json
import logging
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import (
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.modeling_outputs import MaskedLMOutput

from embedtrain.data import read_records, to_dataset
from embedtrain.errors import CheckpointError, DataError, RecipeError
from embedtrain.models.mlm_head import MLMHeadParts, mlm_head_parts, sliced_mlm_logits
from embedtrain.models.resolve import load_model, recipe_model_path
from embedtrain.models.subnetwork_pairs import default_pairs, validate_pairs
from embedtrain.training.checkpoints import FINAL_DIR, atomic_save, check_output_dir, save_with_recipe
from embedtrain.training.smae_recipe import SmaeRecipe

logger = logging.getLogger(__name__)

Pair = tuple[int, int]

#: Defaults under the SMAE recipe's ``training:`` (the recipe wins).
SMAE_TRAINING_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 32,
    "num_train_epochs": 1,
    "learning_rate": 5e-5,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 2,
    "report_to": "none",
}


@dataclass
class SmaeResult:
    """What an SMAE run produced."""

    output_dir: Path
    final_dir: Path
    global_step: int
    pairs: list[Pair]
    #: Mean MLM loss per pair over the run (on this process).
    pair_losses: dict[Pair, float] = field(default_factory=dict)
    resumed_from: Path | None = None
    is_main_process: bool = True


class SubnetworkMLMObjective:
    """The SMAE loss, installed as the ``forward`` of a ``*ForMaskedLM`` model.

    Replacing ``forward`` (rather than wrapping the model) keeps the model a ``PreTrainedModel``, so
    the HF ``Trainer`` saves, resumes and wraps it (DDP, mixed precision) as usual.
    """

    def __init__(self, mlm_model: torch.nn.Module, pairs: list[Pair], weights: list[float] | None = None) -> None:
        self.pairs = pairs
        self.weights = list(weights) if weights is not None else [1.0] * len(pairs)
        self.head: MLMHeadParts = mlm_head_parts(mlm_model)
        self.sums: dict[Pair, torch.Tensor | float] = {p: 0.0 for p in pairs}
        self.counts = 0
        self._checked = False

    def install(self, mlm_model: torch.nn.Module) -> None:
        objective = self

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None):
            return objective.loss(self, input_ids, attention_mask, token_type_ids, labels)

        mlm_model.forward = types.MethodType(forward, mlm_model)

    def loss(self, mlm_model, input_ids, attention_mask, token_type_ids, labels) -> MaskedLMOutput:
        base = getattr(mlm_model, mlm_model.base_model_prefix)
        inputs = {"input_ids": input_ids}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = base(**inputs, output_hidden_states=True, return_dict=True)
        hidden = out.hidden_states
        if not self._checked:
            if not torch.equal(hidden[-1], out.last_hidden_state):
                raise CheckpointError(f"{type(base).__name__} transforms its last hidden state, so layer outputs "
                                      "are not what a shorter model would produce; SMAE does not support it")
            self._checked = True
        if labels is None:
            return MaskedLMOutput(loss=None, hidden_states=hidden)
        selected = labels != -100
        target = labels[selected]
        if target.numel() == 0:  # nothing masked in this batch: a zero loss that still has a graph
            return MaskedLMOutput(loss=hidden[-1].sum() * 0.0)
        total_weight = sum(self.weights)
        loss = hidden[-1].new_zeros(())
        for (layer, dim), weight in zip(self.pairs, self.weights):
            logits = sliced_mlm_logits(self.head, hidden[layer][selected], dim)
            part = F.cross_entropy(logits.float(), target)
            self.sums[(layer, dim)] += part.detach()  # a tensor: no device sync per step
            loss = loss + weight * part / total_weight
        self.counts += 1
        return MaskedLMOutput(loss=loss)

    def mean_losses(self) -> dict[Pair, float]:
        return {p: float(s) / self.counts for p, s in self.sums.items()} if self.counts else {}


def hf_model_folder(st_path: Path) -> Path:
    """Folder holding the Hugging Face model of a sentence-transformers checkpoint."""
    modules = st_path / "modules.json"
    if modules.is_file():
        for entry in json.loads(modules.read_text(encoding="utf-8")):
            if entry.get("type", "").endswith("Transformer"):
                return st_path / entry.get("path", "")
    if (st_path / "config.json").is_file():
        return st_path
    raise CheckpointError("no Hugging Face model found (no modules.json Transformer entry, no config.json)",
                          file=st_path)


def load_text_data(recipe: SmaeRecipe) -> list[str]:
    """All texts of the recipe's datasets, validated (file/line errors for bad rows)."""
    texts: list[str] = []
    for i, cfg in enumerate(recipe.datasets):
        path = recipe.resolve_path(cfg.path)
        if not path.exists():
            raise DataError(f"data file not found: {path}", file=recipe.source,
                            line=recipe.line_of("datasets", i, "path"), field=f"datasets[{i}].path")
        records = read_records(path, cfg.file_type, split=cfg.split, limit=cfg.max_samples)
        texts.extend(to_dataset(records, "text", cfg.columns)["text"])
    return texts


def check_pairs(recipe: SmaeRecipe, num_layers: int, width: int) -> list[Pair]:
    """The recipe's pairs (or the scaled default) checked against the model."""
    cfg = recipe.smae
    try:
        pairs = validate_pairs(cfg.pairs, num_layers, width) if cfg.pairs is not None \
            else default_pairs(num_layers, width)
    except ValueError as exc:
        raise RecipeError(str(exc), file=recipe.source, line=recipe.line_of("smae", "pairs"),
                          field="smae.pairs") from None
    if cfg.weights is not None and (len(cfg.weights) != len(pairs) or any(w < 0 for w in cfg.weights)):
        raise RecipeError(f"weights must be {len(pairs)} values >= 0 (one per pair)", file=recipe.source,
                          line=recipe.line_of("smae", "weights"), field="smae.weights")
    return pairs


def build_mlm_model(st_path: Path) -> torch.nn.Module:
    """``AutoModelForMaskedLM`` from the checkpoint; a head missing from it starts random (logged)."""
    folder = hf_model_folder(st_path)
    mlm, info = AutoModelForMaskedLM.from_pretrained(str(folder), local_files_only=True,
                                                     output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if "embeddings" not in k]
    if missing:
        logger.warning("%s has no trained MLM head (%d head weights start random, e.g. %s); they are "
                       "trained from scratch with the encoder", folder, len(missing), sorted(missing)[0])
    return mlm


def train_smae(recipe: SmaeRecipe, *, resume: bool = False, overwrite: bool = False,
               callbacks: list[TrainerCallback] | None = None) -> SmaeResult:
    """Run the SMAE stage described by ``recipe``; returns where the pre-trained model went."""
    texts = load_text_data(recipe)
    resume_from = check_output_dir(recipe, resume, overwrite)
    st_path = recipe_model_path(recipe)
    st_model = load_model(st_path, device="cpu", max_seq_length=recipe.model.max_seq_length)
    mlm = build_mlm_model(st_path)
    config = mlm.config
    pairs = check_pairs(recipe, config.num_hidden_layers, config.hidden_size)
    objective = SubnetworkMLMObjective(mlm, pairs, recipe.smae.weights)
    objective.install(mlm)
    logger.info("SMAE on %d texts, pairs %s", len(texts), " ".join(f"({layer},{dim})" for layer, dim in pairs))

    tokenizer = st_model.tokenizer
    max_length = st_model.max_seq_length
    dataset = Dataset.from_dict({"text": texts}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True, remove_columns=["text"])
    kwargs = {**SMAE_TRAINING_DEFAULTS, **recipe.training}
    try:
        args = TrainingArguments(output_dir=recipe.output_dir, seed=recipe.seed, **kwargs)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"invalid training arguments: {exc}", file=recipe.source,
                          line=recipe.line_of("training"), field="training") from None
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=recipe.smae.mlm_probability)
    trainer = Trainer(model=mlm, args=args, train_dataset=dataset, data_collator=collator,
                      processing_class=tokenizer, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    final_dir = Path(recipe.output_dir) / FINAL_DIR
    is_main = trainer.is_world_process_zero()
    if is_main:
        copy_encoder_weights(mlm, st_model)
        atomic_save(lambda tmp: save_with_recipe(st_model, recipe, tmp), final_dir)
        logger.info("saved SMAE-pre-trained model to %s", final_dir)
    trainer.accelerator.wait_for_everyone()
    losses = objective.mean_losses()
    for (layer, dim), value in losses.items():
        logger.info("mean MLM loss at (%d layers, %d dims): %.3f", layer, dim, value)
    return SmaeResult(Path(recipe.output_dir), final_dir, trainer.state.global_step, pairs, losses, resume_from,
                      is_main)


def copy_encoder_weights(mlm: torch.nn.Module, st_model) -> None:
    """Put the trained encoder of ``mlm`` into the sentence-transformer's Hugging Face model."""
    encoder = getattr(mlm, mlm.base_model_prefix)
    target = st_model[0].auto_model
    result = target.load_state_dict(encoder.state_dict(), strict=False)
    unexpected_missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if unexpected_missing or result.unexpected_keys:
        raise CheckpointError(f"encoder weights do not match the sentence-transformer's model: missing "
                              f"{unexpected_missing[:3]}, unexpected {result.unexpected_keys[:3]}")


__all__ = ["SmaeResult", "SubnetworkMLMObjective", "train_smae"]
