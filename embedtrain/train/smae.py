"""Starbucks masked-autoencoding (SMAE) pre-training: MLM and an MAE decoder on (layer, dim) sub-networks.

Before 2D-Matryoshka fine-tuning, SMAE teaches the backbone to be a good language model *at every size it
will be cut to*, and its CLS vector to summarise the text at every size. Each step, every text is masked
twice with whole-word masks (:mod:`embedtrain.train.smae_masking`): 20% of the tokens for the encoder, 40%
(a superset) for the decoder. Then, for each pair ``(L, D)`` (the Starbucks reference, ``smae/modelling.py``):

* **MLM**: the encoder's hidden states after layer ``L``, cut to their first ``D`` dims, predict the
  encoder-masked tokens through the model's MLM head read from those ``D`` dims
  (:func:`embedtrain.models.mlm_head.subdim_mlm_logits`);
* **MAE**: the head's transform of the same cut hidden state at the CLS position replaces the first token of
  the decoder input (the word + position embeddings of the 40%-masked text), one transformer layer
  (initialised as a copy of the start model's first layer, trained with it) runs over it, and the full MLM
  head predicts the decoder-masked tokens. With 40% of the text hidden, the decoder leans on the CLS vector.

Per pair the loss is ``(MLM + MAE) / 2``; the step's loss is the weighted mean over pairs. The encoder runs
once per step and vocabulary logits are computed only at masked positions. ``smae.mae: false`` keeps the MLM
part only.

The output, ``<output_dir>/final``, is a sentence-transformers checkpoint with the start model's
pooling/normalisation and the pre-trained encoder, ready to be ``model.name_or_path`` of a following
contrastive recipe (e.g. with the ``starbucks`` loss). The MLM head and the MAE decoder layer are kept in the
``checkpoint-N`` folders (used by ``--resume``) but not in ``final``.
"""

from __future__ import annotations

import copy
import json
import logging
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForMaskedLM, Trainer
from transformers.modeling_outputs import MaskedLMOutput

from embedtrain.errors import CheckpointError, RecipeError
from embedtrain.io.checkpoints import save_with_recipe
from embedtrain.models.mlm_head import MLMHeadParts, mlm_head_parts, subdim_mlm_logits, subdim_transform
from embedtrain.models.resolve import load_model
from embedtrain.models.subnetworks import Pair, default_pairs, validate_pairs
from embedtrain.schema import SmaeRecipe
from embedtrain.train.prepare import load_dataset
from embedtrain.train.runner import TrainingMode
from embedtrain.train.smae_masking import SmaeCollator, tokenize_for_smae

logger = logging.getLogger(__name__)

#: Encoders whose layers are called as ``layer(hidden_states, attention_mask)`` (the MAE decoder needs that).
MAE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
#: Name of the MAE decoder layer inside the masked-LM model (so the Trainer optimises, saves and resumes it).
DECODER_ATTR = "smae_decoder"


def add_mae_decoder(mlm_model: torch.nn.Module) -> torch.nn.Module:
    """Add the one-layer MAE decoder (a copy of the encoder's first layer) to ``mlm_model`` and return it."""
    base = getattr(mlm_model, mlm_model.base_model_prefix)
    model_type = getattr(mlm_model.config, "model_type", "")
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if model_type not in MAE_MODEL_TYPES or layers is None or not hasattr(base, "embeddings"):
        raise CheckpointError(f"the SMAE MAE decoder supports {list(MAE_MODEL_TYPES)} encoders, not "
                              f"'{model_type}'; set smae.mae: false to train the sub-network MLM only")
    decoder = getattr(mlm_model, DECODER_ATTR, None)
    if decoder is None:
        decoder = copy.deepcopy(layers[0])
        setattr(mlm_model, DECODER_ATTR, decoder)
    return decoder


