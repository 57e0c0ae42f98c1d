"""Training a task recipe: frozen base, one LoRA adapter per task, all adapters in one run.

Every task dataset is validated with the ordinary dataset/loss checks of
:mod:`embedtrain.training.prepare` (run on a per-task view of the recipe, with error locations mapped
back to ``tasks[i]...``). Training is one ``SentenceTransformerTrainer`` run over all task datasets:
its multi-dataset sampler draws each batch from a single dataset, hence from a single task, and the
``router_mapping`` argument (``{dataset: {column: task}}``) makes the data collator tag each column
with its task, which :class:`~embedtrain.adapters.module.TaskAdapterTransformer` turns into an adapter
switch before that column's forward pass. Query-side columns use the task's adapter; passage-side
columns use the ``passage_task``'s adapter when one is named (retrieval.query / retrieval.passage).
Only LoRA weights train; the base model is bit-for-bit unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from embedtrain.config.recipe import PromptsConfig, Recipe
from embedtrain.data.formats import FORMATS
from embedtrain.errors import LocatedError, RecipeError

logger = logging.getLogger(__name__)

#: Defaults for the ``training:`` section of a task recipe (LoRA wants a larger learning rate).
ADAPTER_TRAINING_DEFAULTS: dict[str, Any] = {"learning_rate": 2e-4}
_REMAPPED = ("datasets", "loss", "evaluators")


def task_view(recipe: Recipe, index: int) -> Recipe:
    """The recipe as if task ``index``'s datasets/loss/evaluators were the top-level ones.

    Line numbers of the task's keys are moved to the top-level locations, so the shared
    preparation code reports the right lines.
    """
    assert recipe.tasks is not None
    task = recipe.tasks[index]
    view = recipe.model_copy(update={
        "tasks": None, "datasets": task.datasets, "loss": task.loss or recipe.loss,
        "evaluators": task.evaluators, "prompts": PromptsConfig(),
    })
    lines: dict[tuple, int] = {}
    for loc, line in recipe._lines.items():
        if loc and loc[0] in _REMAPPED and not (loc[0] == "loss" and task.loss is None):
            continue
        lines[loc] = line
    prefix = ("tasks", index)
    for loc, line in recipe._lines.items():
        if loc[:2] == prefix and len(loc) > 2 and loc[2] in _REMAPPED:
            lines[loc[2:]] = line
    view._source = recipe._source
    view._lines = lines
    return view


def _relocated(exc: LocatedError, recipe: Recipe, index: int) -> LocatedError:
    """``exc`` with a top-level field (``datasets[0].path``) renamed to its task location."""
    task = recipe.tasks[index]  # type: ignore[index]
    field = exc.field or ""
    head = field.split(".", 1)[0].split("[", 1)[0]
    if exc.file != (str(recipe.source) if recipe.source else None) or head not in _REMAPPED:
        return exc
    if head == "loss" and task.loss is None:
        return exc
    return type(exc)(exc.reason, file=exc.file, line=exc.line, field=f"tasks[{index}].{field}")


def prepare_tasks(recipe: Recipe) -> list:
    """Validate every task's datasets and losses; return their ``PreparedDataset``s (all tasks, in order)."""
    from embedtrain.training.prepare import prepare_data

    assert recipe.tasks is not None
    if recipe.datasets:
        raise RecipeError("a recipe with 'tasks' trains only the tasks' datasets; move these datasets under "
                          "a task", file=recipe.source, line=recipe.line_of("datasets"), field="datasets")
    if recipe.evaluators:
        raise RecipeError("put evaluators under the task whose adapter they should use "
                          "(tasks[i].evaluators)", file=recipe.source, line=recipe.line_of("evaluators"),
                          field="evaluators")
    prepared = []
    for i, task in enumerate(recipe.tasks):
        for j, ds in enumerate(task.datasets):
            if ds.loss is None and task.loss is None and recipe.loss is None:
                raise RecipeError("no loss for this dataset: set 'loss' on the dataset, its task or the recipe",
                                  file=recipe.source, line=recipe.line_of("tasks", i, "datasets", j),
                                  field=f"tasks[{i}].datasets[{j}]")
        try:
            prepared.extend(prepare_data(task_view(recipe, i)))
        except LocatedError as exc:
            raise _relocated(exc, recipe, i) from None
    return prepared


