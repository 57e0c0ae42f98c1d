"""Turn a recipe's datasets into ready-to-train pieces, checking everything before a model is loaded.

:func:`prepare_dataset` reads and validates one dataset file (file/line/field errors), checks that its loss
exists, takes its parameters (names and types) and can consume its format, flags degenerate data, and works
out the per-column prompts. Contrastive and task recipes both prepare their datasets through it; it is what
``embedtrain validate`` runs, and the first thing ``embedtrain train`` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from embedtrain.errors import DataError
from embedtrain.io.formats import FORMATS, prompt_columns, to_dataset
from embedtrain.io.readers import read_records
from embedtrain.losses import LossContext, check_loss_config
from embedtrain.schema import ContrastiveRecipe, DatasetConfig, LossConfig, TextDatasetConfig
from embedtrain.schema.base import LocatedModel

logger = logging.getLogger(__name__)

#: Losses that learn only from the *order* of gold scores within a batch.
RANKING_LOSSES = frozenset({"cosent", "angle"})


@dataclass
class PreparedDataset:
    """One validated dataset with the loss it trains with and its per-column prompts."""

    config: DatasetConfig
    dataset: Dataset
    loss: LossConfig
    loss_context: LossContext
    prompts: dict[str, str] = field(default_factory=dict)
    #: Location of the dataset in the recipe, e.g. ``("datasets", 0)`` or ``("tasks", 1, "datasets", 0)``.
    loc: tuple[Any, ...] = ()


def load_dataset(recipe: LocatedModel, cfg: DatasetConfig | TextDatasetConfig, loc: tuple[Any, ...]) -> Dataset:
    """Read and validate the dataset ``cfg`` declared at ``loc`` of the recipe."""
    if cfg.file_type == "hub":
        records = read_records(cfg.path, "hub", split=cfg.split, limit=cfg.max_samples)
    else:
        path = recipe.resolve_path(cfg.path)
        if not path.exists():
            raise recipe.error(f"data file not found: {path}", *loc, "path", kind=DataError)
        records = read_records(path, cfg.file_type, split=cfg.split, limit=cfg.max_samples)
    return to_dataset(records, cfg.format, cfg.columns, getattr(cfg, "num_negatives", None))


def check_signal(recipe: LocatedModel, cfg: DatasetConfig, loc: tuple[Any, ...], dataset: Dataset,
                 loss: LossConfig) -> None:
    """Warn about data a loss learns little from; refuse data it learns nothing from (zero usable rows).

    * scored pairs whose scores are all equal: ranking losses (CoSENT, AnglE) have nothing to rank;
    * contrastive rows that are all the same: in-batch negatives are the positive itself.
    """
    where = f"dataset '{cfg.name}'"
    n = len(dataset)
    if cfg.format == "scored_negatives" and "label" not in dataset.column_names and \
            getattr(getattr(recipe, "distill", None), "scorer", None) is None:
        raise recipe.error(f"{where}: the rows carry no teacher scores (positive_score with {{text, score}} "
                           "negatives, or a scores list); let a teacher score them: 'stage: distill' with "
                           "'distill: {scorer: {kind: cross_encoder, model: ...}}'", *loc, kind=DataError)
    inner = loss
    while inner.inner is not None:
        inner = inner.inner
    if "score" in dataset.column_names:
        scores = set(dataset["score"])
        if len(scores) == 1:
            message = (f"{where}: all {n} scores are equal ({next(iter(scores))}), so there is nothing to rank")
            if inner.name in RANKING_LOSSES:
                raise recipe.error(message + f"; '{inner.name}' would train at loss 0", *loc, kind=DataError)
            logger.warning("%s", message)
        return
    spec = FORMATS[cfg.format]
    columns = [c for c in dataset.column_names if c in spec.text_roles or c.startswith("negative")]
    distinct = len(set(zip(*(dataset[c] for c in columns)))) if columns else n
    has_negatives = any(c.startswith("negative") for c in dataset.column_names)
    if distinct == 1 and n > 1 and not has_negatives:
        raise recipe.error(f"{where}: all {n} rows are the same pair, so in-batch negatives are the positive "
                           "itself and the loss is 0", *loc, kind=DataError)
    if distinct < n:
        level = logging.WARNING if distinct <= n // 2 else logging.INFO
        logger.log(level, "%s: %d of %d rows are duplicates (batches never hold the same text twice, so "
                   "duplicates only repeat examples)", where, n - distinct, n)


def prepare_dataset(recipe: LocatedModel, cfg: DatasetConfig, loc: tuple[Any, ...], loss: LossConfig,
                    loss_loc: tuple[Any, ...], *, query_prompt: str | None, passage_prompt: str | None,
                    model_shape: tuple[int, int] | None = None) -> PreparedDataset:
    """Validate one dataset and its loss (declared at ``loss_loc``) without loading a model."""
    ctx = LossContext.for_recipe(recipe, loss_loc, cfg.format, model_shape)
    check_loss_config(loss, cfg.format, ctx)
    dataset = load_dataset(recipe, cfg, loc)
    check_signal(recipe, cfg, loc, dataset, loss)
    prompts = prompt_columns(cfg.format, dataset.column_names, query_prompt, passage_prompt)
    return PreparedDataset(cfg, dataset, loss, ctx, prompts, loc)


def prepare_contrastive(recipe: ContrastiveRecipe, model_shape: tuple[int, int] | None = None
                        ) -> list[PreparedDataset]:
    """Every dataset of a contrastive recipe, validated, with its loss (its own, else the recipe's)."""
    prepared = []
    for i, cfg in enumerate(recipe.datasets):
        loss, loss_loc = (cfg.loss, ("datasets", i, "loss")) if cfg.loss is not None else (recipe.loss, ("loss",))
        prepared.append(prepare_dataset(
            recipe, cfg, ("datasets", i), loss, loss_loc, model_shape=model_shape,
            query_prompt=cfg.query_prompt if cfg.query_prompt is not None else recipe.prompts.query,
            passage_prompt=cfg.passage_prompt if cfg.passage_prompt is not None else recipe.prompts.passage))
    return prepared


def checkpoint_prompts(recipe: ContrastiveRecipe) -> dict[str, str]:
    """Prompts to store in the trained checkpoint's config.

    The recipe-level prompts are saved as ``query`` / ``document`` (the names mteb and
    sentence-transformers look up); dataset-specific prompts as ``<dataset>-query`` /
    ``<dataset>-document`` so they can be chosen with ``encode(..., prompt_name=...)``. A single dataset's
    prompts also become ``query`` / ``document`` when the recipe sets none.
    """
    prompts: dict[str, str] = {}
    if recipe.prompts.query:
        prompts["query"] = recipe.prompts.query
    if recipe.prompts.passage:
        prompts["document"] = recipe.prompts.passage
    for cfg in recipe.datasets:
        if cfg.query_prompt:
            prompts[f"{cfg.name}-query"] = cfg.query_prompt
        if cfg.passage_prompt:
            prompts[f"{cfg.name}-document"] = cfg.passage_prompt
    if "query" not in prompts and len(recipe.datasets) == 1 and recipe.datasets[0].query_prompt:
        prompts["query"] = recipe.datasets[0].query_prompt
    if "document" not in prompts and len(recipe.datasets) == 1 and recipe.datasets[0].passage_prompt:
        prompts["document"] = recipe.datasets[0].passage_prompt
    return prompts
