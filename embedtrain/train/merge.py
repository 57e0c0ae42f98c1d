"""A recipe's ``merge_with_start:`` section in the training run: read and check its data before any model loads,
and merge the trained model with the start model once training is done, before the final save.

The merge itself and the selection rule are :mod:`embedtrain.soup.merge_start`; the saved ``final`` model is the
merged one, and the run record (``embedtrain_run.json``) keeps the chosen alpha and every candidate's signals.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from embedtrain.io.sentences import default_general_text, read_sentences
from embedtrain.schema import Recipe

logger = logging.getLogger(__name__)


@dataclass
class MergePlan:
    """The checked inputs of a merge: the dev metric (or None) and the general sentences."""

    dev: object | None
    sentences: list[str]


def plan_merge(recipe: Recipe) -> MergePlan | None:
    """Read and check the section's files (every dev row, the general sentences); None without the section."""
    config = getattr(recipe, "merge_with_start", None)
    if config is None:
        return None
    dev = None
    if config.dev is not None:
        from embedtrain.soup.metrics import held_out_sts

        path = recipe.resolve_path(config.dev)
        if not path.exists():
            raise recipe.error(f"dev file not found: {path}", "merge_with_start", "dev")
        dev = held_out_sts(path, columns=config.dev_columns or None, max_samples=config.max_dev_pairs,
                           batch_size=config.batch_size)
    if config.general_text is not None:
        path = recipe.resolve_path(config.general_text)
        if not path.exists():
            raise recipe.error(f"general_text file not found: {path}", "merge_with_start", "general_text")
    else:
        path = default_general_text()
    return MergePlan(dev, read_sentences(path))


def check_merge_engine(recipe: Recipe) -> None:
    """The merge needs every weight in one process: refused under FSDP / ZeRO-3 (before training starts)."""
    from embedtrain.mining.collective import sharding_engine
    from embedtrain.train.sharded import SHARDED_ENGINES

    engine = sharding_engine()
    if getattr(recipe, "merge_with_start", None) is not None and engine in SHARDED_ENGINES:
        raise recipe.error(f"merge_with_start needs the full weights in one process; it does not run under {engine} "
                           "(merge afterwards with `embedtrain merge-start`)", "merge_with_start")


def merge_after_training(recipe: Recipe, plan: MergePlan, model, start_model):
    """Merge the trained ``model`` (in place) with ``start_model`` (a fresh load of the recipe's start, built the
    same way: keep_layers, model options); return the selection."""
    from embedtrain.soup.merge_start import merge_with_start, weights_of
    from embedtrain.soup.metrics import similarity_agreement

    config = recipe.merge_with_start
    start_weights = weights_of(start_model)
    agreement = functools.partial(similarity_agreement, sentences=plan.sentences, num_pairs=config.num_pairs,
                                  batch_size=config.batch_size)
    was_training = model.training
    try:
        return merge_with_start(model, start_weights, alpha=config.alpha, dev=plan.dev, agreement=agreement,
                                grid=config.grid, keep=config.keep)
    finally:
        model.train(was_training)
