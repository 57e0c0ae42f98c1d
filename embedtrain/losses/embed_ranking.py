"""Jasper's relative similarity-ranking distillation term on its own (``embed_ranking``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from embedtrain.losses.embedding_distill import (
    EmbeddingDistillLoss,
    TeacherLookup,
    check_prefix_dims,
    require_teachers,
    teacher_store,
)
from embedtrain.losses.registry import EMBED_DISTILL_FORMATS, register_loss

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext


@register_loss("embed_ranking", formats=EMBED_DISTILL_FORMATS,
               description="Embedding distillation: only the relative similarity-ranking hinge (any student width)")
class RelativeRankingDistillLoss(EmbeddingDistillLoss):
    """Only Jasper's relative similarity (ranking) term: ``mean_{t_a > t_b} relu(margin - (s_a - s_b))``.

    ``a`` and ``b`` run over the distinct text pairs of the batch; ``s`` and ``t`` are their student and
    teacher cosine similarities. The student learns the teacher's *order* of similarities, at any width.
    Above ``max_ranking_pairs`` pairs of pairs, that many are drawn at random. See
    :class:`~embedtrain.losses.embedding_distill.EmbeddingDistillLoss`.

    Args:
        model: The student SentenceTransformer.
        margin: The hinge margin (Jasper: 0.015).
        matryoshka_dims: Student prefix widths the term is averaged over (None: the full width).
        teacher_lookup: Integer store rows -> teacher vectors (set by the distill stage).
        max_ranking_pairs: Cap on the pairs of pairs compared per batch.

    Inputs:
        +---------------------------------+--------------------------------------------------------+
        | Inputs (text columns)           | label                                                  |
        +=================================+========================================================+
        | text_1, ..., text_C             | teacher vectors ``(D,)`` / ``(C, D)`` or store rows     |
        +---------------------------------+--------------------------------------------------------+

    Example::

        stage: distill
        distill: {teachers: [{model: path/to/teacher}]}
        loss: {name: embed_ranking, params: {margin: 0.015}}

    Citation: Zhang et al., "Jasper and Stella: distillation of SOTA embedding models", arXiv:2412.19048.
    """

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        require_teachers(ctx, "embed_ranking")
        check_prefix_dims(ctx, params)

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *, margin: float = 0.015,  # type: ignore[override]
                    matryoshka_dims: list[int] | None = None,
                    max_ranking_pairs: int | None = 1 << 22) -> RelativeRankingDistillLoss:
        return cls(model, margin=margin, matryoshka_dims=matryoshka_dims, max_ranking_pairs=max_ranking_pairs,
                   teacher_lookup=teacher_store(ctx, "embed_ranking").lookup)

    def __init__(self, model, margin: float = 0.015, matryoshka_dims: Sequence[int] | None = None,
                 teacher_lookup: TeacherLookup | None = None, max_ranking_pairs: int | None = 1 << 22) -> None:
        super().__init__(model, cosine_weight=0.0, similarity_weight=0.0, ranking_weight=1.0, ranking_margin=margin,
                         matryoshka_dims=matryoshka_dims, teacher_lookup=teacher_lookup,
                         max_ranking_pairs=max_ranking_pairs)

    def get_config_dict(self) -> dict[str, Any]:
        return {"margin": self.ranking_margin, "matryoshka_dims": self.matryoshka_dims,
                "max_ranking_pairs": self.max_ranking_pairs}
