"""Embedding distillation (Jasper / Stella): cosine, similarity-matrix and relative-ranking losses.

The student learns the teacher's *vectors* (cosine loss, through a trainable projection when the
dimensions differ) and the teacher's *geometry* (the in-batch similarity matrix, and the order of all
in-batch similarities). The two geometric terms compare similarities, not vectors, so they work at
any student width: they are the ones Jasper keeps for the Matryoshka (MRL) prefixes of the student.

sentence-transformers' ``EmbedDistillLoss`` already provides the cosine term, the optional trainable
projection (with ``save_projection`` / ``load_projection``) and the label layouts (one teacher vector
per row broadcast to every column, or one per column). :class:`EmbeddingDistillLoss` subclasses it and
adds the two geometric terms, Matryoshka prefixes of the student, and teacher vectors looked up from a
pre-computed (memory-mapped) store by row index, so a dataset carries small integers instead of
thousands of floats per text.

Several teachers: the store (:mod:`embedtrain.distill.teachers`) concatenates each teacher's
L2-normalised vectors scaled by ``sqrt(w_k / sum w)``; the concatenation then has unit norm and its
cosine similarities are the weighted mean of the teachers' cosine similarities, which is what the
geometric terms distil.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers.sentence_transformer import losses as st_losses
from torch import Tensor

from embedtrain.losses.matryoshka import checked_choices
from embedtrain.losses.registry import EMBED_DISTILL_FORMATS, register_loss
from embedtrain.models.truncate import embedding_dim

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext

#: Maps an integer array of store rows (any shape) to their vectors (that shape + (dim,)).
TeacherLookup = Callable[[np.ndarray], np.ndarray]


def require_teachers(ctx: LossContext, name: str) -> None:
    """At validate time: a recipe whose loss learns teacher embeddings must name teachers (``stage: distill``)."""
    if ctx.recipe is None:
        return
    distill = getattr(ctx.recipe, "distill", None)
    if distill is None or not distill.teachers:
        raise ctx.error(f"'{name}' learns from teacher embeddings: use 'stage: distill' with a "
                        "'distill: {teachers: [{model: ...}]}' section", "name")


def teacher_store(ctx: LossContext, name: str):
    """The run's pre-computed teacher store (set by the distill stage before the losses are built)."""
    if ctx.teacher_store is None:
        raise ctx.error(f"'{name}' needs pre-computed teacher embeddings: train it with 'stage: distill' and "
                        "'distill.teachers'", "name")
    return ctx.teacher_store


def check_prefix_dims(ctx: LossContext, params: dict) -> None:
    """``matryoshka_dims`` fit the student's width (when it is known without loading the model)."""
    if ctx.model_shape is not None and params.get("matryoshka_dims") is not None:
        checked_choices(ctx, "matryoshka_dims", params["matryoshka_dims"], ctx.model_shape[1], "matryoshka_dims")


def similarity_matrix_loss(student: Tensor, teacher: Tensor, keep: Tensor | None = None) -> Tensor:
    """``mean((S S^T - T T^T)^2)`` over the full ``N x N`` matrix of L2-normalised rows, or over the entries
    where the boolean ``keep`` is True (0 when none is). Computed in float32 (bf16 cosines are too coarse for a
    squared difference of similarities), returned in the student's dtype."""
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    if keep is None:
        loss = F.mse_loss(s @ s.T, t @ t.T)
    elif not keep.any():
        loss = s.sum() * 0.0
    else:
        loss = (s @ s.T - t @ t.T)[keep].pow(2).mean()
    return loss.to(student.dtype)


