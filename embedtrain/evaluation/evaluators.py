"""sentence-transformers evaluators a recipe runs around training (its ``evaluators:`` section).

Unlike the MTEB harness (``eval:``), these are quick in-process checks: STS on a scored-pairs file with
sentence-transformers' ``EmbeddingSimilarityEvaluator``, reported as cosine Spearman x 100 (the main score
MTEB reports for STS tasks). :func:`sts_evaluator` is also what a soup's held-out metric uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentence_transformers.sentence_transformer.evaluation import (
    EmbeddingSimilarityEvaluator,
    SequentialEvaluator,
)

from embedtrain.errors import DataError
from embedtrain.io.formats import to_dataset
from embedtrain.io.readers import read_records


def sts_evaluator(path: str | Path, *, name: str, columns: dict[str, str] | None = None,
                  file_type: str | None = None, max_samples: int | None = None,
                  batch_size: int = 64) -> EmbeddingSimilarityEvaluator:
    """An STS evaluator on the scored pairs in ``path`` (``sentence1``, ``sentence2``, ``score``), rows checked."""
    records = read_records(path, file_type, limit=max_samples)
    ds = to_dataset(records, "scored_pairs", columns or {})
    return EmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"], name=name,
                                        batch_size=batch_size, main_similarity="cosine")


def build_sts_evaluators(recipe: Any, loc: tuple[Any, ...] = ()) -> list[EmbeddingSimilarityEvaluator]:
    """Read and validate each evaluator of the recipe section at ``loc`` (default: the recipe itself)."""
    section = recipe
    for part in loc:
        section = section[part] if isinstance(part, int) else getattr(section, part)
    evaluators = []
    for i, cfg in enumerate(section.evaluators):
        path = recipe.resolve_path(cfg.path)
        if not path.exists():
            raise recipe.error(f"evaluation file not found: {path}", *loc, "evaluators", i, "path", kind=DataError)
        evaluators.append(sts_evaluator(path, name=cfg.name, columns=cfg.columns, file_type=cfg.file_type,
                                        max_samples=cfg.max_samples, batch_size=cfg.batch_size))
    return evaluators


def combined(evaluators: list[EmbeddingSimilarityEvaluator]) -> SequentialEvaluator | None:
    return SequentialEvaluator(evaluators) if evaluators else None


def run_sts(evaluators: list[EmbeddingSimilarityEvaluator], model) -> dict[str, float]:
    """Cosine Spearman x 100 for each evaluator, keyed by its name."""
    scores = {}
    for ev in evaluators:
        result = ev(model)
        key = next(k for k in result if k.endswith("spearman_cosine"))
        scores[ev.name] = 100.0 * float(result[key])
    return scores
