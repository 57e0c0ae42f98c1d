"""Throughput of contrastive training: the recipe's ``speed:`` section applied to the arguments, model and losses.

What is applied, and why each is safe for what the model learns (measurements: docs/throughput.md):

* **precision** (:func:`precision_arguments`): bf16 autocast through the trainer's own ``bf16`` argument
  where the hardware computes bf16 natively (:mod:`embedtrain.models.precision`). Weights, optimizer
  state, norms, softmax and the loss stay float32. An explicit ``training.bf16`` / ``training.fp16`` wins.
* **bucketing** (:func:`prepare_model`, :mod:`embedtrain.train.bucketing`): each batch is embedded in
  length-sorted chunks; the batch is the sampler's own, so no-duplicates and multi-dataset sampling and
  in-batch negatives are unchanged.
* **length-sorted GradCache mini-batches** (:func:`prepare_loss`): a cached loss sees the batch's rows
  reordered by length, so its mini-batches are nearly padding-free. The loss is a mean over rows with every
  other row as a candidate, so it does not depend on the order (row ids in ``labels`` travel along).
* **attention dropout** (opt-in): setting it to 0 lets the fused attention kernel run.
* **attention recomputation** (opt-in, :mod:`embedtrain.models.attention`): the attention probabilities are
  recomputed in the backward pass instead of kept; same gradients, less memory, a little more time.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from torch import Tensor

from embedtrain.models.precision import Precision, choose_precision
from embedtrain.train import bucketing

logger = logging.getLogger(__name__)

SORTED_MARK = "_embedtrain_rows_sorted"


def training_device(recipe) -> str | None:
    """The device training runs on: the recipe's ``model.device``, CPU under ``training.use_cpu``, else auto."""
    if recipe.model.device:
        return recipe.model.device
    if str(recipe.training.get("use_cpu")).lower() in ("true", "1"):
        return "cpu"
    return None


def explicit_precision(recipe) -> str | None:
    """``bf16`` / ``fp16`` / ``fp32`` when the recipe's ``training:`` section decides it, else None."""
    training = recipe.training
    if str(training.get("fp16")).lower() in ("true", "1"):
        return "fp16"
    if "bf16" in training:
        return "bf16" if str(training["bf16"]).lower() in ("true", "1") else "fp32"
    return None


def resolve_precision(recipe) -> Precision | str:
    """The run's precision: the ``training:`` section's explicit choice (a string), else ``speed.precision``."""
    explicit = explicit_precision(recipe)
    if explicit is not None:
        return explicit
    return choose_precision(recipe.speed.precision, training_device(recipe))


def run_precision(recipe) -> Precision:
    """The run's precision as a :class:`Precision` (what mining re-encodes in); fp16 counts as fp32 here."""
    precision = resolve_precision(recipe)
    if isinstance(precision, str):
        from embedtrain.models.precision import device_type_of

        return Precision("bf16" if precision == "bf16" else "fp32", device_type_of(training_device(recipe)),
                         "set in the recipe's training section")
    return precision


def precision_arguments(recipe) -> dict[str, Any]:
    """Training-argument values for the run's precision (``{}`` when ``training:`` sets it itself)."""
    precision = resolve_precision(recipe)
    if isinstance(precision, str):
        logger.info("precision: %s (set in the recipe's training section)", precision)
        return {}
    logger.info("precision: %s autocast on %s (%s)", precision.name, precision.device_type, precision.reason)
    values: dict[str, Any] = {"bf16": precision.autocast}
    if precision.autocast and precision.device_type == "cpu":
        values["use_cpu"] = True  # transformers refuses bf16 without a GPU unless told the run is on the CPU
    return values


def describe_speed(recipe) -> str:
    """One line for ``embedtrain validate``: precision and the other ``speed:`` settings."""
    precision = resolve_precision(recipe)
    where = (f"{precision} (training section)" if isinstance(precision, str)
             else f"{precision.name} ({precision.reason})")
    speed = recipe.speed
    parts = [f"precision {where}", f"bucketing {'on' if speed.bucketing else 'off'}"]
    if speed.attention_dropout is not None:
        parts.append(f"attention dropout {speed.attention_dropout}")
    if speed.recompute_attention:
        parts.append("attention recomputed in the backward pass")
    return "speed: " + ", ".join(parts)


def set_attention_dropout(model, p: float) -> int:
    """Set the attention-probability dropout of ``model``'s transformer to ``p``; returns how many places.

    Covers BERT-family attention (``*.attention.self.dropout``, read as ``dropout.p`` by the sdpa path),
    ``attn_dropout`` modules and the float ``attention_dropout`` / ``dropout_prob`` attributes of decoder
    attention classes, plus the configs (for modules built later).
    """
    changed = 0
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        for key in ("attention_probs_dropout_prob", "attention_dropout"):
            if config is not None and isinstance(getattr(config, key, None), float):
                setattr(config, key, p)
        attention = "attn" in name or "attention" in name
        if isinstance(module, torch.nn.Dropout) and name.endswith(("attention.self.dropout", "attn_dropout",
                                                                   "attn.dropout")):
            module.p = p
            changed += 1
        for key in ("attention_dropout", "dropout_prob"):
            if attention and isinstance(getattr(module, key, None), float):
                setattr(module, key, p)
                changed += 1
    return changed