def relative_ranking_loss(student: Tensor, teacher: Tensor, margin: float = 0.015,
                          max_pairs: int | None = 1 << 22, generator: torch.Generator | None = None) -> Tensor:
    """Hinge loss on the order of all in-batch similarities (Jasper's relative similarity loss).

    Take the ``M = N(N-1)/2`` similarities ``s_a`` (student) and ``t_a`` (teacher) of the distinct text
    pairs ``a`` of the batch. For every two pairs ``a, b`` whose teacher similarities differ, with
    ``t_a > t_b``, the student pays ``relu(margin - (s_a - s_b))``. The loss is the mean over those
    ``(a, b)``; teacher ties are left out. With more than ``max_pairs`` pairs ``(a, b)``, that many are
    drawn at random (with replacement) instead of all ``M(M-1)/2``.
    """
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher.to(s.dtype), dim=-1)
    n = s.size(0)
    if n < 3:  # fewer than two distinct pairs: nothing to order
        return s.sum() * 0.0
    iu = torch.triu_indices(n, n, offset=1, device=s.device)
    s_pairs = (s @ s.T)[iu[0], iu[1]]
    t_pairs = (t @ t.T)[iu[0], iu[1]]
    m = s_pairs.numel()
    if max_pairs is not None and m * (m - 1) // 2 > max_pairs:
        a = torch.randint(0, m, (max_pairs,), device=s.device, generator=generator)
        b = torch.randint(0, m, (max_pairs,), device=s.device, generator=generator)
    else:
        a, b = torch.triu_indices(m, m, offset=1, device=s.device)
    sign = torch.sign(t_pairs[a] - t_pairs[b])
    keep = sign != 0
    if not keep.any():
        return s.sum() * 0.0
    hinge = F.relu(margin - sign[keep] * (s_pairs[a][keep] - s_pairs[b][keep]))
    return hinge.mean()


@register_loss("embed_distill", formats=EMBED_DISTILL_FORMATS,
               description="Embedding distillation (Jasper): cosine to the teacher's vectors + similarity-matrix "
                           "+ relative-ranking terms; several teachers, projection, Matryoshka prefixes")
