"""Turning a model into a task-adapter model, and finding the task module of a loaded model.

A task checkpoint is an ordinary sentence-transformers folder whose first module is
:class:`~embedtrain.adapters.module.TaskAdapterTransformer`. :func:`embedtrain.models.load_model` loads it
like any other checkpoint: the module class is installed embedtrain code, handed to sentence-transformers
as an imported class, so no ``trust_remote_code`` is needed (see :mod:`embedtrain.models.trust`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from embedtrain.errors import CheckpointError
from embedtrain.models.trust import modules_json

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtrain.adapters.module import TaskAdapterTransformer
    from embedtrain.schema.tasks import TaskConfig

logger = logging.getLogger(__name__)

MODULE_CLASS = "embedtrain.adapters.module.TaskAdapterTransformer"


def is_task_checkpoint(path: str | Path) -> bool:
    """Whether the folder holds a task-adapter model."""
    return any(m.get("type") == MODULE_CLASS for m in modules_json(path))


def linear_and_embedding_modules(hf_model) -> list[str]:
    """Names of every ``nn.Linear`` and ``nn.Embedding`` of ``hf_model`` except the pooler (not part of the
    sentence embedding): the LoRA targets of jina-embeddings-v3."""
    from torch import nn

    names = []
    for name, mod in hf_model.named_modules():
        parts = name.split(".")
        if not isinstance(mod, (nn.Linear, nn.Embedding)) or "pooler" in parts:
            continue
        if any(p.startswith("lora_") for p in parts):  # the LoRA matrices of an adapter added before
            continue
        names.append(name[: -len(".base_layer")] if name.endswith(".base_layer") else name)
    return list(dict.fromkeys(names))


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
    every_module = linear_and_embedding_modules(first.model)
    for task in tasks:
        config = task.lora.to_peft()
        if config.target_modules is None:  # jina-embeddings-v3: every linear layer and embedding matrix
            config.target_modules = list(every_module)
        module.add_task(task.name, adapter=task.adapter_name, prompt=task.prompt, lora_config=config,
                        aliases=task.aliases)
    from embedtrain.adapters.mteb_map import mteb_map_for

    module.mteb_map = mteb_map_for(tasks)
    module.set_trainable(None)
    module.activate(None)
    return module
