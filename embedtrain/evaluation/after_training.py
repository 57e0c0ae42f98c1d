"""A recipe's ``eval:`` section (:class:`~embedtrain.schema.evaluation.EvalConfig`): MTEB on the final model.

:func:`check_eval_section` runs when a recipe is validated, so unknown task names, missing or malformed data
files fail before training starts; :func:`evaluate_after_training` runs after the final model is saved.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtrain.schema.evaluation import EvalConfig

if TYPE_CHECKING:
    from embedtrain.evaluation.runner import EvalReport

logger = logging.getLogger(__name__)


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
