"""Turn a validated recipe into ready-to-train pieces, checking everything before a model is loaded.

:func:`prepare_data` reads and validates every dataset file (file/line/field errors), checks that each
dataset's loss exists, takes its parameters and can consume its format, and works out the prompts.
It is what ``embedtrain validate`` runs, and the first thing ``embedtrain train`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset

from embedtrain.config.recipe import DatasetConfig, LossConfig, Recipe
from embedtrain.data import prompt_columns, read_records, to_dataset
from embedtrain.errors import DataError
from embedtrain.losses import LossContext, check_loss_config


@dataclass
class PreparedDataset:
    """One validated dataset with the loss it trains with and its per-column prompts."""

    config: DatasetConfig
    dataset: Dataset
    loss: LossConfig
    loss_context: LossContext
    prompts: dict[str, str] = field(default_factory=dict)


def loss_context(recipe: Recipe, index: int | None, data_format: str) -> LossContext:
    """Context for the loss of dataset ``index`` (its own ``loss`` if set, else the recipe's)."""
    if index is not None and recipe.datasets[index].loss is not None:
        loc = ("datasets", index, "loss")
        name = f"datasets[{index}].loss"
    else:
        loc, name = ("loss",), "loss"
    return LossContext(recipe_file=recipe.source, base_dir=recipe.base_dir, line=recipe.line_of(*loc),
                       field=name, data_format=data_format)


def load_dataset_config(recipe: Recipe, index: int) -> Dataset:
    """Read and validate dataset ``index`` of the recipe."""
    cfg = recipe.datasets[index]
    path = recipe.resolve_path(cfg.path) if cfg.file_type != "hub" else cfg.path
    if cfg.file_type != "hub" and not path.exists():
        raise DataError(f"data file not found: {path}", file=recipe.source,
                        line=recipe.line_of("datasets", index, "path"), field=f"datasets[{index}].path")
    records = read_records(path, cfg.file_type, split=cfg.split, limit=cfg.max_samples)
    return to_dataset(records, cfg.format, cfg.columns, cfg.num_negatives)


def prepare_data(recipe: Recipe) -> list[PreparedDataset]:
    """Validate all datasets and their losses; return them ready for the trainer."""
    if recipe.tasks is not None:  # a task recipe: every task's datasets (embedtrain.adapters)
        from embedtrain.adapters.training import prepare_tasks

        return prepare_tasks(recipe)
    prepared = []
    for i, cfg in enumerate(recipe.datasets):
        loss_cfg = cfg.loss or recipe.loss
        ctx = loss_context(recipe, i, cfg.format)
        check_loss_config(loss_cfg, cfg.format, ctx)
        dataset = load_dataset_config(recipe, i)
        query_prompt = cfg.query_prompt if cfg.query_prompt is not None else recipe.prompts.query
        passage_prompt = cfg.passage_prompt if cfg.passage_prompt is not None else recipe.prompts.passage
        prompts = prompt_columns(cfg.format, dataset.column_names, query_prompt, passage_prompt)
        prepared.append(PreparedDataset(cfg, dataset, loss_cfg, ctx, prompts))
    return prepared


def checkpoint_prompts(recipe: Recipe) -> dict[str, str]:
    """Prompts to store in the trained checkpoint's config.

    The recipe-level prompts are saved as ``query`` / ``document`` (the names mteb and
    sentence-transformers look up); dataset-specific prompts as ``<dataset>-query`` /
    ``<dataset>-document`` so they can be chosen with ``encode(..., prompt_name=...)``.
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
