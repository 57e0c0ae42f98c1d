"""The KL alignment terms of the sub-network losses (``matryoshka2d``, ``starbucks``): one form per paper.

Each form compares a sub-network's output with the full model's (the teacher) on the same batch. ``teacher``
and ``student`` are per-column embeddings (column 0 = anchors / first sentences); every function returns a
scalar KL(teacher || student) with ``batchmean`` reduction.

============================  ==============================================================================
form                          what is compared
============================  ==============================================================================
``layer_embeddings``          2DMSE as in sentence-transformers' ``Matryoshka2dLoss`` / ``AdaptiveLayerLoss``
                              (and AnglE): softmax over the *embedding dimensions* of the sub-network's layer
                              at full width vs the last layer, at temperature T (0.3; AnglE uses 1.0), the KL
                              multiplied by T. Rows: every text of every column.
``truncated_embeddings``      Starbucks for STS (its ``sts/starbucks_loss.py``): softmax over the first ``d``
                              dimensions of the sub-network ``(l, d)`` vs the same ``d`` dimensions of the full
                              model, no temperature, weight 0.3. Rows: every text of every column.
``scores``                    Starbucks for retrieval (its ``retrieval/modeling.py``): softmax over the
                              in-batch *dot-product scores* of each anchor against every candidate (the other
                              columns), sub-network vs full model, temperature 1 (Tevatron's default), the
                              full model's scores detached, weight 1.
``similarity``                embedtrain's earlier form: like ``scores`` on *cosine* similarities at T=0.05.
============================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

KLForm = Literal["layer_embeddings", "truncated_embeddings", "scores", "similarity"]
KL_FORMS: tuple[str, ...] = ("layer_embeddings", "truncated_embeddings", "scores", "similarity")


@dataclass(frozen=True)
class KLDefaults:
    """A form's paper defaults: weight, temperature, and whether the KL is multiplied by the temperature."""

    weight: float
    temperature: float
    scale_by_temperature: bool = False


DEFAULTS: dict[str, KLDefaults] = {
    "layer_embeddings": KLDefaults(weight=1.0, temperature=0.3, scale_by_temperature=True),
    "truncated_embeddings": KLDefaults(weight=0.3, temperature=1.0),
    "scores": KLDefaults(weight=1.0, temperature=1.0),
    "similarity": KLDefaults(weight=1.0, temperature=0.05),
}


def _rows(columns: Sequence[Tensor]) -> Tensor:
    return torch.cat(list(columns), dim=0)


def embedding_kl(teacher: Sequence[Tensor], student: Sequence[Tensor], temperature: float = 1.0,
                 detach_teacher: bool = True) -> Tensor:
    """KL over the softmax of the embedding dimensions; the teacher is cut to the student's width.

    Used by ``layer_embeddings`` (student at full width) and ``truncated_embeddings`` (student ``(l, d)``,
    teacher's first ``d`` dims).
    """
    s = _rows(student)
    t = _rows(teacher)[..., : s.size(-1)]
    if detach_teacher:
        t = t.detach()
    return F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
                    reduction="batchmean", log_target=True)


def _split(cols: Sequence[Tensor], normalize: bool) -> tuple[Tensor, Tensor]:
    anchors = cols[0]
    candidates = _rows(cols[1:]) if len(cols) > 1 else cols[0]
    if normalize:
        return F.normalize(anchors, dim=-1), F.normalize(candidates, dim=-1)
    return anchors, candidates


def _score_kl(teacher: Sequence[Tensor], student: Sequence[Tensor], temperature: float, normalize: bool,
              detach_teacher: bool, chunk: int | None) -> Tensor:
    t_anchor, t_cand = _split(teacher, normalize)
    s_anchor, s_cand = _split(student, normalize)
    if detach_teacher:
        t_anchor, t_cand = t_anchor.detach(), t_cand.detach()
    rows = s_anchor.size(0)
    chunk = chunk or rows
    total = s_anchor.new_zeros(())
    for begin in range(0, rows, chunk):
        end = min(begin + chunk, rows)
        target = F.log_softmax(t_anchor[begin:end] @ t_cand.T / temperature, dim=-1)
        pred = F.log_softmax(s_anchor[begin:end] @ s_cand.T / temperature, dim=-1)
        total = total + F.kl_div(pred, target, reduction="sum", log_target=True)
    return total / rows


def score_kl(teacher: Sequence[Tensor], student: Sequence[Tensor], temperature: float = 1.0,
             detach_teacher: bool = True, chunk: int | None = None) -> Tensor:
    """KL of the in-batch dot-product score distributions (each anchor against every candidate)."""
    return _score_kl(teacher, student, temperature, False, detach_teacher, chunk)


def similarity_kl(teacher: Sequence[Tensor], student: Sequence[Tensor], temperature: float = 0.05,
                  detach_teacher: bool = True, chunk: int | None = None) -> Tensor:
    """KL of the in-batch cosine-similarity distributions (each anchor against every candidate)."""
    return _score_kl(teacher, student, temperature, True, detach_teacher, chunk)


def kl_term(form: str, teacher: Sequence[Tensor], student: Sequence[Tensor], temperature: float,
            detach_teacher: bool = True, chunk: int | None = None) -> Tensor:
    """The unweighted KL of ``form`` (before the temperature factor of ``layer_embeddings``)."""
    if form in ("layer_embeddings", "truncated_embeddings"):
        return embedding_kl(teacher, student, temperature, detach_teacher)
    if form == "scores":
        return score_kl(teacher, student, temperature, detach_teacher, chunk)
    if form == "similarity":
        return similarity_kl(teacher, student, temperature, detach_teacher, chunk)
    raise ValueError(f"unknown KL form '{form}'; choose from {list(KL_FORMS)}")
