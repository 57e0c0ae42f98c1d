"""Local MTEB tasks: mteb's own task classes with only the data loading replaced.

A task definition (:class:`~embedtrain.schema.evaluation.LocalTaskSpec`) either names a built-in
MTEB task (``mteb_task: STSBenchmark``) -- then the task used here is a subclass of that very class, so
metadata, splits, main score, score normalisation and the classifier / retrieval protocol are mteb's
-- or defines a new task of a given type on top of ``AbsTaskSTS`` / ``AbsTaskClassification`` /
``AbsTaskRetrieval``. In both cases :class:`LocalDataMixin` replaces ``load_data`` with a reader of
local files, so no code path goes to the Hugging Face hub.

Task names are resolved in this order: user task-config files (``--task-config``), the bundled
definitions in ``embedtrain/resources/eval_tasks/*.yaml`` (files looked up in the data directory), and -- only with
``online=True`` -- any built-in MTEB task, which mteb then downloads as usual.
"""

from __future__ import annotations

import logging
import os
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedtrain.errors import DataError, RecipeError, suggest
from embedtrain.evaluation import local_data
from embedtrain.schema.evaluation import (
    DEFAULT_MAIN_SCORE,
    DEFAULT_TASKS,
    ROLES,
    LocalTaskSpec,
    load_task_config,
)

logger = logging.getLogger(__name__)

#: Environment variable naming the default data directory of the bundled tasks.
DATA_DIR_ENV = "EMBEDTRAIN_DATA_DIR"
#: Environment variable overriding where the bundled task definitions are read from.
BUNDLED_TASKS_ENV = "EMBEDTRAIN_EVAL_TASKS_DIR"

_MTEB_TYPE = {"sts": "STS", "classification": "Classification", "retrieval": "Retrieval"}
_CATEGORY = {"sts": "t2t", "classification": "t2c", "retrieval": "t2t"}
_RETRIEVAL_METRICS = ("ndcg", "map", "recall", "precision", "mrr", "hit_rate")


@dataclass(frozen=True)
class TaskDefinition:
    """A local task definition and where it came from.

    ``data_dir`` is None for bundled definitions: their files live in the user's data directory.
    """

    spec: LocalTaskSpec
    source: Path
    line: int | None
    data_dir: Path | None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line else str(self.source)


class LocalDataMixin:
    """Put in front of an mteb task class: ``load_data`` reads local files, everything else is mteb's."""

    definition: TaskDefinition
    _local_reader: Callable[[], dict[str, Any]]

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:  # noqa: ARG002 -- mteb's signature
        if self.data_loaded:
            return
        self.dataset = self._local_reader()
        self.data_loaded = True

    def check_if_dataset_is_superseded(self) -> None:
        """Silenced: a local copy of a pinned benchmark version is run on purpose (e.g. to reproduce it)."""


# ---------------------------------------------------------------------------------------------------
# Where definitions come from
# ---------------------------------------------------------------------------------------------------
def bundled_tasks_dir() -> Path:
    """Folder with the bundled task definitions (package data, or $EMBEDTRAIN_EVAL_TASKS_DIR)."""
    from embedtrain.resources import resource_path

    override = os.environ.get(BUNDLED_TASKS_ENV)
    if override:
        return Path(override).expanduser()
    return resource_path("eval_tasks")


def _definitions_from_file(path: Path, *, bundled: bool) -> dict[str, TaskDefinition]:
    config, lines = load_task_config(path)
    if bundled:
        data_dir = None
    else:
        base = path.resolve().parent
        data_dir = (base / Path(config.data_dir).expanduser()) if config.data_dir else base
    return {spec.name: TaskDefinition(spec, path, lines.get(("tasks", i)), data_dir)
            for i, spec in enumerate(config.tasks)}


