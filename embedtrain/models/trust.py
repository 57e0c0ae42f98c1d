"""No code from a model folder runs unless the user says so.

A model folder can ask to run its own Python code in two ways: an ``auto_map`` entry in one of its JSON
configs (``config.json``, ``tokenizer_config.json``, processor configs...), which makes transformers import
``modeling_*.py`` / ``tokenization_*.py`` from the folder, and a ``modules.json`` entry whose ``type`` is a
class outside sentence-transformers. :func:`custom_code_requests` lists both; :func:`check_model_code`
refuses a folder that makes any such request unless ``trust_remote_code`` is set (``--trust-remote-code`` /
``model.trust_remote_code: true``).

embedtrain's own module classes (task adapters, latent-attention pooling) are installed code, not code from
the folder: they are handed to sentence-transformers as already-imported classes (:data:`EMBEDTRAIN_MODULES`),
so those checkpoints load with ``trust_remote_code`` off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from embedtrain.errors import CheckpointError

#: ``modules.json`` types that name embedtrain's own (installed) module classes: type -> "module:Class".
EMBEDTRAIN_MODULES: dict[str, str] = {
    "embedtrain.adapters.module.TaskAdapterTransformer": "embedtrain.adapters.module:TaskAdapterTransformer",
    "embedtrain.models.pooling.LatentAttentionPooling": "embedtrain.models.pooling:LatentAttentionPooling",
}
#: JSON keys through which a config asks transformers to import code from the model folder.
CODE_KEYS = ("auto_map", "custom_pipelines")


def modules_json(path: str | Path) -> list[dict]:
    """The parsed ``modules.json`` of a checkpoint folder ([] when there is none)."""
    file = Path(path) / "modules.json"
    if not file.is_file():
        return []
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"malformed modules.json: {exc}", file=file) from None
    if not isinstance(data, list):
        raise CheckpointError("modules.json must be a list of modules", file=file)
    return [m for m in data if isinstance(m, dict)]


def _has_code_key(data: Any) -> str | None:
    if isinstance(data, dict):
        for key, value in data.items():
            if key in CODE_KEYS and value:
                return key
            found = _has_code_key(value)
            if found:
                return found
    elif isinstance(data, list):
        for item in data:
            found = _has_code_key(item)
            if found:
                return found
    return None


def custom_code_requests(path: str | Path) -> list[str]:
    """Every way the folder at ``path`` asks to run its own code, as ``"<file>: <what>"`` lines."""
    path = Path(path)
    found: list[str] = []
    for module in modules_json(path):
        kind = str(module.get("type", ""))
        if kind and not kind.startswith("sentence_transformers.") and kind not in EMBEDTRAIN_MODULES:
            found.append(f"{path / 'modules.json'}: module class {kind}")
    for file in sorted(path.rglob("*.json")):
        if any(part.startswith(".") for part in file.relative_to(path).parts) or file.stat().st_size > 50_000_000:
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue
        key = _has_code_key(data)
        if key:
            found.append(f"{file}: {key}")
    return found


def check_model_code(path: str | Path, *, trust_remote_code: bool = False) -> None:
    """Refuse a model folder that asks to run its own code, unless ``trust_remote_code``."""
    if trust_remote_code:
        return
    requests = custom_code_requests(path)
    if requests:
        more = f" (and {len(requests) - 1} more)" if len(requests) > 1 else ""
        raise CheckpointError(f"this model folder asks to run its own Python code ({requests[0]}{more}); embedtrain "
                              "runs no code from a model folder unless you pass --trust-remote-code (recipes: "
                              "model.trust_remote_code: true)", file=path)


def embedtrain_module_classes(path: str | Path) -> dict[str, type]:
    """The embedtrain module classes the folder's ``modules.json`` names, imported (type -> class)."""
    import importlib

    classes: dict[str, type] = {}
    for module in modules_json(path):
        kind = str(module.get("type", ""))
        if kind in EMBEDTRAIN_MODULES:
            module_name, _, class_name = EMBEDTRAIN_MODULES[kind].partition(":")
            classes[kind] = getattr(importlib.import_module(module_name), class_name)
    return classes
