"""Offline MTEB evaluation of checkpoints: local task data, per-checkpoint results, comparisons, grids, and the
sentence-transformers evaluators recipes run during training.

The heavy parts (mteb, torch) load when :func:`evaluate_checkpoint` and friends are first used.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "evaluate_checkpoint": "embedtrain.evaluation.runner",
    "EvalReport": "embedtrain.evaluation.runner",
    "resolve_tasks": "embedtrain.evaluation.tasks",
    "load_summary": "embedtrain.evaluation.results",
    "compare": "embedtrain.evaluation.compare",
    "check_eval_section": "embedtrain.evaluation.after_training",
    "evaluate_after_training": "embedtrain.evaluation.after_training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = list(_LAZY)
