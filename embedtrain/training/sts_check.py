"""Quick STS evaluators declared in a recipe (``evaluators:``), run before and after training.

They use sentence-transformers' ``EmbeddingSimilarityEvaluator``; the reported number is cosine
Spearman x 100, which is what MTEB reports as the main score of STS tasks.
"""

from __future__ import annotations

from sentence_transformers.sentence_transformer.evaluation import (
    EmbeddingSimilarityEvaluator,
    SequentialEvaluator,
)

from embedtrain.config.recipe import Recipe
from embedtrain.data import read_records, to_dataset
from embedtrain.errors import DataError


def build_sts_evaluators(recipe: Recipe) -> list[EmbeddingSimilarityEvaluator]:
    """Read and validate each evaluator file of the recipe."""
    evaluators = []
    for i, cfg in enumerate(recipe.evaluators):
        path = recipe.resolve_path(cfg.path)
        if not path.exists():
            raise DataError(f"evaluation file not found: {path}", file=recipe.source,
                            line=recipe.line_of("evaluators", i, "path"), field=f"evaluators[{i}].path")
        records = read_records(path, cfg.file_type, limit=cfg.max_samples)
        ds = to_dataset(records, "scored_pairs", cfg.columns)
        evaluators.append(EmbeddingSimilarityEvaluator(
            ds["sentence1"], ds["sentence2"], ds["score"], name=cfg.name, batch_size=cfg.batch_size,
            main_similarity="cosine",
        ))
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
