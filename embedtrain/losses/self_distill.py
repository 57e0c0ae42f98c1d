"""Self-distillation regulariser: keep the student close to a frozen copy of the model it started from.

Wraps any loss that embeds through ``model.forward`` (MNRL, CoSENT, GIST, Matryoshka-wrapped losses,
the distillation losses...). While the inner loss runs, every embedding the student computes is
recorded together with the features it came from; the frozen teacher (by default a copy of the model
taken when the loss is built, i.e. the start model) embeds the same features without gradients, and
the embedding-distillation terms of :mod:`embedtrain.losses.embedding_distill` pull the student
towards it. Because the teacher is the start model, features need no re-tokenisation and nothing is
stored on disk; the cost is one extra forward pass (no backward) per step.

GradCache losses (``cached_mnrl``, ``cached_gist``) embed again during the backward pass, after the
recording has ended, so they are refused.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from sentence_transformers.base.losses.gradcache import uses_gradient_cache
from torch import Tensor, nn

from embedtrain.losses.embedding_distill import relative_ranking_loss, similarity_matrix_loss
from embedtrain.losses.registry import ANY_FORMAT, register_loss
from embedtrain.models.truncate import plain_copy

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext

#: model -> its frozen copy, so several datasets' self_distill losses share one teacher (one copy in memory).
_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def frozen_start_model(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` as it is now (the same copy for every caller while ``model`` lives)."""
    teacher = _FROZEN.get(model)
    if teacher is None:
        teacher = _frozen_copy(model)
        _FROZEN[model] = teacher
    return teacher


def _frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without gradients, in eval mode, running its class's own ``forward``.

    An instance-level ``forward`` (length bucketing, a recording hook) is a closure over the *student*; a deep
    copy keeps that same closure, so the copy would silently compute the student's embeddings. It is dropped.
    """
    teacher = plain_copy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _rows(features: dict[str, Any]) -> int | None:
    """Rows of a column's feature batch (``input_ids`` first, else its first tensor)."""
    values = [features.get("input_ids"), features.get("attention_mask"), *features.values()]
    return next((int(v.shape[0]) for v in values if isinstance(v, Tensor) and v.ndim >= 1), None)


def trained_pair_mask(rows: int, columns: int, device=None) -> Tensor:
    """``(columns*rows)^2`` booleans, True where a similarity is *not* trained: off the diagonal, and not row ``i``
    of the first column with row ``i`` of another column (the pairs a contrastive or scored loss trains)."""
    n = rows * columns
    keep = ~torch.eye(n, dtype=torch.bool, device=device)
    r = torch.arange(rows, device=device)
    for c in range(1, columns):
        keep[r, r + c * rows] = False
        keep[r + c * rows, r] = False
    return keep


