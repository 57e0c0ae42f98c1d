"""Starbucks masked-autoencoding (SMAE) pre-training: masked-LM on (layer, dim) sub-networks.

Before 2D-Matryoshka fine-tuning, SMAE teaches the backbone to be a good language model *at every
size it will be cut to*: each step, tokens are masked (``DataCollatorForLanguageModeling``) and for
each pair ``(L, D)`` the hidden states after layer ``L``, cut to their first ``D`` dims, predict the
masked tokens through the model's MLM head sliced to ``D`` dims
(:mod:`embedtrain.models.mlm_head`). The loss is the weighted mean of the per-pair cross-entropies.
The encoder runs once per step (all pairs read its hidden states), and vocabulary logits are only
computed at masked positions.

The output, ``<output_dir>/final``, is a sentence-transformers checkpoint with the start model's
pooling/normalisation and the pre-trained encoder, ready to be ``model.name_or_path`` of a following
contrastive recipe (e.g. with the ``starbucks`` loss). The MLM head is kept in the ``checkpoint-N``
folders (used by ``--resume``) but not in ``final``.
"""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, Trainer
from transformers.modeling_outputs import MaskedLMOutput

from embedtrain.errors import CheckpointError, RecipeError
from embedtrain.io.checkpoints import save_with_recipe
from embedtrain.models.mlm_head import MLMHeadParts, mlm_head_parts, sliced_mlm_logits
from embedtrain.models.resolve import load_model
from embedtrain.models.subnetworks import Pair, default_pairs, validate_pairs
from embedtrain.schema import SmaeRecipe
from embedtrain.train.prepare import load_dataset
from embedtrain.train.runner import TrainingMode

logger = logging.getLogger(__name__)


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
        texts.extend(load_dataset(recipe, cfg, ("datasets", i))["text"])
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


def build_mlm_model(st_path: Path, *, trust_remote_code: bool = False) -> torch.nn.Module:
    """``AutoModelForMaskedLM`` from the checkpoint; a head missing from it starts random (logged)."""
    folder = hf_model_folder(st_path)
    mlm, info = AutoModelForMaskedLM.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                                     trust_remote_code=trust_remote_code)
    missing = [k for k in info.get("missing_keys", []) if "embeddings" not in k]
    if missing:
        logger.warning("%s has no trained MLM head (%d head weights start random, e.g. %s); they are "
                       "trained from scratch with the encoder", folder, len(missing), sorted(missing)[0])
    return mlm


def copy_encoder_weights(mlm: torch.nn.Module, st_model) -> None:
    """Put the trained encoder of ``mlm`` into the sentence-transformer's Hugging Face model."""
    encoder = getattr(mlm, mlm.base_model_prefix)
    target = st_model[0].auto_model
    result = target.load_state_dict(encoder.state_dict(), strict=False)
    unexpected_missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if unexpected_missing or result.unexpected_keys:
        raise CheckpointError(f"encoder weights do not match the sentence-transformer's model: missing "
                              f"{unexpected_missing[:3]}, unexpected {result.unexpected_keys[:3]}")


class SmaeMode(TrainingMode):
    """SMAE pre-training: MLM at every (layers, dims) pair, on ``transformers.Trainer`` with an MLM model."""

    stage = "smae"
    defaults = {"learning_rate": 5e-5, "weight_decay": 0.01, "save_total_limit": 2}
    recipe: SmaeRecipe

    def prepare(self) -> None:
        super().prepare()
        self.texts = load_text_data(self.recipe)
        if self.model_shape is not None:
            check_pairs(self.recipe, *self.model_shape)

    def describe(self) -> list[str]:
        return [f"SMAE stage: {len(self.texts)} texts"]

    def build_trainer(self, args, callbacks, resume_from):
        recipe = self.recipe
        self.st_model = load_model(self.model_path, device="cpu", trust_remote_code=recipe.model.trust_remote_code)
        self.inference_length = self.st_model.max_seq_length
        if recipe.model.max_seq_length is not None:
            self.st_model.max_seq_length = recipe.model.max_seq_length
        mlm = build_mlm_model(self.model_path, trust_remote_code=recipe.model.trust_remote_code)
        config = mlm.config
        self.pairs = check_pairs(recipe, config.num_hidden_layers, config.hidden_size)
        self.objective = SubnetworkMLMObjective(mlm, self.pairs, recipe.smae.weights)
        self.objective.install(mlm)
        logger.info("SMAE on %d texts, pairs %s", len(self.texts),
                    " ".join(f"({layer},{dim})" for layer, dim in self.pairs))
        tokenizer = self.st_model.tokenizer
        max_length = self.st_model.max_seq_length
        dataset = Dataset.from_dict({"text": self.texts}).map(
            lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
            batched=True, remove_columns=["text"])
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=recipe.smae.mlm_probability)
        return Trainer(model=mlm, args=args, train_dataset=dataset, data_collator=collator,
                       processing_class=tokenizer, callbacks=callbacks)

    def save_final(self, trainer, folder: str) -> None:
        copy_encoder_weights(trainer.model, self.st_model)
        with self.as_saved(self.st_model):
            save_with_recipe(self.st_model, self.recipe, folder)

    def details(self, trainer) -> dict[str, Any]:
        losses = self.objective.mean_losses()
        for (layer, dim), value in losses.items():
            logger.info("mean MLM loss at (%d layers, %d dims): %.3f", layer, dim, value)
        return {"pairs": self.pairs, "pair_losses": losses}


__all__ = ["SmaeMode", "SubnetworkMLMObjective"]
