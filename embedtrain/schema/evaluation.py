"""Evaluation schemas: a recipe's ``eval:`` section, and local task definitions (task-config YAML files).

:class:`EvalConfig` is the ``eval:`` section: MTEB tasks run on the final model after training.

Local task definitions are a few lines of YAML that point an MTEB task at local files.

Two kinds of definition share one schema:

* ``mteb_task: STSBenchmark`` reuses a built-in MTEB task class (its metadata, splits, main score and
  evaluation protocol) and replaces only where the data comes from. The bundled definitions in
  ``embedtrain/resources/eval_tasks/*.yaml`` are of this kind.
* ``type: sts | retrieval | classification`` defines a new task from scratch (it gets its own name,
  main score and splits) on top of mteb's abstract task of that type.

A task-config file is ``{data_dir: ..., tasks: [ {name: ..., ...}, ... ]}``; relative file names are
resolved against ``data_dir`` (itself relative to the YAML file; default: the YAML file's folder). The
bundled definitions have no ``data_dir``: they are resolved against the data directory the user names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, model_validator

from embedtrain.schema.base import LocatedModel, StrictModel, load_config_file

TaskKind = Literal["sts", "retrieval", "classification"]
FileType = Literal["jsonl", "json", "parquet", "csv"]

#: The column roles each task kind reads, and the column each role is found in by default.
ROLES: dict[str, dict[str, str]] = {
    "sts": {"sentence1": "sentence1", "sentence2": "sentence2", "score": "score"},
    "classification": {"text": "text", "label": "label"},
    "retrieval": {"id": "_id", "title": "title", "text": "text"},
}

#: Tasks run when none are named: the five STS tasks all-MiniLM-L6-v2's MTEB scores are quoted for.
DEFAULT_TASKS: tuple[str, ...] = ("STSBenchmark", "SICK-R", "STS12", "STS13", "STS14")

#: Default main score of a new task of each kind (what MTEB reports for that task type).
DEFAULT_MAIN_SCORE: dict[str, str] = {
    "sts": "cosine_spearman",
    "classification": "accuracy",
    "retrieval": "ndcg_at_10",
}


class EvalConfig(StrictModel):
    """MTEB tasks to run on ``<output_dir>/final`` once training is done.

    Paths (``data_dir``, ``task_config``, ``output``) are relative to the recipe file. ``data_dir``
    defaults to ``$EMBEDTRAIN_DATA_DIR``; ``output`` to ``<output_dir>/final/eval``. ``dims`` / ``layers``
    add a truncation grid. ``online`` lets task names without a local definition be downloaded by mteb.
    """

    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS), min_length=1)
    data_dir: str | None = None
    task_config: list[str] = Field(default_factory=list)
    batch_size: int = Field(default=64, gt=0)
    dims: list[PositiveInt] | None = Field(default=None, min_length=1)
    layers: list[PositiveInt] | None = Field(default=None, min_length=1)
    output: str | None = None
    online: bool = False


class GeneralizationConfig(StrictModel):
    """The generalization report written after training (see :mod:`embedtrain.evaluation.generalization`).

    Every local task whose data is available is scored before and after training and split into the tasks the
    run trained on (``trained_on``) and the others; a not-trained task that drops more than ``threshold`` points
    is a warning. ``enabled: auto`` runs it whenever a data directory is known (``data_dir``, else
    ``eval.data_dir``, else ``$EMBEDTRAIN_DATA_DIR``). ``tasks``: ``sts`` (fast, the default), ``all`` (adds
    retrieval and classification), or a list of task names.
    """

    enabled: bool | Literal["auto"] = "auto"
    trained_on: list[str] = Field(default_factory=list)
    tasks: Literal["sts", "all"] | list[str] = "sts"
    threshold: float = Field(default=0.5, ge=0)
    data_dir: str | None = None
    task_config: list[str] = Field(default_factory=list)
    batch_size: int = Field(default=64, gt=0)


class LocalTaskSpec(StrictModel):
    """One local task.

    ``files`` maps a split name to a file: ``{test: pairs.jsonl}`` for STS, ``{train: ..., test: ...}``
    for classification (the classifier is fitted on ``train``). Retrieval tasks name a BEIR folder in
    ``beir_dir`` instead (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``). ``columns`` maps
    a role (``sentence1``, ``sentence2``, ``score`` / ``text``, ``label`` / ``id``, ``title``, ``text``)
    to the column that holds it when the file uses other names.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    mteb_task: str | None = None
    type: TaskKind | None = None
    files: dict[str, str] = Field(default_factory=dict)
    beir_dir: str | None = None
    file_type: FileType | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    eval_splits: list[str] | None = Field(default=None, min_length=1)
    # Only for new tasks (no mteb_task):
    description: str | None = None
    main_score: str | None = None
    languages: list[str] = Field(default_factory=lambda: ["eng-Latn"], min_length=1)
    min_score: float | None = None
    max_score: float | None = None
    samples_per_label: int | None = Field(default=None, gt=0)
    n_experiments: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> LocalTaskSpec:
        if self.mteb_task is None and self.type is None:
            raise ValueError("give either 'mteb_task' (reuse a built-in MTEB task) or 'type' "
                             "(sts, retrieval or classification) for a new task")
        if self.mteb_task is not None:
            own = [f for f in ("description", "main_score", "min_score", "max_score", "samples_per_label",
                               "n_experiments") if getattr(self, f) is not None]
            if own:
                raise ValueError(f"{', '.join(own)} can only be set on new tasks (with 'type'), not on "
                                 f"a task that reuses mteb_task '{self.mteb_task}'")
        if self.type is not None:
            unknown = set(self.columns) - set(ROLES[self.type])
            if unknown:
                raise ValueError(f"unknown column role(s) {sorted(unknown)} for a {self.type} task; "
                                 f"roles are {sorted(ROLES[self.type])}")
        if self.type == "retrieval" and self.beir_dir is None:
            raise ValueError("a retrieval task needs 'beir_dir' (folder with corpus.jsonl, queries.jsonl, "
                             "qrels/<split>.tsv)")
        if self.type in ("sts", "classification") and not self.files:
            raise ValueError(f"a {self.type} task needs 'files' (split -> file)")
        if self.type == "classification" and "train" not in self.files:
            raise ValueError("a classification task needs a 'train' file to fit the classifier on")
        return self


class TaskConfigFile(LocatedModel):
    """A YAML file of local task definitions."""

    data_dir: str | None = None
    tasks: list[LocalTaskSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TaskConfigFile:
        seen: set[str] = set()
        for task in self.tasks:
            if task.name in seen:
                raise ValueError(f"task name '{task.name}' is defined twice")
            seen.add(task.name)
        return self


def load_task_config(path: str | Path) -> tuple[TaskConfigFile, dict[tuple[Any, ...], int]]:
    """Read and validate a task-config YAML; errors name the file, line and field.

    Returns the parsed file and its key -> line index (for later errors about a task's files).
    """
    config = load_config_file(TaskConfigFile, path, what="a task config")
    return config, config._lines
