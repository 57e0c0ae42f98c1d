"""Typed ``tasks:`` section of a recipe: one LoRA adapter (and prompt) per task, jina-embeddings-v3 style.

A task recipe freezes the base model and trains one LoRA adapter per task on that task's own data::

    tasks:
      - name: retrieval.query
        prompt: "Represent the query for retrieving evidence documents: "
        aliases: [query]                 # encode_query() / mteb queries land here
        passage_task: retrieval.passage  # passage columns of this task's datasets use that adapter
        lora: {r: 4, alpha: 1}           # jina-embeddings-v3's settings (the default)
        datasets: [{name: qa, path: qa.jsonl, format: pairs}]
        loss: {name: mnrl}
      - name: retrieval.passage
        prompt: "Represent the document for retrieval: "
        aliases: [document, passage]
        lora: {r: 4, alpha: 1}
      - name: text-matching
        lora: {r: 4, alpha: 1}
        datasets: [{name: stsb, path: stsb.jsonl, format: scored_pairs}]
        loss: {name: cosent}

Each task dataset is an ordinary :class:`~embedtrain.schema.data.DatasetConfig`; a task's ``loss``
(or the dataset's own) falls back to the recipe's top-level ``loss``. Tasks may share one adapter by
naming the same ``adapter`` (their LoRA settings must then agree); the adapter name defaults to the
task name with every character other than letters, digits, ``_`` and ``-`` replaced by ``_`` (peft
keeps adapters in ``nn.ModuleDict``s, whose keys cannot contain dots).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from embedtrain.schema.base import StrictModel
from embedtrain.schema.data import DatasetConfig, EvaluatorConfig
from embedtrain.schema.loss import LossConfig


def default_adapter_name(task: str) -> str:
    """Adapter name for a task that does not name one: ``retrieval.query`` -> ``retrieval_query``."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", task)


class LoraSpec(StrictModel):
    """peft LoRA settings of one adapter (see :class:`peft.LoraConfig`).

    The defaults are jina-embeddings-v3's task adapters (Sturua et al., 2024, arXiv:2409.10173): rank 4,
    alpha 1, no dropout, on every linear layer and every embedding matrix of the encoder
    (``target_modules: null``; the unused BERT pooler is left out). A list adapts only the modules whose
    names end with its entries, e.g. ``[query, value]`` (peft's default for BERT-like encoders) or
    ``[query, key, value, dense]`` (every linear layer of a block, no embeddings).
    """

    r: int = Field(default=4, gt=0)
    alpha: float = Field(default=1.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None
    use_rslora: bool = False

    def to_peft(self):
        """The equivalent :class:`peft.LoraConfig` (feature-extraction: no task head)."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules) if self.target_modules else None,
                          bias="none", use_rslora=self.use_rslora)


class TaskConfig(StrictModel):
    """One task: its adapter, prompt and training data."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    adapter: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]+$")
    prompt: str | None = None
    aliases: list[str] = Field(default_factory=list)
    passage_task: str | None = None
    lora: LoraSpec = Field(default_factory=LoraSpec)
    datasets: list[DatasetConfig] = Field(default_factory=list)
    loss: LossConfig | None = None
    evaluators: list[EvaluatorConfig] = Field(default_factory=list)
    #: MTEB task types this task's adapter serves, e.g. ``[STS, PairClassification]`` or, for one side
    #: of an asymmetric task, ``["Retrieval:query", "Reranking:query"]`` (see embedtrain.adapters.mteb_map).
    mteb_types: list[str] = Field(default_factory=list)

    @property
    def adapter_name(self) -> str:
        return self.adapter or default_adapter_name(self.name)


def check_tasks(tasks: list[TaskConfig]) -> list[TaskConfig]:
    """Cross-task rules: unique names/aliases/dataset names, known passage tasks, consistent shared adapters."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"task name '{dup}' is used twice; names must be unique")
    claimed: dict[str, str] = {n: n for n in names}
    datasets: set[str] = set()
    adapters: dict[str, TaskConfig] = {}
    mteb_claims: dict[str, str] = {}
    for task in tasks:
        for alias in task.aliases:
            if alias in claimed and claimed[alias] != task.name:
                raise ValueError(f"task '{task.name}': alias '{alias}' is already the name or alias of "
                                 f"task '{claimed[alias]}'")
            claimed[alias] = task.name
        if task.passage_task is not None and task.passage_task not in names:
            raise ValueError(f"task '{task.name}': passage_task '{task.passage_task}' is not a task; "
                             f"tasks are {names}")
        for ds in task.datasets:
            if ds.name in datasets:
                raise ValueError(f"dataset name '{ds.name}' is used twice; names must be unique across tasks")
            datasets.add(ds.name)
        for kind in task.mteb_types:
            if kind in mteb_claims and mteb_claims[kind] != task.name:
                raise ValueError(f"MTEB type '{kind}' is claimed by tasks '{mteb_claims[kind]}' and '{task.name}'")
            mteb_claims[kind] = task.name
        first = adapters.setdefault(task.adapter_name, task)
        if first is not task and first.lora != task.lora:
            raise ValueError(f"tasks '{first.name}' and '{task.name}' share adapter '{task.adapter_name}' "
                             "but give it different lora settings")
    if not any(t.datasets for t in tasks):
        raise ValueError("no task has datasets; give at least one task a 'datasets' list")
    return tasks


#: Type of ``Recipe.tasks``: a non-empty list of tasks checked as a whole by :func:`check_tasks`.
TaskList = Annotated[list[TaskConfig], Field(min_length=1), AfterValidator(check_tasks)]


class TaskRoute(StrictModel):
    """What a saved checkpoint records per task (``task_adapters.json``): adapter and prompt."""

    adapter: str | None
    prompt: str | None = None


class TaskAdaptersFile(StrictModel):
    """Schema of ``task_adapters.json`` next to the base weights of a task-adapter checkpoint."""

    format_version: int = 1
    tasks: dict[str, TaskRoute]
    aliases: dict[str, str] = Field(default_factory=dict)
    default_task: str | None = None
    #: MTEB task type (``STS``) or type and side (``Retrieval:query``) -> task; see embedtrain.adapters.mteb_map.
    mteb: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _targets_exist(self) -> TaskAdaptersFile:
        for alias, target in [*self.aliases.items(), *self.mteb.items()]:
            if target not in self.tasks:
                raise ValueError(f"'{alias}' points at unknown task '{target}'")
        if self.default_task is not None and self.default_task not in self.tasks:
            raise ValueError(f"default_task '{self.default_task}' is not a task")
        return self
