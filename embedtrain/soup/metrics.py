"""Held-out metrics that guide a greedy soup: higher is better, one float per model.

* :func:`held_out_sts`: cosine Spearman x 100 on a scored-pairs file (``sentence1``, ``sentence2``,
  ``score``), with sentence-transformers' ``EmbeddingSimilarityEvaluator`` (as the recipe's STS checks).
* :func:`mteb_metric`: the main score x 100 of one offline MTEB task, through the evaluation harness
  (:mod:`embedtrain.evaluation`), e.g. ``STSBenchmark`` with ``--data-dir /path/to/shared/data``.

For task-adapter models a metric can run under one task (``task="text-matching"``); the MTEB metric
otherwise uses the checkpoint's MTEB task-type map.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from embedtrain.errors import DataError

logger = logging.getLogger(__name__)

Metric = Callable[[object], float]


def _task_context(model, task: str | None):
    from embedtrain.adapters.module import require_task_module

    if task is None:
        return nullcontext()
    return require_task_module(model).using(task)


def held_out_sts(path: str | Path, *, task: str | None = None, columns: dict[str, str] | None = None,
                 max_samples: int | None = None, batch_size: int = 64) -> Metric:
    """Cosine Spearman x 100 on the scored pairs in ``path`` (validated now, evaluated per call)."""
    from embedtrain.evaluation.evaluators import run_sts, sts_evaluator

    path = Path(path)
    if not path.exists():
        raise DataError("held-out file not found", file=path)
    evaluator = sts_evaluator(path, name=path.stem, columns=columns, max_samples=max_samples, batch_size=batch_size)

    def metric(model) -> float:
        with _task_context(model, task):
            return run_sts([evaluator], model)[evaluator.name]

    metric.__name__ = f"sts:{path.name}"
    return metric


def mteb_metric(task_name: str, data_dir: str | Path | None = None, *, task: str | None = None,
                task_configs: list[str | Path] | tuple = (), batch_size: int = 64) -> Metric:
    """Main score x 100 of MTEB task ``task_name`` (offline, local data) for an in-memory model.

    ``task_name`` may be a bundled task or one defined in ``task_configs`` (a private dev split, say); its data is
    read and checked once, before any model is scored.
    """
    from embedtrain.evaluation.encoder import make_encoder
    from embedtrain.evaluation.harness import run_mteb
    from embedtrain.evaluation.tasks import resolve_tasks

    tasks = resolve_tasks([task_name], data_dir=data_dir, task_configs=task_configs)
    for task_obj in tasks:
        task_obj.load_data()
    counter = iter(range(1_000_000))

    def metric(model) -> float:
        with tempfile.TemporaryDirectory(prefix="embedtrain-soup-mteb-") as tmp, _task_context(model, task):
            encoder = make_encoder(model, label="soup-candidate", fingerprint=f"c{next(counter)}")
            results = run_mteb(encoder, tasks, output_dir=Path(tmp), batch_size=batch_size, show_progress=False)
        return 100.0 * float(results[0].get_score())

    metric.__name__ = f"mteb:{task_name}"
    return metric
