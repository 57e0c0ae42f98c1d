"""``stage: tasks``: a frozen base, one LoRA adapter per task, all adapters trained in one run.

Every task dataset is prepared like a contrastive one (:func:`embedtrain.train.prepare.prepare_dataset`),
with errors placed at ``tasks[i].datasets[j]...``. Training is one ``SentenceTransformerTrainer`` run over all
task datasets: its multi-dataset sampler draws each batch from a single dataset, hence from a single task,
and the ``router_mapping`` argument (``{dataset: {column: task}}``) makes the data collator tag each column
with its task, which :class:`~embedtrain.adapters.module.TaskAdapterTransformer` turns into an adapter switch
before that column's forward pass. Query-side columns use the task's adapter; passage-side columns use the
``passage_task``'s adapter when one is named (retrieval.query / retrieval.passage). Only LoRA weights train;
the base model is bit-for-bit unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from embedtrain.evaluation.evaluators import build_evaluators, run_evaluators
from embedtrain.io.formats import FORMATS
from embedtrain.losses import build_loss
from embedtrain.schema import TaskRecipe
from embedtrain.train.args import ST_TRAINING_DEFAULTS
from embedtrain.train.card import preset_widget_examples
from embedtrain.train.contrastive import load_start_model
from embedtrain.train.mixing import LABEL_COLUMN, mixing_extras
from embedtrain.train.prepare import PreparedDataset, prepare_dataset, row_count
from embedtrain.train.runner import TrainingMode
from embedtrain.train.sharded import sharded_trainer

logger = logging.getLogger(__name__)


def prepare_tasks(recipe: TaskRecipe, model_shape: tuple[int, int] | None = None) -> list[PreparedDataset]:
    """Every task's datasets, validated with their losses (dataset's, else task's, else recipe's), in order."""
    prepared = []
    for i, task in enumerate(recipe.tasks):
        for j, ds in enumerate(task.datasets):
            if ds.loss is not None:
                loss, loss_loc = ds.loss, ("tasks", i, "datasets", j, "loss")
            elif task.loss is not None:
                loss, loss_loc = task.loss, ("tasks", i, "loss")
            else:
                loss, loss_loc = recipe.loss, ("loss",)
            prepared.append(prepare_dataset(recipe, ds, ("tasks", i, "datasets", j), loss, loss_loc,
                                            query_prompt=None, passage_prompt=None, model_shape=model_shape))
    return prepared


def router_mapping(recipe: TaskRecipe, prepared: list[PreparedDataset]) -> dict[str, dict[str, str]]:
    """``{dataset: {column: task}}``: query-side columns -> the task, passage-side -> its passage task."""
    owner = {ds.name: task for task in recipe.tasks for ds in task.datasets}
    mapping: dict[str, dict[str, str]] = {}
    for p in prepared:
        task = owner[p.config.name]
        spec = FORMATS[p.config.format]
        mapping[p.config.name] = {
            column: task.name if column in spec.query_roles else (task.passage_task or task.name)
            for column in p.dataset.column_names if column not in ("score", LABEL_COLUMN)
        }
    return mapping


class TaskMode(TrainingMode):
    """Train one LoRA adapter per task of a ``tasks:`` recipe on a frozen base."""

    stage = "tasks"
    #: LoRA wants a larger learning rate than full fine-tuning.
    defaults = {**ST_TRAINING_DEFAULTS, "learning_rate": 2e-4}
    recipe: TaskRecipe

    def prepare(self) -> None:
        super().prepare()
        self.prepared = prepare_tasks(self.recipe, self.model_shape)
        self.mapping = router_mapping(self.recipe, self.prepared)
        self.evaluators = {task.name: build_evaluators(self.recipe, ("tasks", i))
                           for i, task in enumerate(self.recipe.tasks) if task.evaluators}
        self.mixing, self.mixture = mixing_extras(self.recipe, self.prepared, ST_TRAINING_DEFAULTS["batch_sampler"])

    def training_extras(self) -> dict[str, Any]:
        prompts = {p.config.name: p.prompts for p in self.prepared if p.prompts}
        extras: dict[str, Any] = {"router_mapping": self.mapping,
                                  # adapters of other tasks get no gradient in a step
                                  "ddp_find_unused_parameters": True, **self.mixing}
        if prompts:
            extras["prompts"] = prompts
        return extras

    def describe(self) -> list[str]:
        return [f"{p.config.name}: {row_count(p.dataset)}, columns {p.dataset.column_names}, loss {p.loss.name}, "
                f"tasks {', '.join(sorted(set(self.mapping[p.config.name].values())))}" for p in self.prepared]

    def build_trainer(self, args, callbacks: list[TrainerCallback], resume_from: Path | None):
        from sentence_transformers import SentenceTransformerTrainer

        from embedtrain.adapters.checkpoint import attach_tasks

        model = load_start_model(self.recipe, self)
        module = self.module = attach_tasks(model, self.recipe.tasks)
        used_tasks = {t for cols in self.mapping.values() for t in cols.values()}
        for task in self.recipe.tasks:
            if task.name not in used_tasks:
                logger.warning("task '%s' gets no training data; its adapter stays at its initialisation (LoRA B = 0, "
                               "i.e. the base model)", task.name)
        trained = [a for a in (module.routes[t].adapter for t in module.tasks if t in used_tasks) if a is not None]
        names = module.set_trainable(trained)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_total = sum(p.numel() for p in model.parameters())
        logger.info("training %d LoRA tensors (%d of %d parameters, %.2f%%) for adapters %s", len(names), n_train,
                    n_total, 100.0 * n_train / max(n_total, 1), sorted(set(trained)))
        logger.info("tasks per dataset: %s", {n: sorted(set(c.values())) for n, c in self.mapping.items()})
        train_datasets = {p.config.name: p.dataset for p in self.prepared}
        losses = {p.config.name: build_loss(p.loss, model, p.loss_context) for p in self.prepared}
        preset_widget_examples(model, train_datasets)
        return sharded_trainer(SentenceTransformerTrainer)(model=model, args=args, train_dataset=train_datasets,
                                                           loss=losses, callbacks=callbacks)

    def quick_scores(self, model) -> dict[str, float]:
        scores = {}
        for task, evaluators in self.evaluators.items():
            with self.module.using(task):
                for name, score in run_evaluators(evaluators, model).items():
                    scores[f"{task}/{name}"] = score
        self.module.activate(None)  # adapters off again; activate() keeps the requires_grad flags set_trainable chose
        return scores

    def metric_sources(self) -> list:
        return [self.mixture] if self.mixture is not None else []

    def after_train(self, trainer) -> None:
        self.module.set_trainable(None)
        self.module.activate(None)
