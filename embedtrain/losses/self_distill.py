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

import copy
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from sentence_transformers.base.losses.gradcache import uses_gradient_cache
from torch import Tensor, nn

from embedtrain.losses.embedding_distill import relative_ranking_loss, similarity_matrix_loss
from embedtrain.losses.registry import ANY_FORMAT, register_loss

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext

#: model -> its frozen copy, so several datasets' self_distill losses share one teacher (one copy in memory).
_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def frozen_start_model(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` as it is now (the same copy for every caller while ``model`` lives)."""
    teacher = _FROZEN.get(model)
    if teacher is None:
        teacher = copy.deepcopy(model)
        teacher.eval()
        teacher.requires_grad_(False)
        _FROZEN[model] = teacher
    return teacher


@register_loss("self_distill", formats=ANY_FORMAT, wraps_inner=True,
               description="Regularizer: the inner loss + a pull towards the frozen start model's embeddings")
class SelfDistillLoss(nn.Module):
    """``inner(features, labels) + weight * D(student, frozen teacher)`` on every text the inner loss embeds.

    ``D = cosine_weight * mean(1 - cos(s_x, t_x)) + similarity_weight * L_sim + ranking_weight * L_rank``,
    with ``L_sim`` and ``L_rank`` as in :class:`~embedtrain.losses.embedding_distill.EmbeddingDistillLoss`
    over all texts of the step. The teacher and student share the tokeniser and width (the teacher is
    the start model), so no projection is involved.

    Args:
        model: The student SentenceTransformer.
        loss: The inner (task) loss, built for ``model``.
        teacher: The frozen teacher; default: a deep copy of ``model`` as it is now (the start model).
        weight: Weight of the regulariser ``D``.
        cosine_weight: Weight of the per-text cosine term in ``D``.
        similarity_weight: Weight of the similarity-matrix term in ``D``.
        ranking_weight: Weight of the relative-ranking term in ``D``.
        ranking_margin: Margin of the relative-ranking term.

    Inputs:
        +---------------------------+---------------------------+
        | Inputs                    | label                     |
        +===========================+===========================+
        | whatever ``loss`` takes   | whatever ``loss`` takes   |
        +---------------------------+---------------------------+

    Example:
        ::

            loss: {name: self_distill, params: {weight: 1.0}, inner: {name: cosent}}

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
                    ranking_margin: float = 0.015) -> SelfDistillLoss:
        return cls(model, ctx.build_inner(model), teacher=frozen_start_model(model), weight=weight,
                   cosine_weight=cosine_weight, similarity_weight=similarity_weight, ranking_weight=ranking_weight,
                   ranking_margin=ranking_margin)

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        weights = {k: params.get(k, d) for k, d in (("weight", 1.0), ("cosine_weight", 1.0),
                                                   ("similarity_weight", 0.0), ("ranking_weight", 0.0))}
        negative = next((k for k, v in weights.items() if v is not None and v < 0), None)
        if negative is not None:
            raise ctx.error(f"{negative} must be >= 0", f"params.{negative}")
        if not any(weights[k] for k in ("cosine_weight", "similarity_weight", "ranking_weight")):
            raise ctx.error("set at least one of cosine_weight, similarity_weight, ranking_weight > 0", "params")

    def __init__(self, model, loss: nn.Module, teacher: nn.Module | None = None, weight: float = 1.0,
                 cosine_weight: float = 1.0, similarity_weight: float = 0.0, ranking_weight: float = 0.0,
                 ranking_margin: float = 0.015) -> None:
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
            teacher = copy.deepcopy(model)
            teacher.eval()
            teacher.requires_grad_(False)
        # Not a registered submodule: its weights must not reach the optimizer or the checkpoint.
        self.__dict__["teacher"] = teacher
        self.weight = weight
        self.cosine_weight = cosine_weight
        self.similarity_weight = similarity_weight
        self.ranking_weight = ranking_weight
        self.ranking_margin = ranking_margin

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
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
        return loss + self.weight * self.regulariser(records)

    def regulariser(self, records: list[tuple[dict[str, Any], Tensor]]) -> Tensor:
        """``D`` between the recorded student embeddings and the teacher's on the same features."""
        teacher = self.__dict__["teacher"]
        device = records[0][1].device
        if next(teacher.parameters()).device != device:  # the trainer moved the student after we were built
            teacher.to(device)
        with torch.no_grad():
            targets = [teacher(dict(inputs))["sentence_embedding"] for inputs, _ in records]
        student = torch.cat([emb for _, emb in records], dim=0)
        target = torch.cat(targets, dim=0).to(student.dtype)
        if student.size(-1) != target.size(-1):  # e.g. under a Matryoshka wrapper: compare the prefix
            target = target[..., :student.size(-1)]
        reg = torch.zeros((), device=student.device, dtype=student.dtype)
        if self.cosine_weight > 0:
            reg = reg + self.cosine_weight * (1 - nn.functional.cosine_similarity(student, target, dim=-1)).mean()
        if self.similarity_weight > 0:
            reg = reg + self.similarity_weight * similarity_matrix_loss(student, target)
        if self.ranking_weight > 0:
            reg = reg + self.ranking_weight * relative_ranking_loss(student, target, self.ranking_margin)
        return reg

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, "weight": self.weight, "cosine_weight": self.cosine_weight,
                "similarity_weight": self.similarity_weight, "ranking_weight": self.ranking_weight,
                "ranking_margin": self.ranking_margin}

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