class EmbeddingDistillLoss(st_losses.EmbedDistillLoss):
    """Jasper-style embedding distillation: ``w_cos * L_cos + w_sim * L_sim + w_rank * L_rank`` (the ``*_weight`` args).

    With student vectors ``s`` and teacher vectors ``t`` (both L2-normalised) of all ``N`` texts in the
    batch (every text column, flattened)::

        L_cos  = mean_x (1 - cos(P s_x, t_x))                 (P: trainable projection, or identity)
        L_sim  = mean_{x,y} (s_x . s_y - t_x . t_y)^2          (full N x N matrix)
        L_rank = mean_{a,b: t_a > t_b} relu(margin - (s_a - s_b))   (a, b: distinct text pairs)

    With ``matryoshka_dims`` the two geometric terms are averaged over the student prefixes
    ``s[:d]`` (renormalised), compared with the teacher's vectors (``matryoshka_target="teacher"``, as in
    Jasper stage 3) or with the student's own full-width vectors, detached
    (``matryoshka_target="student"``: the prefixes learn the full student's geometry); the full width is
    always compared with the teacher. ``L_cos`` is taken at the student's full width only. Jasper's
    weights are the defaults (10, 200, 20; margin 0.015).

    Wrapping in sentence-transformers' ``MatryoshkaLoss`` also works; it truncates the student and, when
    the teacher has exactly the student's width, the teacher labels too (right for ``L_cos``, but then
    the geometric terms see a truncated teacher). Prefer ``matryoshka_dims`` here. Under that wrapper a
    truncated student skips ``L_cos`` when a projection is set (it maps the full width only).

    Args:
        model: The student SentenceTransformer.
        cosine_weight: Weight of ``L_cos`` (needs equal widths or ``projection_dim``).
        similarity_weight: Weight of ``L_sim``.
        ranking_weight: Weight of ``L_rank``.
        ranking_margin: The margin of ``L_rank``.
        projection_dim: Teacher width: adds a trainable ``Linear(student_dim, projection_dim)`` used by
            ``L_cos`` (it lives on the loss; ``save_projection`` keeps it).
        matryoshka_dims: Student prefix widths for the geometric terms (None: the full width only).
        matryoshka_target: What the prefixes' geometry is compared with: ``"teacher"`` or ``"student"``.
        teacher_lookup: Callable from integer row indices to teacher vectors, e.g.
            ``TeacherEmbeddings.lookup``; used when the label holds row indices.
        max_ranking_pairs: Cap on the pairs of pairs ``L_rank`` compares (random subset above it).

    Inputs:
        +---------------------------------+------------------------------------------------------------------+
        | Inputs (text columns)           | label                                                            |
        +=================================+==================================================================+
        | text                            | teacher vector ``(teacher_dim,)`` or store row (int)             |
        +---------------------------------+------------------------------------------------------------------+
        | text_1, ..., text_C             | per-column vectors ``(C, teacher_dim)`` or rows ``(C,)`` (ints); |
        |                                 | one vector / row is broadcast to every column                    |
        +---------------------------------+------------------------------------------------------------------+

    In a recipe (``stage: distill``) the label is filled in by the run: the teachers of ``distill.teachers``
    embed every text once into a memory-mapped store, and each row carries its texts' store rows. The
    projection is created when ``cosine_weight > 0`` and the widths differ.

    Example:
        ::

            stage: distill
            distill: {teachers: [{model: path/to/teacher}]}
            loss: {name: embed_distill, params: {cosine_weight: 10, similarity_weight: 200,
                                                 ranking_weight: 20, matryoshka_dims: [384, 128, 64]}}

        or in Python::

            from embedtrain.distill.teachers import TeacherSpec, precompute_teacher_embeddings
            from embedtrain.distill.columns import attach_teacher_rows
            from embedtrain.losses.embedding_distill import EmbeddingDistillLoss

            store = precompute_teacher_embeddings(texts, [TeacherSpec("big", "path/to/teacher")], "cache/teach")
            train = attach_teacher_rows(Dataset.from_dict({"text": texts}), store)
            loss = EmbeddingDistillLoss(student, projection_dim=store.dim, matryoshka_dims=[384, 256, 128],
                                        teacher_lookup=store.lookup)

    Citation: Zhang et al., "Jasper and Stella: distillation of SOTA embedding models", arXiv:2412.19048.
    """

    #: The distill stage pre-computes teacher embeddings for the datasets this loss trains on.
    needs_teacher_embeddings: ClassVar[bool] = True

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        require_teachers(ctx, "embed_distill")
        check_prefix_dims(ctx, params)

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *, cosine_weight: float = 10.0, similarity_weight: float = 200.0,
                    ranking_weight: float = 20.0, ranking_margin: float = 0.015,
                    matryoshka_dims: list[int] | None = None,
                    matryoshka_target: Literal["teacher", "student"] = "teacher",
                    max_ranking_pairs: int | None = 1 << 22) -> EmbeddingDistillLoss:
        store = teacher_store(ctx, "embed_distill")
        width = embedding_dim(model)
        projection_dim = store.dim if cosine_weight > 0 and store.dim != width else None
        return cls(model, cosine_weight=cosine_weight, similarity_weight=similarity_weight,
                   ranking_weight=ranking_weight, ranking_margin=ranking_margin, projection_dim=projection_dim,
                   matryoshka_dims=matryoshka_dims, matryoshka_target=matryoshka_target,
                   teacher_lookup=store.lookup, max_ranking_pairs=max_ranking_pairs)

    def __init__(self, model, cosine_weight: float = 10.0, similarity_weight: float = 200.0,
                 ranking_weight: float = 20.0, ranking_margin: float = 0.015, projection_dim: int | None = None,
                 matryoshka_dims: Sequence[int] | None = None,
                 matryoshka_target: Literal["teacher", "student"] = "teacher",
                 teacher_lookup: TeacherLookup | None = None, max_ranking_pairs: int | None = 1 << 22) -> None:
        super().__init__(model, distance_metric="cosine", projection_dim=projection_dim)
        if matryoshka_target not in ("teacher", "student"):
            raise ValueError(f"matryoshka_target must be 'teacher' or 'student', got '{matryoshka_target}'")
        weights = {"cosine_weight": cosine_weight, "similarity_weight": similarity_weight,
                   "ranking_weight": ranking_weight}
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"weights must be >= 0 and not all 0, got {weights}")
        full = embedding_dim(model)
        if matryoshka_dims is not None:
            matryoshka_dims = sorted({int(d) for d in matryoshka_dims}, reverse=True)
            if not matryoshka_dims or matryoshka_dims[-1] <= 0 or (full and matryoshka_dims[0] > full):
                raise ValueError(f"matryoshka_dims must be in 1..{full}, got {matryoshka_dims}")
        self.cosine_weight = cosine_weight
        self.similarity_weight = similarity_weight
        self.ranking_weight = ranking_weight
        self.ranking_margin = ranking_margin
        self.matryoshka_dims = matryoshka_dims
        self.matryoshka_target = matryoshka_target
        self.teacher_lookup = teacher_lookup
        self.max_ranking_pairs = max_ranking_pairs

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        if labels is not None and not labels.is_floating_point():
            labels = self.lookup_teacher(labels)
        return super().forward(sentence_features, labels)

    def lookup_teacher(self, rows: Tensor) -> Tensor:
        """Teacher vectors of integer store ``rows`` (shape ``rows.shape + (dim,)``)."""
        if self.teacher_lookup is None:
            raise ValueError("the label holds integer rows of a teacher store, but this loss has no teacher_lookup")
        vectors = np.asarray(self.teacher_lookup(rows.detach().cpu().numpy()), dtype=np.float32)
        return torch.from_numpy(vectors).to(rows.device)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], teacher_embeddings: list[Tensor]) -> Tensor:
        device = embeddings[0].device
        teacher_embeddings = [t.to(device=device, dtype=embeddings[0].dtype) for t in teacher_embeddings]
        loss = torch.zeros((), device=device, dtype=embeddings[0].dtype)
        if self.cosine_weight > 0:
            loss = loss + self.cosine_weight * self.cosine_loss(embeddings, teacher_embeddings)
        if self.similarity_weight > 0 or self.ranking_weight > 0:
            student = torch.cat(embeddings, dim=0)
            teacher = torch.cat(teacher_embeddings, dim=0)
            dims = self.matryoshka_dims or [student.size(-1)]
            geometric = torch.zeros((), device=device, dtype=student.dtype)
            for d in dims:
                prefix = student[..., :d]
                target = teacher
                if self.matryoshka_target == "student" and d < student.size(-1):
                    target = student.detach()
                if self.similarity_weight > 0:
                    geometric = geometric + self.similarity_weight * similarity_matrix_loss(prefix, target)
                if self.ranking_weight > 0:
                    geometric = geometric + self.ranking_weight * relative_ranking_loss(
                        prefix, target, self.ranking_margin, self.max_ranking_pairs)
            loss = loss + geometric / len(dims)
        return loss

    def cosine_loss(self, embeddings: list[Tensor], teacher_embeddings: list[Tensor]) -> Tensor:
        """``mean(1 - cos(P s, t))`` over columns (sentence-transformers' cosine ``EmbedDistillLoss``)."""
        width = embeddings[0].size(-1)
        if self.projection is not None:
            if width != self.projection.in_features:  # a Matryoshka wrapper truncated the student
                return embeddings[0].sum() * 0.0
        elif width != teacher_embeddings[0].size(-1):
            raise ValueError(f"the student has {width} dims and the teacher {teacher_embeddings[0].size(-1)}: set "
                             "projection_dim to the teacher's width for the cosine term, or set cosine_weight to 0")
        return super().compute_loss_from_embeddings(embeddings, teacher_embeddings)

    def get_config_dict(self) -> dict[str, Any]:
        return {"cosine_weight": self.cosine_weight, "similarity_weight": self.similarity_weight,
                "ranking_weight": self.ranking_weight, "ranking_margin": self.ranking_margin,
                "projection_dim": self.projection_dim, "matryoshka_dims": self.matryoshka_dims,
                "matryoshka_target": self.matryoshka_target, "max_ranking_pairs": self.max_ranking_pairs}

    @property
    def citation(self) -> str:
        return """
@misc{zhang2025jasperstelladistillationsota,
    title={Jasper and Stella: distillation of SOTA embedding models},
    author={Dun Zhang and Jiacheng Li and Ziyang Zeng and Fulong Wang},
    year={2025},
    eprint={2412.19048},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}
"""