def router_mapping(recipe: Recipe, prepared: list) -> dict[str, dict[str, str]]:
    """``{dataset: {column: task}}``: query-side columns -> the task, passage-side -> its passage task."""
    assert recipe.tasks is not None
    owner = {ds.name: task for task in recipe.tasks for ds in task.datasets}
    mapping: dict[str, dict[str, str]] = {}
    for p in prepared:
        task = owner[p.config.name]
        spec = FORMATS[p.config.format]
        mapping[p.config.name] = {
            column: task.name if column in spec.query_roles else (task.passage_task or task.name)
            for column in p.dataset.column_names if column != "score"
        }
    return mapping


def _task_evaluators(recipe: Recipe) -> dict[str, list]:
    from embedtrain.training.sts_check import build_sts_evaluators

    assert recipe.tasks is not None
    found = {}
    for i, task in enumerate(recipe.tasks):
        if task.evaluators:
            try:
                found[task.name] = build_sts_evaluators(task_view(recipe, i))
            except LocatedError as exc:
                raise _relocated(exc, recipe, i) from None
    return found


def _run_task_evaluators(evaluators: dict[str, list], model, module) -> dict[str, float]:
    from embedtrain.training.sts_check import run_sts

    scores = {}
    for task, evs in evaluators.items():
        with module.using(task):
            for name, score in run_sts(evs, model).items():
                scores[f"{task}/{name}"] = score
    return scores


def train_tasks(recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
                callbacks: list[TrainerCallback] | None = None, rich_progress: bool = False):
    """Train every task adapter of ``recipe`` in one run; return a :class:`~embedtrain.training.TrainResult`."""
    from sentence_transformers import SentenceTransformerTrainer

    from embedtrain.adapters.checkpoint import attach_tasks
    from embedtrain.losses import build_loss
    from embedtrain.training.checkpoints import check_output_dir
    from embedtrain.training.trainer import build_training_args, load_start_model, run_training

    assert recipe.tasks is not None
    prepared = prepare_tasks(recipe)
    resume_from = check_output_dir(recipe, resume, overwrite)
    evaluators = _task_evaluators(recipe)

    model = load_start_model(recipe)
    module = attach_tasks(model, recipe.tasks)
    mapping = router_mapping(recipe, prepared)
    used_tasks = {t for cols in mapping.values() for t in cols.values()}
    for task in recipe.tasks:
        if task.name not in used_tasks:
            logger.warning("task '%s' gets no training data; its adapter stays at its initialisation (LoRA B = 0, "
                           "i.e. the base model)", task.name)
    trained = [a for a in (module.routes[t].adapter for t in module.tasks if t in used_tasks) if a is not None]
    names = module.set_trainable(trained)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    logger.info("training %d LoRA tensors (%d of %d parameters, %.2f%%) for adapters %s", len(names), n_train,
                n_total, 100.0 * n_train / max(n_total, 1), sorted(set(trained)))

    train_datasets = {p.config.name: p.dataset for p in prepared}
    losses = {p.config.name: build_loss(p.loss, model, p.loss_context) for p in prepared}
    prompts = {p.config.name: p.prompts for p in prepared if p.prompts}
    settings = recipe.model_copy(update={"training": {**ADAPTER_TRAINING_DEFAULTS, **recipe.training}})
    args = build_training_args(settings, prompts)
    args.router_mapping = mapping
    if "ddp_find_unused_parameters" not in recipe.training:
        args.ddp_find_unused_parameters = True  # adapters of other tasks get no gradient in a step
    logger.info("tasks per dataset: %s", {n: sorted(set(c.values())) for n, c in mapping.items()})

    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_datasets, loss=losses,
                                         callbacks=callbacks)

    def score(m) -> dict[str, float]:
        scores = _run_task_evaluators(evaluators, m, module)
        module.activate(None)  # adapters off again; activate() keeps the requires_grad flags set_trainable chose
        return scores

    def saving_state() -> None:
        module.set_trainable(None)
        module.activate(None)

    return run_training(recipe, trainer, resume_from=resume_from, rich_progress=rich_progress,
                        score=score if evaluators else None, after_train=saving_state)