class SubnetworkMLMObjective:
    """The SMAE loss, installed as the ``forward`` of a ``*ForMaskedLM`` model.

    Replacing ``forward`` (rather than wrapping the model) keeps the model a ``PreTrainedModel``, so
    the HF ``Trainer`` saves, resumes and wraps it (DDP, mixed precision) as usual.
    """

    def __init__(self, mlm_model: torch.nn.Module, pairs: list[Pair], weights: list[float] | None = None, *,
                 mae: bool = True) -> None:
        self.pairs = pairs
        self.weights = list(weights) if weights is not None else [1.0] * len(pairs)
        self.head: MLMHeadParts = mlm_head_parts(mlm_model)
        self.mae = mae
        if mae:
            add_mae_decoder(mlm_model)
        self.sums: dict[str, dict[Pair, torch.Tensor | float]] = {
            "mlm": {p: 0.0 for p in pairs}, "mae": {p: 0.0 for p in pairs}}
        self.counts = 0
        self._checked = False

    def install(self, mlm_model: torch.nn.Module) -> None:
        objective = self

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                    decoder_input_ids=None, decoder_labels=None, special_tokens_mask=None, word_ids=None):
            # special_tokens_mask / word_ids: dataset columns the collator reads; named here so the Trainer
            # keeps them (it drops the columns forward() does not take)
            return objective.loss(self, input_ids, attention_mask, token_type_ids, labels, decoder_input_ids,
                                  decoder_labels)

        mlm_model.forward = types.MethodType(forward, mlm_model)

    def _mae_loss(self, mlm_model, base, cls_vector: torch.Tensor, decoder_embeds: torch.Tensor,
                  decoder_mask, selected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = torch.cat([cls_vector, decoder_embeds[:, 1:]], dim=1)
        out = getattr(mlm_model, DECODER_ATTR)(x, decoder_mask)
        out = out[0] if isinstance(out, tuple) else out
        logits = subdim_mlm_logits(self.head, out[selected], self.head.width)
        return F.cross_entropy(logits.float(), target)

    def loss(self, mlm_model, input_ids, attention_mask, token_type_ids, labels, decoder_input_ids=None,
             decoder_labels=None) -> MaskedLMOutput:
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
        use_mae = self.mae and decoder_input_ids is not None and decoder_labels is not None
        if use_mae:
            from transformers.masking_utils import create_bidirectional_mask

            dec_selected = decoder_labels != -100
            dec_target = decoder_labels[dec_selected]
            decoder_embeds = base.embeddings(input_ids=decoder_input_ids, token_type_ids=token_type_ids)
            decoder_mask = create_bidirectional_mask(config=base.config, inputs_embeds=decoder_embeds,
                                                     attention_mask=attention_mask)
        total_weight = sum(self.weights)
        loss = hidden[-1].sum() * 0.0  # keeps a graph when nothing is masked
        for (layer, dim), weight in zip(self.pairs, self.weights):
            h = hidden[layer]
            parts = []
            if target.numel():
                mlm = F.cross_entropy(subdim_mlm_logits(self.head, h[selected], dim).float(), target)
                self.sums["mlm"][(layer, dim)] += mlm.detach()  # a tensor: no device sync per step
                parts.append(mlm)
            if use_mae and dec_target.numel():
                cls_vector = subdim_transform(self.head, h[:, :1], dim)
                mae = self._mae_loss(mlm_model, base, cls_vector, decoder_embeds, decoder_mask, dec_selected,
                                     dec_target)
                self.sums["mae"][(layer, dim)] += mae.detach()
                parts.append(mae)
            if parts:
                loss = loss + weight * (sum(parts) / len(parts)) / total_weight
        self.counts += 1
        return MaskedLMOutput(loss=loss)

    def mean_losses(self) -> dict[Pair, float]:
        """Mean MLM loss per pair over the steps so far."""
        return {p: float(s) / self.counts for p, s in self.sums["mlm"].items()} if self.counts else {}

    def mean_mae_losses(self) -> dict[Pair, float]:
        """Mean MAE decoder loss per pair over the steps so far (empty without MAE)."""
        if not (self.counts and self.mae):
            return {}
        return {p: float(s) / self.counts for p, s in self.sums["mae"].items()}


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
        cfg = recipe.smae
        self.objective = SubnetworkMLMObjective(mlm, self.pairs, cfg.weights, mae=cfg.mae)
        self.objective.install(mlm)
        logger.info("SMAE on %d texts, pairs %s, %s, masks %.2f%s, %s", len(self.texts),
                    " ".join(f"({layer},{dim})" for layer, dim in self.pairs),
                    "MLM + MAE decoder" if cfg.mae else "MLM only", cfg.mlm_probability,
                    f" / decoder {cfg.decoder_mlm_probability:.2f}" if cfg.mae else "",
                    "whole words" if cfg.whole_word_mask else "tokens")
        tokenizer = self.st_model.tokenizer
        max_length = self.st_model.max_seq_length
        dataset = Dataset.from_dict({"text": self.texts}).map(
            lambda batch: tokenize_for_smae(tokenizer, batch["text"], max_length),
            batched=True, remove_columns=["text"])
        collator = SmaeCollator(tokenizer, encoder_probability=cfg.mlm_probability,
                                decoder_probability=cfg.decoder_mlm_probability if cfg.mae else None,
                                whole_word=cfg.whole_word_mask, seed=args.seed)
        return Trainer(model=mlm, args=args, train_dataset=dataset, data_collator=collator,
                       processing_class=tokenizer, callbacks=callbacks)

    def save_final(self, trainer, folder: str) -> None:
        copy_encoder_weights(trainer.model, self.st_model)
        with self.as_saved(self.st_model):
            save_with_recipe(self.st_model, self.recipe, folder)

    def details(self, trainer) -> dict[str, Any]:
        losses = self.objective.mean_losses()
        mae = self.objective.mean_mae_losses()
        for (layer, dim), value in losses.items():
            logger.info("mean MLM loss at (%d layers, %d dims): %.3f%s", layer, dim, value,
                        f", MAE decoder {mae[(layer, dim)]:.3f}" if mae else "")
        return {"pairs": self.pairs, "pair_losses": losses, "pair_mae_losses": mae}


__all__ = ["SmaeMode", "SubnetworkMLMObjective"]
