"""``embedtrain export-task``: one task of a task-adapter checkpoint as a plain sentence-transformers model.

The task's LoRA adapter is merged into the base weights (``W + scaling * B @ A`` per adapted layer,
computed by peft's ``get_delta_weight``), the other adapters are dropped, and the task's prompt
becomes the model's default prompt, so ``exported.encode(texts)`` equals
``model.encode(texts, task=TASK)`` and the result loads anywhere with plain
``SentenceTransformer(path)`` (no embedtrain needed).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from embedtrain.adapters.module import require_task_module, save_base
from embedtrain.errors import CheckpointError
from embedtrain.io.checkpoints import RECIPE_FILE, atomic_save, check_new_dir

logger = logging.getLogger(__name__)

#: Files beside the weights that describe how the model was made; copied into the export.
PROVENANCE_FILES = (RECIPE_FILE,)


def merged_model(model, task: str, *, where: str | Path | None = None):
    """An adapter-free copy of task model ``model`` for ``task`` (adapter merged, prompt as default)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    module = require_task_module(model, where)
    try:
        task = module.resolve_task(task)
    except ValueError as exc:
        raise CheckpointError(str(exc), file=where, field="task") from None
    if task is None:
        raise CheckpointError("name a task to export", file=where, field="task")
    with tempfile.TemporaryDirectory(prefix="embedtrain-export-") as tmp:
        save_base(module, tmp, module.base_state_dict(merge_task=task))
        module.processor.save_pretrained(tmp)
        module.save_config(tmp)
        plain = Transformer.load(tmp, local_files_only=True)
        plain.model.load_state_dict(module.base_state_dict(merge_task=task))  # own the tensors, not the tmp files
    prompts = {k: v for k, v in (model.prompts or {}).items()}
    prompt = module.routes[task].prompt
    default_prompt_name = model.default_prompt_name
    if prompt:
        prompts[task] = prompt
        default_prompt_name = task
    return SentenceTransformer(modules=[plain, *list(model)[1:]], prompts=prompts,
                               default_prompt_name=default_prompt_name,
                               similarity_fn_name=model.similarity_fn_name, truncate_dim=model.truncate_dim,
                               device=str(model.device))


def export_task(checkpoint: str | Path, task: str, out: str | Path, *, overwrite: bool = False,
                trust_remote_code: bool = False) -> Path:
    """Write ``task`` of the task checkpoint at ``checkpoint`` to ``out`` as a plain model; return ``out``."""
    from embedtrain.models.resolve import load_model, resolve_model_path

    out = check_new_dir(out, overwrite=overwrite, protect=(resolve_model_path(checkpoint),))
    model = load_model(checkpoint, trust_remote_code=trust_remote_code)
    exported = merged_model(model, task, where=checkpoint)

    def write(folder: str) -> None:
        exported.save(folder)
        for name in PROVENANCE_FILES:
            src = Path(checkpoint) / name
            if src.is_file():
                shutil.copy2(src, Path(folder) / name)

    atomic_save(write, out)
    logger.info("exported task '%s' of %s to %s", task, checkpoint, out)
    return out
