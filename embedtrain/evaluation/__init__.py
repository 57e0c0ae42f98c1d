"""Offline MTEB evaluation of checkpoints: local task data, per-checkpoint results, comparisons, grids.

Import-light on purpose (the recipe schema imports :mod:`embedtrain.evaluation.config`); the heavy
parts (mteb, torch) load when :func:`evaluate_checkpoint` and friends are first used.
"""

from __future__ import annotations

from typing import Any

from embedtrain.evaluation.config import EvalConfig, check_eval_section, evaluate_after_training
from embedtrain.evaluation.task_config import DEFAULT_TASKS, LocalTaskSpec, TaskConfigFile

_LAZY = {
    "evaluate_checkpoint": "embedtrain.evaluation.runner",
    "EvalReport": "embedtrain.evaluation.runner",
    "resolve_tasks": "embedtrain.evaluation.tasks",
    "load_summary": "embedtrain.evaluation.results",
    "compare": "embedtrain.evaluation.compare",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["DEFAULT_TASKS", "EvalConfig", "LocalTaskSpec", "TaskConfigFile", "check_eval_section",
           "evaluate_after_training", *_LAZY]
