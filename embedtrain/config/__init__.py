"""Recipe schema and loading.

The names below are imported lazily so that low-level modules (``embedtrain.config.base``) can be used by
config sections that the recipe itself imports (evaluation, mining, adapters) without an import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_recipe": "embedtrain.config.loading",
    "DatasetConfig": "embedtrain.config.recipe",
    "EvaluatorConfig": "embedtrain.config.recipe",
    "LossConfig": "embedtrain.config.recipe",
    "ModelConfig": "embedtrain.config.recipe",
    "Recipe": "embedtrain.config.recipe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'embedtrain.config' has no attribute {name!r}")
