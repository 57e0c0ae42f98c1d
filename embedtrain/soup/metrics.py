"""Held-out metrics that guide a greedy soup or a merge with the start model: higher is better, one float per model.

* :func:`held_out_sts`: cosine Spearman x 100 on a scored-pairs file (``sentence1``, ``sentence2``,
  ``score``), with sentence-transformers' ``EmbeddingSimilarityEvaluator`` (as the recipe's STS checks).
* :func:`mteb_metric`: the main score x 100 of one offline MTEB task, through the evaluation harness
  (:mod:`embedtrain.evaluation`), e.g. ``STSBenchmark`` with ``--data-dir /path/to/shared/data``.
* :func:`similarity_agreement`: Spearman x 100 between a model's cosine similarities and a reference model's on
  unlabeled general sentence pairs (no labels needed; the general signal of :mod:`embedtrain.soup.merge_start`).

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


def general_pairs(sentences: list[str], num_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """Up to ``num_pairs`` distinct random pairs of distinct sentences (seeded, so every model sees the same)."""
    import random

    sentences = list(dict.fromkeys(s.strip() for s in sentences if s and s.strip()))
    if len(sentences) < 3:
        raise DataError(f"need at least 3 distinct sentences for general pairs, got {len(sentences)}")
    rng = random.Random(seed)
    limit = min(num_pairs, len(sentences) * (len(sentences) - 1) // 2)
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < limit:
        i, j = rng.sample(range(len(sentences)), 2)
        chosen.add((min(i, j), max(i, j)))
    return [(sentences[i], sentences[j]) for i, j in sorted(chosen)]


def pair_cosines(model, pairs: list[tuple[str, str]], batch_size: int = 64):
    """Cosine similarity of each pair under ``model`` (every distinct sentence is encoded once)."""
    import torch

    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    index = {t: i for i, t in enumerate(texts)}
    emb = model.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                       show_progress_bar=False).float().cpu()
    left = emb[torch.tensor([index[a] for a, _ in pairs])]
    right = emb[torch.tensor([index[b] for _, b in pairs])]
    return (left * right).sum(dim=1)


def similarity_agreement(reference_model, sentences: list[str], *, num_pairs: int = 2000, seed: int = 0,
                         batch_size: int = 64) -> Metric:
    """Spearman x 100 between a model's cosine similarities and ``reference_model``'s on unlabeled general pairs.

    A label-free "how far did the model drift" signal: 100 for the reference itself, lower the more the model
    re-orders which general texts it finds similar. ``reference_model`` is scored now, once.
    """
    from scipy.stats import spearmanr

    pairs = general_pairs(sentences, num_pairs, seed)
    reference = pair_cosines(reference_model, pairs, batch_size).numpy()

    def metric(model) -> float:
        return 100.0 * float(spearmanr(pair_cosines(model, pairs, batch_size).numpy(), reference)[0])

    metric.__name__ = f"agreement:{len(pairs)} pairs"
    return metric
