"""Jasper's similarity-matrix distillation term on its own (``embed_similarity``)."""

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


@register_loss("embed_similarity", formats=EMBED_DISTILL_FORMATS,
               description="Embedding distillation: only the in-batch similarity-matrix term (any student width)")
class SimilarityMatrixDistillLoss(EmbeddingDistillLoss):
    """Only Jasper's similarity-matrix term: ``mean((S S^T - T T^T)^2)`` over all texts of the batch.

    ``S`` and ``T`` are the L2-normalised student and teacher vectors of every text in the batch (all text
    columns), so the student learns the teacher's in-batch geometry, not its vectors: no projection is
    needed whatever the widths. See :class:`~embedtrain.losses.embedding_distill.EmbeddingDistillLoss`.

    Args:
        model: The student SentenceTransformer.
        matryoshka_dims: Student prefix widths the term is averaged over (None: the full width).
        teacher_lookup: Integer store rows -> teacher vectors (set by the distill stage).

    Inputs:
        +---------------------------------+--------------------------------------------------------+
        | Inputs (text columns)           | label                                                  |
        +=================================+========================================================+
        | text_1, ..., text_C             | teacher vectors ``(D,)`` / ``(C, D)`` or store rows     |
        +---------------------------------+--------------------------------------------------------+

    Example::

        stage: distill
        distill: {teachers: [{model: path/to/teacher}]}
        loss: {name: embed_similarity, params: {matryoshka_dims: [384, 128]}}

    Citation: Zhang et al., "Jasper and Stella: distillation of SOTA embedding models", arXiv:2412.19048.
    """

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        require_teachers(ctx, "embed_similarity")
        check_prefix_dims(ctx, params)

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *,  # type: ignore[override]
                    matryoshka_dims: list[int] | None = None) -> SimilarityMatrixDistillLoss:
        return cls(model, matryoshka_dims=matryoshka_dims, teacher_lookup=teacher_store(ctx, "embed_similarity").lookup)

    def __init__(self, model, matryoshka_dims: Sequence[int] | None = None,
                 teacher_lookup: TeacherLookup | None = None) -> None:
        super().__init__(model, cosine_weight=0.0, similarity_weight=1.0, ranking_weight=0.0,
                         matryoshka_dims=matryoshka_dims, teacher_lookup=teacher_lookup)

    def get_config_dict(self) -> dict[str, Any]:
        return {"matryoshka_dims": self.matryoshka_dims}