def untrained_pairs(n: int, rows: int | None, device=None) -> Tensor:
    """:func:`trained_pair_mask` for ``n`` recorded embeddings holding the columns in turn, ``rows`` each."""
    if not rows or n % rows:
        raise ValueError(f"exclude_trained_pairs: {n} recorded embeddings are not whole columns of {rows} rows "
                         "(the inner loss embeds texts other than its columns); set exclude_trained_pairs: false")
    return trained_pair_mask(rows, n // rows, device=device)


@register_loss("self_distill", formats=ANY_FORMAT, wraps_inner=True,
               description="Regularizer: the inner loss + a pull towards the frozen start model's embeddings")
class SelfDistillLoss(nn.Module):
    """``inner(features, labels) + weight * D(student, frozen teacher)`` on every text the inner loss embeds.

    ``D = cosine_weight * mean(1 - cos(s_x, t_x)) + similarity_weight * L_sim + ranking_weight * L_rank``,
    with ``L_sim`` and ``L_rank`` as in :class:`~embedtrain.losses.embedding_distill.EmbeddingDistillLoss`
    over all texts of the step. The teacher and student share the tokeniser and width (the teacher is
    the start model), so no projection is involved.

    **Fine-tuning without forgetting** (docs/generalization.md) uses the similarity term alone, with two
    options that make it a pure "keep the geometry" constraint:

    * ``exclude_trained_pairs``: ``L_sim`` leaves out the similarities the inner loss trains (row ``i`` of the
      first column with row ``i`` of every other column) and the diagonal, so the regulariser never fights the
      training signal; it keeps how the model relates every *other* pair of texts in the batch. ``L_sim`` is
      then the mean squared difference over the remaining entries.
    * ``match_dropout``: the teacher embeds in the student's train/eval mode. With dropout on in the student
      only, its cosines are systematically lower than the eval-mode teacher's even at step 0, so a strong
      pull drags the weights *away* from the start model; with independent dropout on both sides the target
      is unbiased.

    On the quickstart (all-MiniLM-L6-v2, STSb train, CoSENT) ``weight: 300, cosine_weight: 0,
    similarity_weight: 1`` with both options raises STSb test by 2.5 points and every not-trained local task
    too, where plain CoSENT loses STS13, Banking77 and SciFact (docs/generalization.md).

    Args:
        model: The student SentenceTransformer.
        loss: The inner (task) loss, built for ``model``.
        teacher: The frozen teacher; default: a deep copy of ``model`` as it is now (the start model).
        weight: Weight of the regulariser ``D``.
        cosine_weight: Weight of the per-text cosine term in ``D``.
        similarity_weight: Weight of the similarity-matrix term in ``D``.
        ranking_weight: Weight of the relative-ranking term in ``D``.
        ranking_margin: Margin of the relative-ranking term.
        exclude_trained_pairs: Leave the trained pairs (and the diagonal) out of ``L_sim``.
        match_dropout: Run the teacher in the student's train/eval mode (dropout on both sides).

    Inputs:
        +---------------------------+---------------------------+
        | Inputs                    | label                     |
        +===========================+===========================+
        | whatever ``loss`` takes   | whatever ``loss`` takes   |
        +---------------------------+---------------------------+

    Example:
        ::

            loss: {name: self_distill, params: {weight: 1.0}, inner: {name: cosent}}
            # keep the start model's similarity structure (recipes/quickstart.yaml):
            loss: {name: self_distill, inner: {name: cosent},
                   params: {weight: 300, cosine_weight: 0, similarity_weight: 1,
                            exclude_trained_pairs: true, match_dropout: true}}

        or in Python::

            from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
            from embedtrain.losses.self_distill import SelfDistillLoss

            loss = SelfDistillLoss(model, MultipleNegativesRankingLoss(model), weight=1.0)

    Citation: the self-distillation idea follows BGE M3-Embedding (Chen et al., arXiv:2402.03216);
    the distance terms follow Jasper and Stella (arXiv:2412.19048).
    """

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *, weight: float = 1.0, cosine_weight: float = 1.0,
                    similarity_weight: float = 0.0, ranking_weight: float = 0.0,
                    ranking_margin: float = 0.015, exclude_trained_pairs: bool = False,
                    match_dropout: bool = False) -> SelfDistillLoss:
        return cls(model, ctx.build_inner(model), teacher=frozen_start_model(model), weight=weight,
                   cosine_weight=cosine_weight, similarity_weight=similarity_weight, ranking_weight=ranking_weight,
                   ranking_margin=ranking_margin, exclude_trained_pairs=exclude_trained_pairs,
                   match_dropout=match_dropout)

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        weights = {k: params.get(k, d) for k, d in (("weight", 1.0), ("cosine_weight", 1.0),
                                                   ("similarity_weight", 0.0), ("ranking_weight", 0.0))}
        negative = next((k for k, v in weights.items() if v is not None and v < 0), None)
        if negative is not None:
            raise ctx.error(f"{negative} must be >= 0", f"params.{negative}")
        if not any(weights[k] for k in ("cosine_weight", "similarity_weight", "ranking_weight")):
            raise ctx.error("set at least one of cosine_weight, similarity_weight, ranking_weight > 0", "params")
        if params.get("exclude_trained_pairs") and not weights["similarity_weight"]:
            raise ctx.error("exclude_trained_pairs applies to the similarity term: set similarity_weight > 0",
                            "params.exclude_trained_pairs")

    def __init__(self, model, loss: nn.Module, teacher: nn.Module | None = None, weight: float = 1.0,
                 cosine_weight: float = 1.0, similarity_weight: float = 0.0, ranking_weight: float = 0.0,
                 ranking_margin: float = 0.015, exclude_trained_pairs: bool = False,
                 match_dropout: bool = False) -> None:
        super().__init__()
        if uses_gradient_cache(loss):
            raise ValueError("self-distillation cannot wrap a GradCache loss (it embeds again in the backward "
                             "pass); use the non-cached variant")
        if weight < 0 or min(cosine_weight, similarity_weight, ranking_weight) < 0:
            raise ValueError("weights must be >= 0")
        if cosine_weight + similarity_weight + ranking_weight == 0:
            raise ValueError("at least one of cosine_weight, similarity_weight, ranking_weight must be > 0")
        self.model = model
        self.loss = loss
        if teacher is None:
            teacher = _frozen_copy(model)
        # Not a registered submodule: its weights must not reach the optimizer or the checkpoint.
        self.__dict__["teacher"] = teacher
        self.weight = weight
        self.cosine_weight = cosine_weight
        self.similarity_weight = similarity_weight
        self.ranking_weight = ranking_weight
        self.ranking_margin = ranking_margin
        self.exclude_trained_pairs = exclude_trained_pairs
        self.match_dropout = match_dropout

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        records: list[tuple[dict[str, Any], Tensor]] = []
        original_forward = self.model.forward

        def recording_forward(features: dict[str, Any], *args, **kwargs):
            inputs = dict(features)  # the model adds keys to ``features``; keep what went in
            output = original_forward(features, *args, **kwargs)
            records.append((inputs, output["sentence_embedding"]))
            return output

        self.model.forward = recording_forward
        try:
            loss = self.loss(sentence_features, labels)
        finally:
            del self.model.forward  # back to the class's forward (an instance attribute was set above)
            if self.model.forward != original_forward:  # someone else had patched it: restore theirs
                self.model.forward = original_forward
        if self.weight == 0:
            return loss
        if not records:
            raise RuntimeError(f"{type(self.loss).__name__} did not embed through model.forward, so there is "
                               "nothing to self-distil")
        rows = _rows(sentence_features[0]) if sentence_features else None
        return loss + self.weight * self.regulariser(records, rows)

    def regulariser(self, records: list[tuple[dict[str, Any], Tensor]], rows: int | None = None) -> Tensor:
        """``D`` between the recorded student embeddings and the teacher's on the same features.

        ``rows`` is the batch size (rows per column); with ``exclude_trained_pairs`` the recorded embeddings
        are the columns one after the other (how the losses embed them), ``rows`` texts each.
        """
        teacher = self.__dict__["teacher"]
        device = records[0][1].device
        if next(teacher.parameters()).device != device:  # the trainer moved the student after we were built
            teacher.to(device)
        teacher.train(self.match_dropout and self.model.training)
        try:
            with torch.no_grad():
                targets = [teacher(dict(inputs))["sentence_embedding"] for inputs, _ in records]
        finally:
            teacher.eval()
        student = torch.cat([emb for _, emb in records], dim=0)
        target = torch.cat(targets, dim=0).to(student.dtype)
        if student.size(-1) != target.size(-1):  # e.g. under a Matryoshka wrapper: compare the prefix
            target = target[..., :student.size(-1)]
        reg = torch.zeros((), device=student.device, dtype=student.dtype)
        if self.cosine_weight > 0:
            reg = reg + self.cosine_weight * (1 - nn.functional.cosine_similarity(student, target, dim=-1)).mean()
        if self.similarity_weight > 0:
            keep = untrained_pairs(student.size(0), rows, student.device) if self.exclude_trained_pairs else None
            reg = reg + self.similarity_weight * similarity_matrix_loss(student, target, keep)
        if self.ranking_weight > 0:
            reg = reg + self.ranking_weight * relative_ranking_loss(student, target, self.ranking_margin)
        return reg

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, "weight": self.weight, "cosine_weight": self.cosine_weight,
                "similarity_weight": self.similarity_weight, "ranking_weight": self.ranking_weight,
                "ranking_margin": self.ranking_margin, "exclude_trained_pairs": self.exclude_trained_pairs,
                "match_dropout": self.match_dropout}

    @property
    def citation(self) -> str:
        return """
@misc{chen2024bgem3,
    title={BGE M3-Embedding: Multi-Lingual, Multi-Functionality, Multi-Granularity Text Embeddings Through Self-Knowledge Distillation},
    author={Jianlv Chen and Shitao Xiao and Peitian Zhang and Kun Luo and Defu Lian and Zheng Liu},
    year={2024},
    eprint={2402.03216},
    archivePrefix={arXiv},
    primaryClass={cs.CL}
}
"""
