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
from embedtrain.io.columnar import EXTRA_COLUMNS
from embedtrain.io.dataset_cache import load_dataset_cached, stream_dataset
from embedtrain.io.formats import prompt_columns
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
    #: What preparing the data measured (rows, distinct rows, score range...; empty when streaming).
    stats: dict[str, Any] = field(default_factory=dict)
    #: With dynamic mining: the file's negatives, their scores and the candidates, per row (memory-mapped).
    extras: Any = None


def row_count(dataset) -> str:
    """``"<n> rows"`` of a prepared dataset, or ``"streamed"`` (an IterableDataset has no length)."""
    try:
        return f"{len(dataset)} rows"
    except TypeError:
        return "streamed"


def load_prepared(recipe: LocatedModel, cfg: DatasetConfig | TextDatasetConfig, loc: tuple[Any, ...]):
    """The dataset ``cfg`` declared at ``loc`` of the recipe: checked, converted and memory-mapped from the
    data cache (:mod:`embedtrain.io.dataset_cache`), or a checked-while-read ``IterableDataset`` with
    ``streaming: true``. Returns ``(dataset, stats)``.

    Under a multi-process launch each machine's main process prepares the cache entry first and the other
    ranks open it (:func:`~embedtrain.train.distributed.main_process_first`).
    """
    from embedtrain.train.distributed import main_process_first

    if cfg.file_type == "hub":
        path: Any = cfg.path
    else:
        path = recipe.resolve_path(cfg.path)
        if not path.exists():
            raise recipe.error(f"data file not found: {path}", *loc, "path", kind=DataError)
    kwargs = dict(file_type=cfg.file_type, split=cfg.split, columns=cfg.columns,
                  num_negatives=getattr(cfg, "num_negatives", None), max_samples=cfg.max_samples)
    if getattr(cfg, "streaming", False):
        return stream_dataset(path, cfg.format, **kwargs), {}
    if cfg.format in ROW_READER_FORMATS:
        return _read_rows(path, cfg, kwargs)
    mining = getattr(cfg, "mining", None)
    dynamic = mining.dynamic if mining is not None else None
    with main_process_first():
        cached = load_dataset_cached(path, cfg.format, **kwargs,
                                     candidates_column=dynamic.candidates_column if dynamic is not None else None)
    dataset = cached.dataset
    label_column = getattr(cfg, "label_column", None)
    if label_column:  # rows of one label must not be in-batch negatives of each other (embedtrain.train.mixing)
        from embedtrain.io.readers import read_records
        from embedtrain.train.mixing import LABEL_COLUMN, read_labels

        records = read_records(path, cfg.file_type, split=cfg.split, limit=cfg.max_samples)
        dataset = dataset.add_column(LABEL_COLUMN, read_labels(records, label_column))
    return dataset, {**cached.meta, "cache": str(cached.folder), "reused": cached.reused}


#: Formats whose rows carry more than the cached Arrow path keeps (teacher scores of each negative): read row by
#: row with the reference reader (:func:`embedtrain.io.formats.to_dataset`).
ROW_READER_FORMATS = frozenset({"scored_negatives"})


def _read_rows(path, cfg, kwargs: dict[str, Any]) -> tuple[Dataset, dict[str, Any]]:
    from embedtrain.io.formats import to_dataset
    from embedtrain.io.readers import read_records

    records = read_records(path, kwargs["file_type"], split=kwargs["split"], limit=kwargs["max_samples"])
    dataset = to_dataset(records, cfg.format, kwargs["columns"], kwargs["num_negatives"])
    text_columns = [c for c in dataset.column_names if c != "label"]
    distinct = len(set(zip(*(dataset[c] for c in text_columns)))) if text_columns else len(dataset)
    return dataset, {"rows": len(dataset), "distinct_rows": distinct}


def load_dataset(recipe: LocatedModel, cfg: DatasetConfig | TextDatasetConfig, loc: tuple[Any, ...]) -> Dataset:
    """Read and validate the dataset ``cfg`` declared at ``loc`` of the recipe (see :func:`load_prepared`)."""
    return load_prepared(recipe, cfg, loc)[0]


def check_signal(recipe: LocatedModel, cfg: DatasetConfig, loc: tuple[Any, ...], dataset: Dataset,
                 loss: LossConfig, stats: dict[str, Any] | None = None) -> None:
    """Warn about data a loss learns little from; refuse data it learns nothing from (zero usable rows).

    * scored pairs whose scores are all equal: ranking losses (CoSENT, AnglE) have nothing to rank;
    * contrastive rows that are all the same: in-batch negatives are the positive itself.

    ``stats`` are the figures measured while the data was prepared (score range, distinct rows); a streamed
    dataset has none and is not checked.
    """
    stats = stats or {}
    if "rows" not in stats:
        return
    where = f"dataset '{cfg.name}'"
    n = stats["rows"]
    if cfg.format == "scored_negatives" and "label" not in dataset.column_names and \
            getattr(getattr(recipe, "distill", None), "scorer", None) is None:
        raise recipe.error(f"{where}: the rows carry no teacher scores (positive_score with {{text, score}} "
                           "negatives, or a scores list); let a teacher score them: 'stage: distill' with "
                           "'distill: {scorer: {kind: cross_encoder, model: ...}}'", *loc, kind=DataError)
    inner = loss
    while inner.inner is not None:
        inner = inner.inner
    if "score" in dataset.column_names:
        if stats.get("score_min") is not None and stats["score_min"] == stats["score_max"]:
            message = (f"{where}: all {n} scores are equal ({stats['score_min']}), so there is nothing to rank")
            if inner.name in RANKING_LOSSES:
                raise recipe.error(message + f"; '{inner.name}' would train at loss 0", *loc, kind=DataError)
            logger.warning("%s", message)
        return
    distinct = stats.get("distinct_rows") or n
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
    check_streaming(recipe, cfg, loc)
    dataset, stats = load_prepared(recipe, cfg, loc)
    extras = None
    kept = [c for c in EXTRA_COLUMNS if c in dataset.column_names]
    if kept:  # dynamic mining's columns: kept aside (memory-mapped), not trained on
        extras, dataset = dataset.select_columns(kept), dataset.remove_columns(kept)
    check_signal(recipe, cfg, loc, dataset, loss, stats)
    text_columns = [c for c in dataset.column_names if c != "label"]
    prompts = prompt_columns(cfg.format, text_columns, query_prompt, passage_prompt)
    return PreparedDataset(cfg, dataset, loss, ctx, prompts, loc, stats, extras)