def load_definitions(task_configs: Sequence[str | Path] = ()) -> dict[str, TaskDefinition]:
    """All task definitions by name: bundled ones, overridden by those in ``task_configs`` (in order)."""
    found: dict[str, TaskDefinition] = {}
    folder = bundled_tasks_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.yaml")):
            for name, defn in _definitions_from_file(path, bundled=True).items():
                if name in found:
                    raise RecipeError(f"task '{name}' is also defined in {found[name].where}", file=path,
                                      line=defn.line)
                found[name] = defn
    else:
        logger.debug("no bundled task definitions at %s", folder)
    user: dict[str, TaskDefinition] = {}
    for path in task_configs:
        for name, defn in _definitions_from_file(Path(path), bundled=False).items():
            if name in user:
                raise RecipeError(f"task '{name}' is also defined in {user[name].where}", file=defn.source,
                                  line=defn.line)
            if name in found:
                logger.info("task %s from %s replaces the bundled definition", name, defn.where)
            user[name] = defn
    return {**found, **user}


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The data directory: the given one, else $EMBEDTRAIN_DATA_DIR, else None. A given one must exist."""
    source = "--data-dir"
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
        source = f"${DATA_DIR_ENV}"
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory not found (from {source})", file=path)
    return path.resolve()


# ---------------------------------------------------------------------------------------------------
# Building task objects
# ---------------------------------------------------------------------------------------------------
def _mteb_task_names() -> list[str]:
    """Names of all built-in MTEB tasks, superseded versions included (they are what papers quote)."""
    from mteb.get_tasks import TASK_LIST

    return [cls.metadata.name for cls in TASK_LIST]


def _kind_of(task_cls: type) -> str | None:
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    if issubclass(task_cls, AbsTaskSTS):
        return "sts"
    if issubclass(task_cls, AbsTaskRetrieval):
        return "retrieval"
    if issubclass(task_cls, AbsTaskClassification) and task_cls.metadata.type == "Classification":
        return "classification"
    return None


def _base_class(kind: str) -> type:
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    return {"sts": AbsTaskSTS, "classification": AbsTaskClassification, "retrieval": AbsTaskRetrieval}[kind]


def _known_main_scores(kind: str) -> list[str] | None:
    if kind == "sts":
        from mteb.abstasks.sts import STSMetrics

        return list(typing.get_type_hints(STSMetrics))
    if kind == "classification":
        from mteb.abstasks.classification import ClassificationMetrics

        return list(typing.get_type_hints(ClassificationMetrics))
    return None


def _check_main_score(defn: TaskDefinition, kind: str, main_score: str, k_values: Iterable[int]) -> None:
    known = _known_main_scores(kind)
    if known is None:
        known = [f"{m}_at_{k}" for m in _RETRIEVAL_METRICS for k in k_values]
    if main_score not in known:
        raise RecipeError(f"main_score '{main_score}' is not a {kind} metric; choose one of {known}",
                          file=defn.source, line=defn.line, field=f"tasks.{defn.spec.name}.main_score")


def _resolve_file(defn: TaskDefinition, name: str, data_dir: Path | None) -> Path:
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    base = defn.data_dir if defn.data_dir is not None else data_dir
    if base is None:
        raise DataError(f"task '{defn.spec.name}' reads its files from a data directory: pass --data-dir DIR, "
                        f"set eval.data_dir in the recipe, or set ${DATA_DIR_ENV}")
    return base / path


def _must_exist(path: Path, defn: TaskDefinition, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} of task '{defn.spec.name}' not found (defined in {defn.where})", file=path)
    return path


def _metadata_for_new_task(defn: TaskDefinition, kind: str, eval_splits: list[str]):
    from mteb.abstasks.task_metadata import TaskMetadata

    spec = defn.spec
    main_score = spec.main_score or DEFAULT_MAIN_SCORE[kind]
    return TaskMetadata(
        name=spec.name,
        description=spec.description or f"Local {kind} task defined in {defn.source.name}",
        dataset={"path": f"local/{spec.name}", "revision": "local"},
        type=_MTEB_TYPE[kind],
        category=_CATEGORY[kind],
        modalities=["text"],
        eval_splits=eval_splits,
        eval_langs=list(spec.languages),
        main_score=main_score,
    )


def build_task(defn: TaskDefinition, data_dir: Path | None):
    """An mteb task object for ``defn`` whose data comes from local files (checked to exist now)."""
    spec = defn.spec
    field = f"tasks.{spec.name}"
    attrs: dict[str, Any] = {"__module__": __name__, "__doc__": f"{spec.name}, read from local files."}
    if spec.mteb_task is not None:
        import mteb

        try:
            base = type(mteb.get_task(spec.mteb_task))
        except KeyError:
            hint = suggest(spec.mteb_task, _mteb_task_names())
            raise RecipeError(f"'{spec.mteb_task}' is not an MTEB task.{hint}", file=defn.source, line=defn.line,
                              field=f"{field}.mteb_task") from None
        kind = _kind_of(base)
        if kind is None:
            raise RecipeError(f"MTEB task '{spec.mteb_task}' is a {base.metadata.type} task; local data is "
                              "supported for STS, Classification and Retrieval tasks", file=defn.source,
                              line=defn.line, field=f"{field}.mteb_task")
        if spec.type is not None and spec.type != kind:
            raise RecipeError(f"type '{spec.type}' does not match MTEB task '{spec.mteb_task}' ({kind})",
                              file=defn.source, line=defn.line, field=f"{field}.type")
        if base.metadata.is_multilingual:
            raise RecipeError(f"MTEB task '{spec.mteb_task}' has several language subsets; local data is "
                              "supported for single-subset tasks only", file=defn.source, line=defn.line,
                              field=f"{field}.mteb_task")
        unknown = set(spec.columns) - set(ROLES[kind])
        if unknown:
            raise RecipeError(f"unknown column role(s) {sorted(unknown)} for a {kind} task; roles are "
                              f"{sorted(ROLES[kind])}", file=defn.source, line=defn.line, field=f"{field}.columns")
        eval_splits = list(spec.eval_splits or base.metadata.eval_splits)
        metadata = base.metadata if spec.name == base.metadata.name else \
            base.metadata.model_copy(update={"name": spec.name})
        if eval_splits != list(base.metadata.eval_splits):
            metadata = metadata.model_copy(update={"eval_splits": eval_splits})
    else:
        kind = spec.type
        base = _base_class(kind)
        eval_splits = list(spec.eval_splits or ([s for s in spec.files if s != "train"] if kind != "retrieval"
                                                else ["test"]))
        if not eval_splits:
            raise RecipeError("no evaluation split: 'files' has only 'train'", file=defn.source, line=defn.line,
                              field=f"{field}.files")
        metadata = _metadata_for_new_task(defn, kind, eval_splits)
        _check_main_score(defn, kind, metadata.main_score, getattr(base, "k_values", ()))
        if kind == "sts":
            attrs["min_score"] = spec.min_score if spec.min_score is not None else 0
            attrs["max_score"] = spec.max_score if spec.max_score is not None else 5
        if kind == "classification":
            for name in ("samples_per_label", "n_experiments"):
                if getattr(spec, name) is not None:
                    attrs[name] = getattr(spec, name)
    attrs["metadata"] = metadata
    cls = type(f"Local{base.__name__}", (LocalDataMixin, base), attrs)
    task = cls()
    task.definition = defn
    task._local_reader = _reader(defn, kind, task, eval_splits, data_dir)
    return task


def _reader(defn: TaskDefinition, kind: str, task, eval_splits: list[str], data_dir: Path | None):
    """Check that the files exist and return a function that reads them into ``task.dataset``."""
    from datasets import DatasetDict

    spec = defn.spec
    if kind == "retrieval":
        if spec.beir_dir is None:
            raise RecipeError("a retrieval task needs 'beir_dir'", file=defn.source, line=defn.line,
                              field=f"tasks.{spec.name}.beir_dir")
        folder = _must_exist(_resolve_file(defn, spec.beir_dir, data_dir), defn, "BEIR folder")
        for part in ("corpus.jsonl", "queries.jsonl", *(f"qrels/{s}.tsv" for s in eval_splits)):
            _must_exist(folder / part, defn, part)
        return lambda: {"default": {split: local_data.read_beir(folder, split, spec.columns)
                                    for split in eval_splits}}

    needed = list(eval_splits)
    if kind == "classification" and task.train_split not in needed:
        needed.insert(0, task.train_split)
    missing = [s for s in needed if s not in spec.files]
    if missing:
        raise RecipeError(f"no file for split(s) {missing} of task '{spec.name}' (files: {sorted(spec.files)})",
                          file=defn.source, line=defn.line, field=f"tasks.{spec.name}.files")
    paths = {s: _must_exist(_resolve_file(defn, spec.files[s], data_dir), defn, f"'{s}' file") for s in needed}
    read = local_data.read_sts if kind == "sts" else local_data.read_classification
    return lambda: {"default": DatasetDict({s: read(p, spec.columns, spec.file_type) for s, p in paths.items()})}


# ---------------------------------------------------------------------------------------------------
# Names -> tasks
# ---------------------------------------------------------------------------------------------------
def split_task_names(values: Iterable[str] | None) -> list[str]:
    """``["STS12,STS13", "SICK-R"]`` -> ``["STS12", "STS13", "SICK-R"]`` (order kept, duplicates dropped)."""
    names: list[str] = []
    for value in values or ():
        for part in str(value).split(","):
            part = part.strip()
            if part and part not in names:
                names.append(part)
    return names


def resolve_tasks(names: Sequence[str] | None, *, data_dir: str | Path | None = None,
                  task_configs: Sequence[str | Path] = (), online: bool = False,
                  source: Path | None = None, line: int | None = None, field: str | None = None) -> list:
    """Task objects for ``names`` (default :data:`DEFAULT_TASKS`); local ones never touch the network.

    ``source``/``line``/``field`` place errors about the names themselves (e.g. in a recipe).
    Raises :class:`RecipeError` for unknown names (with a suggestion) and :class:`DataError` for
    missing files.
    """
    names = split_task_names(names) or list(DEFAULT_TASKS)
    definitions = load_definitions(task_configs)
    resolved_dir = resolve_data_dir(data_dir)
    tasks = []
    for name in names:
        if name in definitions:
            tasks.append(build_task(definitions[name], resolved_dir))
            continue
        mteb_names = _mteb_task_names()
        if name in mteb_names:
            if not online:
                raise RecipeError(
                    f"MTEB task '{name}' has no local definition; define it in a task config (see "
                    "docs/evaluation.md) or allow downloading it with --online", file=source, line=line, field=field)
            import mteb

            tasks.append(mteb.get_task(name))
            continue
        hint = suggest(name, [*definitions, *mteb_names])
        local = ", ".join(sorted(definitions)) or "none"
        raise RecipeError(f"unknown task '{name}'.{hint} Local tasks: {local}", file=source, line=line,
                          field=field)
    return tasks


def load_task_data(tasks: Iterable) -> None:
    """Read (and so fully validate) the local data of every local task in ``tasks``."""
    for task in tasks:
        if isinstance(task, LocalDataMixin):
            task.load_data()


__all__ = ["DATA_DIR_ENV", "DEFAULT_TASKS", "LocalDataMixin", "TaskDefinition", "build_task",
           "bundled_tasks_dir", "load_definitions", "load_task_data", "resolve_data_dir", "resolve_tasks",
           "split_task_names"]