def drop_autocast_wrapper(model) -> bool:
    """Undo the mixed-precision wrapper accelerate puts on ``model.forward`` for training (True if there was one).

    With ``bf16`` the trainer's accelerator replaces the model's forward by an autocast version and keeps it
    after training, so the trained model in memory would go on computing in bf16: the after-training checks
    would not measure the float32 weights that are saved, and a caller's embeddings would differ from the
    saved model's. accelerate's own ``keep_fp32_wrapper=False`` cannot restore an instance-level forward (length
    bucketing's), which it turns into a method; here the forward in place before training comes back as it was.
    """
    original = model.__dict__.pop("_original_forward", None)
    if original is None:
        return False
    if getattr(original, "__self__", None) is model and getattr(original, "__func__", None) is type(model).forward:
        model.__dict__.pop("forward", None)  # the class's own forward
    else:
        model.forward = original  # an instance-level wrapper (bucketing) stays
    return True


def restore_model(model) -> None:
    """Undo what training left on ``model`` so it computes as it is saved: the autocast wrapper
    (:func:`drop_autocast_wrapper`) and recomputed attention (plain ``sdpa`` again)."""
    from embedtrain.models import attention

    drop_autocast_wrapper(model)
    attention.uninstall(model)


def prepare_model(model, speed, gradient_checkpointing: bool = False) -> None:
    """Apply ``speed`` (a :class:`~embedtrain.schema.SpeedConfig`) to the model about to be trained.

    ``gradient_checkpointing``: the run recomputes whole layers in the backward pass, so
    ``recompute_attention`` would only recompute the attention core a second time and is skipped.
    """
    if speed.attention_dropout is not None:
        n = set_attention_dropout(model, speed.attention_dropout)
        if n:
            logger.info("attention dropout set to %s (%d places)", speed.attention_dropout, n)
        else:
            logger.warning("speed.attention_dropout: this model's attention dropout was not found; unchanged")
    if speed.recompute_attention and gradient_checkpointing:
        logger.info("speed.recompute_attention skipped: gradient checkpointing recomputes whole layers already")
    elif speed.recompute_attention:
        from embedtrain.models import attention

        if attention.install(model):
            logger.info("attention probabilities recomputed in the backward pass (speed.recompute_attention)")
        else:
            logger.warning("speed.recompute_attention: this model does not use sdpa attention; unchanged")
    if speed.bucketing:
        bucketing.install(model, overhead_tokens=speed.bucket_overhead_tokens)


def _row_count(features: dict[str, Any]) -> int | None:
    mask = features.get("attention_mask")
    return mask.shape[0] if isinstance(mask, Tensor) and mask.ndim == 2 else None


def _permute(features: dict[str, Any], order: Tensor, rows: int) -> dict[str, Any]:
    return {k: v.index_select(0, order) if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == rows else v
            for k, v in features.items()}


def sort_rows_by_length(loss) -> bool:
    """Make a GradCache loss see each batch's rows ordered by length (longest column decides).

    The reorder is the same for every column (anchor i stays with positive i and its negatives) and for
    per-row ``labels``; a batch whose columns are not plain padded token batches is left alone.
    """
    forward = loss.forward
    if getattr(forward, SORTED_MARK, False):
        return False

    @functools.wraps(forward)
    def run(sentence_features, labels=None, *args, **kwargs):
        features = list(sentence_features)
        rows = [_row_count(f) for f in features]
        if not features or None in rows or len(set(rows)) != 1 or "cu_seq_lens_q" in features[0]:
            return forward(features, labels, *args, **kwargs)
        n = rows[0]
        lengths = torch.stack([f["attention_mask"].sum(dim=1) for f in features])  # (columns, rows)
        order = torch.argsort(lengths[int(lengths.sum(dim=1).argmax())], descending=True, stable=True)
        features = [_permute(f, order, n) for f in features]
        if isinstance(labels, Tensor) and labels.ndim >= 1 and labels.shape[0] == n:
            labels = labels.index_select(0, order.to(labels.device))
        return forward(features, labels, *args, **kwargs)

    setattr(run, SORTED_MARK, True)
    loss.forward = run
    return True


def prepare_loss(loss, speed) -> None:
    """Apply ``speed`` to one built loss (GradCache losses get length-sorted mini-batches)."""
    if speed.sort_cached_batches and getattr(loss, "uses_gradient_cache", False):
        sort_rows_by_length(loss)