def check_streaming(recipe: LocatedModel, cfg: DatasetConfig, loc: tuple[Any, ...]) -> None:
    """``streaming: true`` limits: a known number of steps, one dataset, no dynamic mining."""
    if not getattr(cfg, "streaming", False):
        return
    if not recipe.training.get("max_steps"):
        raise recipe.error("a streamed dataset has no known length: set training.max_steps", *loc, "streaming")
    if len(recipe.datasets_for_training) > 1:
        raise recipe.error("streaming: true works with a single dataset (the multi-dataset batch sampler needs "
                           "each dataset's length)", *loc, "streaming")
    if getattr(cfg, "label_column", None):
        raise recipe.error("label_column needs the prepared dataset (its batches are built by label); "
                           "set streaming: false", *loc, "streaming")
    if cfg.mining is not None and cfg.mining.dynamic is not None:
        raise recipe.error("dynamic mining rewrites negatives by row, which a streamed dataset has not; "
                           "prepare the data (streaming: false)", *loc, "streaming")


def dataset_prompts(recipe: ContrastiveRecipe, cfg: DatasetConfig) -> tuple[str | None, str | None]:
    """``(query prompt, passage prompt)`` of a dataset: its instruction (formatted by the recipe's
    ``instructions.template``), else its own prompts, else the recipe's."""
    if cfg.instruction is not None:
        from embedtrain.models.instructions import dataset_prompts as instruction_prompts

        template = recipe.instructions.template if recipe.instructions is not None else None
        return instruction_prompts(cfg.instruction, symmetric=cfg.symmetric,
                                   **({"template": template} if template else {}))
    return (cfg.query_prompt if cfg.query_prompt is not None else recipe.prompts.query,
            cfg.passage_prompt if cfg.passage_prompt is not None else recipe.prompts.passage)


def prepare_contrastive(recipe: ContrastiveRecipe, model_shape: tuple[int, int] | None = None
                        ) -> list[PreparedDataset]:
    """Every dataset of a contrastive recipe, validated, with its loss (its own, else the recipe's)."""
    prepared = []
    for i, cfg in enumerate(recipe.datasets):
        loss, loss_loc = (cfg.loss, ("datasets", i, "loss")) if cfg.loss is not None else (recipe.loss, ("loss",))
        query_prompt, passage_prompt = dataset_prompts(recipe, cfg)
        prepared.append(prepare_dataset(recipe, cfg, ("datasets", i), loss, loss_loc, model_shape=model_shape,
                                        query_prompt=query_prompt, passage_prompt=passage_prompt))
    return prepared


def checkpoint_prompts(recipe: ContrastiveRecipe) -> dict[str, str]:
    """Prompts to store in the trained checkpoint's config.

    The recipe-level prompts are saved as ``query`` / ``document`` (the names mteb and
    sentence-transformers look up); dataset-specific prompts as ``<dataset>-query`` /
    ``<dataset>-document`` so they can be chosen with ``encode(..., prompt_name=...)``. A single dataset's
    prompts also become ``query`` / ``document`` when the recipe sets none.

    The ``instructions:`` section's prompts (keyed per MTEB task type and task, see
    :mod:`embedtrain.models.instructions`) come first; the recipe's explicit prompts win over them.
    """
    prompts: dict[str, str] = {}
    if recipe.instructions is not None:
        from embedtrain.models.instructions import instruction_prompts

        prompts.update(instruction_prompts(recipe.instructions))
    if recipe.prompts.query:
        prompts["query"] = recipe.prompts.query
    if recipe.prompts.passage:
        prompts["document"] = recipe.prompts.passage
    own = {cfg.name: (cfg.query_prompt, cfg.passage_prompt) if cfg.instruction is None
           else dataset_prompts(recipe, cfg) for cfg in recipe.datasets}
    for name, (query, passage) in own.items():
        if query:
            prompts[f"{name}-query"] = query
        if passage:
            prompts[f"{name}-document"] = passage
    if len(own) == 1:
        query, passage = next(iter(own.values()))
        if "query" not in prompts and query:
            prompts["query"] = query
        if "document" not in prompts and passage:
            prompts["document"] = passage
    return prompts
