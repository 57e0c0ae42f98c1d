"""Turning a model into a task-adapter model, and loading task-adapter checkpoints safely.

A task checkpoint is an ordinary sentence-transformers folder whose first module is
:class:`~embedtrain.adapters.module.TaskAdapterTransformer`. sentence-transformers >= 6 imports a
module class from outside its own package only with ``trust_remote_code=True``; :func:`load_task_model`
passes that flag only after checking that ``modules.json`` names nothing but sentence-transformers
classes and ours, and that no HF config asks for custom modelling code (``auto_map``), so the flag
cannot run anything but installed, known code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from embedtrain.errors import CheckpointError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtrain.adapters.config import TaskConfig
    from embedtrain.adapters.module import TaskAdapterTransformer

logger = logging.getLogger(__name__)

MODULE_CLASS = "embedtrain.adapters.module.TaskAdapterTransformer"
#: Module classes outside sentence-transformers that embedtrain checkpoints may reference.
TRUSTED_CLASSES = frozenset({MODULE_CLASS})


def modules_json(path: str | Path) -> list[dict]:
    """The parsed ``modules.json`` of a checkpoint folder ([] when there is none)."""
    file = Path(path) / "modules.json"
    if not file.is_file():
        return []
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"malformed modules.json: {exc.msg}", file=file, line=exc.lineno) from None


def is_task_checkpoint(path: str | Path) -> bool:
    """Whether the folder holds a task-adapter model."""
    return any(m.get("type") == MODULE_CLASS for m in modules_json(path))


def needs_embedtrain_classes(path: str | Path) -> bool:
    """True when ``path`` references embedtrain module classes; raises if it references any other custom code.

    Used by :func:`embedtrain.models.load_model` to decide on ``trust_remote_code``.
    """
    modules = modules_json(path)
    custom = [m.get("type", "") for m in modules if not str(m.get("type", "")).startswith("sentence_transformers.")]
    if not custom:
        return False
    unknown = [c for c in custom if c not in TRUSTED_CLASSES]
    if unknown:
        raise CheckpointError(f"modules.json references custom code {unknown}; embedtrain only loads "
                              f"sentence-transformers modules and {sorted(TRUSTED_CLASSES)}",
                              file=Path(path) / "modules.json")
    for module in modules:
        config = Path(path) / module.get("path", "") / "config.json"
        if config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8")):
            raise CheckpointError("config.json asks for custom modelling code (auto_map); not loading it",
                                  file=config, field="auto_map")
    return True


def load_task_model(path: str | Path, *, device: str | None = None, **kwargs) -> SentenceTransformer:
    """Load a task-adapter checkpoint (or any sentence-transformers folder) from a local path."""
    from embedtrain.models.resolve import load_model

    model = load_model(path, device=device, **kwargs)
    return model


def task_module(model: SentenceTransformer) -> TaskAdapterTransformer | None:
    """The task-adapter module of ``model`` (None for an ordinary model)."""
    from embedtrain.adapters.module import TaskAdapterTransformer

    first = model[0]
    return first if isinstance(first, TaskAdapterTransformer) else None


def require_task_module(model: SentenceTransformer, where: str | Path | None = None) -> TaskAdapterTransformer:
    module = task_module(model)
    if module is None:
        raise CheckpointError("not a task-adapter model (its first module is "
                              f"{type(model[0]).__name__}, not TaskAdapterTransformer)", file=where)
    return module


def attach_tasks(model: SentenceTransformer, tasks: list[TaskConfig]) -> TaskAdapterTransformer:
    """Give ``model`` (a plain sentence-transformer) one LoRA adapter per task, in place.

    Tasks that share an adapter name share its weights. The base stays as loaded; call
    :meth:`TaskAdapterTransformer.set_trainable` to choose what trains.
    """
    from sentence_transformers.base.modules import Transformer
    from transformers.integrations.peft import PeftAdapterMixin

    from embedtrain.adapters.module import TaskAdapterTransformer

    first = model[0]
    if type(first) is not Transformer and not isinstance(first, TaskAdapterTransformer):
        raise CheckpointError(f"task adapters need a model whose first module is a Transformer, "
                              f"got {type(first).__name__}")
    if not isinstance(first.model, PeftAdapterMixin):
        raise CheckpointError(f"{type(first.model).__name__} does not support peft adapters")
    module = TaskAdapterTransformer.from_transformer(first)
    for task in tasks:
        module.add_task(task.name, adapter=task.adapter_name, prompt=task.prompt,
                        lora_config=task.lora.to_peft(), aliases=task.aliases)
    from embedtrain.adapters.mteb_map import mteb_map_for

    module.mteb_map = mteb_map_for(tasks)
    module.set_trainable(None)
    module.activate(None)
    return module
