"""A recipe's ``eval:`` section (:class:`~embedtrain.schema.evaluation.EvalConfig`): MTEB on the final model.

:func:`check_eval_section` runs when a recipe is validated, so unknown task names, missing or malformed data
files fail before training starts; :func:`evaluate_after_training` runs after the final model is saved.
"""

from __future__ import annotations

import logging
import os
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


def report_data_dir(recipe: Any) -> Path | None:
    """Where the report's task data lives: ``generalization.data_dir``, ``eval.data_dir``, ``$EMBEDTRAIN_DATA_DIR``."""
    from embedtrain.evaluation.tasks import DATA_DIR_ENV

    cfg = recipe.generalization
    for value in (cfg.data_dir, getattr(recipe.eval, "data_dir", None)):
        if value:
            path = recipe.resolve_path(value)
            return path if path.is_dir() else None
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env and Path(env).expanduser().is_dir() else None


def start_model_cache() -> Path:
    """Where the start model's evaluation results are kept between runs (``$EMBEDTRAIN_CACHE/eval``)."""
    root = os.environ.get("EMBEDTRAIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "embedtrain")
    return Path(root) / "eval"


def generalization_after_training(recipe: Any, start: str | Path, final_dir: str | Path):
    """The generalization report of a finished run (None when it is off or no task data is available).

    Written to ``<final>/eval/generalization/{report.md, report.json}``; warnings are logged.
    """
    import json

    from embedtrain.evaluation.generalization import KINDS, generalization_report
    from embedtrain.evaluation.results import model_label, weights_fingerprint
    from embedtrain.models.resolve import resolve_model_path

    cfg = recipe.generalization
    if cfg.enabled is False:
        return None
    data_dir = report_data_dir(recipe)
    task_configs = [recipe.resolve_path(p) for p in cfg.task_config]
    if data_dir is None and not task_configs:
        if cfg.enabled is True:
            logger.warning("generalization report: no data directory (generalization.data_dir, eval.data_dir or "
                           "$EMBEDTRAIN_DATA_DIR); skipped")
        else:
            logger.info("generalization report skipped: no evaluation data directory is set")
        return None
    start_dir = resolve_model_path(start)
    out = Path(final_dir) / "eval" / "generalization"
    kinds = KINDS.get(cfg.tasks) if isinstance(cfg.tasks, str) else None
    cached_start = start_model_cache() / f"{model_label(start, start_dir)}-{weights_fingerprint(start_dir)}"
    report = generalization_report(
        start_dir, final_dir, trained_on=list(cfg.trained_on), kinds=kinds or set(), names=None if kinds else
        list(cfg.tasks), data_dir=data_dir, task_configs=task_configs, threshold=cfg.threshold,
        batch_size=cfg.batch_size, trust_remote_code=getattr(recipe.model, "trust_remote_code", False), output=out,
        start_output=cached_start)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report.markdown(), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    for warning in report.warnings:
        logger.warning("generalization: %s", warning)
    mean = report.mean_delta(False)
    if mean is not None:
        logger.info("generalization: mean change on %d not-trained task(s) %+.2f (report: %s)",
                    len(report.not_trained), mean, out / "report.md")
    return report
