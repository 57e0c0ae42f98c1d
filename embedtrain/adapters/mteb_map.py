"""Which task adapter an MTEB task uses: a map from MTEB task type (and side) to a task of the model.

Keys are an MTEB task type (``task.metadata.type``: ``STS``, ``Classification``, ``Retrieval``...)
or a type and side for asymmetric tasks (``Retrieval:query``, ``Retrieval:document``); values are
task names of the checkpoint. The map is stored in the checkpoint (``task_adapters.json`` -> ``mteb``),
built from the recipe's ``tasks[].mteb_types``; when no task declares any, :data:`DEFAULT_MTEB_MAP`
(jina-embeddings-v3's task names) is used for the tasks that exist.

During an MTEB run, :func:`mteb_task_scope` makes the mapped task the model's default for the span of
one task's encoding, and points the ``query`` / ``document`` task aliases (what ``encode_query`` /
``encode_document`` pass, and mteb calls those for the two sides of retrieval) at the mapped sides.
Task types without an entry run the model as it is (default task, or the base model).

mteb never passes the task to ``model.encode``, so the harness encoder
(``embedtrain.evaluation.encoder.CachingEncoder``, behind ``embedtrain eval``) wraps every ``encode`` in
:func:`mteb_task_scope`; any other mteb wrapper can do the same::

    with mteb_task_scope(model, task_metadata):
        embeddings = model.encode(texts)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedtrain.schema.tasks import TaskConfig

#: MTEB task type (or type:side) -> jina-embeddings-v3 task name.
DEFAULT_MTEB_MAP: dict[str, str] = {
    "STS": "text-matching",
    "PairClassification": "text-matching",
    "BitextMining": "text-matching",
    "Summarization": "text-matching",
    "Classification": "classification",
    "MultilabelClassification": "classification",
    "Clustering": "separation",
    "Retrieval:query": "retrieval.query",
    "Retrieval:document": "retrieval.passage",
    "Reranking:query": "retrieval.query",
    "Reranking:document": "retrieval.passage",
    "InstructionRetrieval:query": "retrieval.query",
    "InstructionRetrieval:document": "retrieval.passage",
}
SIDES = ("query", "document")


def mteb_map_for(tasks: list[TaskConfig]) -> dict[str, str]:
    """The map for a recipe's tasks: their ``mteb_types``, else the default map restricted to them."""
    declared = {kind: t.name for t in tasks for kind in t.mteb_types}
    if declared:
        return declared
    names = {t.name for t in tasks}
    return {kind: task for kind, task in DEFAULT_MTEB_MAP.items() if task in names}


def lookup(mapping: dict[str, str], task_type: str, side: str | None = None) -> str | None:
    """Task for ``task_type`` (and ``side``): ``Type:side`` first, then ``Type``; None when unmapped."""
    if side is not None and f"{task_type}:{side}" in mapping:
        return mapping[f"{task_type}:{side}"]
    return mapping.get(task_type)


def _task_type(task: Any) -> str:
    """``task`` may be a type string, an mteb task or its metadata."""
    if isinstance(task, str):
        return task
    metadata = getattr(task, "metadata", task)
    return str(getattr(metadata, "type"))


@contextmanager
def mteb_task_scope(model, task: Any, mapping: dict[str, str] | None = None) -> Iterator[None]:
    """Within the block, ``model`` encodes with the adapters the map gives for ``task``'s MTEB type.

    A no-op for models without task adapters and for unmapped types.
    """
    from embedtrain.adapters.module import task_module

    module = task_module(model)
    if module is None:
        yield
        return
    mapping = module.mteb_map if mapping is None else mapping
    kind = _task_type(task)
    sides = {side: lookup(mapping, kind, side) for side in SIDES}
    default = lookup(mapping, kind) or sides["document"]
    aliases = {side: task for side, task in sides.items() if task is not None}
    if default is None and not aliases:
        yield
        return
    with module.scoped(default_task=default, aliases=aliases):
        yield
