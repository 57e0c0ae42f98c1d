"""The ``eval:`` section of a recipe: MTEB evaluation of the final model, run after training.

This module stays import-light (no mteb / torch at import time) because the recipe schema imports it.
:func:`check_eval_section` runs when the recipe is loaded, so unknown task names, missing or malformed
data files fail before training starts; :func:`evaluate_after_training` is called by the trainer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, PositiveInt

from embedtrain.config.base import StrictModel

from embedtrain.evaluation.task_config import DEFAULT_TASKS

if TYPE_CHECKING:
    from embedtrain.evaluation.runner import EvalReport

logger = logging.getLogger(__name__)


class EvalConfig(StrictModel):
    """MTEB tasks to run on ``<output_dir>/final`` once training is done.

    Paths (``data_dir``, ``task_config``, ``output``) are relative to the recipe file. ``data_dir``
    defaults to ``$EMBEDTRAIN_DATA_DIR``; ``output`` to ``<output_dir>/final/eval``. ``dims`` / ``layers``
    add a truncation grid. ``online`` lets task names without a local definition be downloaded by mteb.
    """

    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS), min_length=1)
    data_dir: str | None = None
    task_config: list[str] = Field(default_factory=list)
    batch_size: int = Field(default=64, gt=0)
    dims: list[PositiveInt] | None = Field(default=None, min_length=1)
    layers: list[PositiveInt] | None = Field(default=None, min_length=1)
    output: str | None = None
    online: bool = False


def _paths(recipe: Any) -> dict[str, Any]:
    cfg: EvalConfig = recipe.eval
    return {
        "data_dir": recipe.resolve_path(cfg.data_dir) if cfg.data_dir else None,
        "task_configs": [recipe.resolve_path(p) for p in cfg.task_config],
    }


def _resolve(recipe: Any) -> list:
    from embedtrain.errors import RecipeError
    from embedtrain.evaluation.tasks import resolve_tasks

    cfg: EvalConfig = recipe.eval
    for i, path in enumerate(_paths(recipe)["task_configs"]):
        if not path.is_file():
            raise RecipeError(f"task config file not found: {path}", file=recipe.source,
                              line=recipe.line_of("eval", "task_config", i), field=f"eval.task_config[{i}]")
    if cfg.data_dir and not recipe.resolve_path(cfg.data_dir).is_dir():
        raise RecipeError(f"data directory not found: {recipe.resolve_path(cfg.data_dir)}", file=recipe.source,
                          line=recipe.line_of("eval", "data_dir"), field="eval.data_dir")
    return resolve_tasks(cfg.tasks, online=cfg.online, source=recipe.source, line=recipe.line_of("eval", "tasks"),
                         field="eval.tasks", **_paths(recipe))


def check_eval_section(recipe: Any) -> None:
    """Resolve the recipe's eval tasks and read their local data (every row checked); no model is loaded."""
    if getattr(recipe, "eval", None) is None:
        return
    from embedtrain.evaluation.tasks import load_task_data

    load_task_data(_resolve(recipe))


def evaluate_after_training(recipe: Any, final_dir: str | Path) -> EvalReport:
    """Run the recipe's ``eval:`` section on the saved final model and log the summary table."""
    from embedtrain.evaluation.runner import evaluate_checkpoint

    cfg: EvalConfig = recipe.eval
    report = evaluate_checkpoint(
        Path(final_dir), resolved_tasks=_resolve(recipe), batch_size=cfg.batch_size, dims=cfg.dims,
        layers=cfg.layers, online=cfg.online, show_progress=False,
        output=recipe.resolve_path(cfg.output) if cfg.output else None,
    )
    for score in report.summary.scores.values():
        logger.info("MTEB %s (%s): %.2f", score.task, score.metric, score.value)
    logger.info("evaluation results written to %s", report.output_dir)
    return report
