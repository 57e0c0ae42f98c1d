"""Listwise score distillation: the student's softmax over [positive, negatives] follows the teacher's.

sentence-transformers' ``DistillKLDivLoss`` computes the KL term (with separate student and teacher
temperatures and a check that the teacher's softmax does not underflow). This subclass adds what
RocketQA / BGE-M3 style training uses on top of it:

* ``objective="cross_entropy"``: soft-label cross-entropy ``-sum_j p_j log q_j`` instead of
  ``KL(p || q)``. The two differ by the teacher's entropy, a constant, so gradients are identical;
  the reported value is the one of the papers.
* no ``tau_s^2`` rescaling by default (``rescale_by_temperature=False``): with contrastive student
  temperatures like 0.02-0.05 the Hinton factor would shrink the loss ~1000x.
* an optional in-batch InfoNCE term (``infonce_weight``, sentence-transformers'
  ``MultipleNegativesRankingLoss`` on the same embeddings, at the same student temperature), so
  every query is also contrasted with every other row's positive and negatives.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.util import cos_sim, dot_score, pairwise_cos_sim, pairwise_dot_score
from torch import Tensor

from embedtrain.losses.registry import TEACHER_SCORE_FORMATS, register_loss

SIMILARITIES = {"cosine": (pairwise_cos_sim, cos_sim), "dot": (pairwise_dot_score, dot_score)}


@register_loss("listwise_kl", formats=TEACHER_SCORE_FORMATS,
               description="Listwise KL / soft cross-entropy to the teacher's scores over [positive, negatives] "
                           "(+ optional in-batch InfoNCE)")
class ListwiseDistillLoss(st_losses.DistillKLDivLoss):
    """KL (or soft cross-entropy) between teacher and student distributions over each row's candidates.

    For row ``i`` with candidates ``c_i0`` (the positive) ... ``c_ik`` (the negatives) and teacher scores
    ``t_ij``::

        p_ij = softmax_j(t_ij / teacher_temperature)              (teacher, fixed)
        q_ij = softmax_j(sim(q_i, c_ij) / temperature)            (student)
        L_kl = mean_i sum_j p_ij * (log p_ij - log q_ij)          (objective="kl")
        L_ce = mean_i sum_j -p_ij * log q_ij                      (objective="cross_entropy")
        L    = kl_weight * L_{kl|ce} [* temperature^2 if rescale_by_temperature]
               + infonce_weight * InfoNCE(q_i vs. all candidates of all rows, target c_i0)

    Args:
        model: The student SentenceTransformer.
        temperature: Student temperature (the InfoNCE term uses it too). Default 0.05.
        teacher_temperature: Teacher temperature; match it to the spread of the teacher's scores
            (cross-encoder logits: ~1; sigmoid scores in [0, 1]: ~0.05-0.1).
        objective: ``"kl"`` or ``"cross_entropy"`` (same gradient, different reported value).
        similarity: ``"cosine"`` (default) or ``"dot"``.
        kl_weight: Weight of the distillation term.
        infonce_weight: Weight of the in-batch InfoNCE term (0 disables it).
        rescale_by_temperature: Multiply the distillation term by ``temperature^2`` (Hinton et al.).
        gather_across_devices: Gather candidates across processes for the InfoNCE term.

    Inputs:
        +------------------------------------------------+-----------------------------------------------+
        | Inputs (text columns)                          | label                                         |
        +================================================+===============================================+
        | (anchor, positive, negative_1, ..., negative_k)| ``[t_p, t_1, ..., t_k]`` (k + 1 floats), k>=1 |
        +------------------------------------------------+-----------------------------------------------+

        A teacher score of ``-inf`` drops that candidate from the teacher distribution. In a recipe: a
        ``scored_negatives`` dataset (see ``margin_mse``).

    Example:
        ::

            loss: {name: listwise_kl, params: {temperature: 0.02, teacher_temperature: 1.0,
                                               objective: cross_entropy, infonce_weight: 1.0}}

        or in Python::

            from embedtrain.losses.listwise_kl import ListwiseDistillLoss

            # BGE-M3 style: soft cross-entropy on the teacher's ranking plus in-batch InfoNCE
            loss = ListwiseDistillLoss(model, temperature=0.02, teacher_temperature=1.0,
                                       objective="cross_entropy", infonce_weight=1.0)

    Citations: RocketQA (Qu et al., arXiv:2010.08191); BGE M3-Embedding (Chen et al., arXiv:2402.03216).
    """

    def __init__(self, model, temperature: float = 0.05, teacher_temperature: float = 1.0,
                 objective: Literal["kl", "cross_entropy"] = "kl", similarity: Literal["cosine", "dot"] = "cosine",
                 kl_weight: float = 1.0, infonce_weight: float = 0.0, rescale_by_temperature: bool = False,
                 gather_across_devices: bool = False) -> None:
        if objective not in ("kl", "cross_entropy"):
            raise ValueError(f"objective must be 'kl' or 'cross_entropy', got '{objective}'")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {sorted(SIMILARITIES)}, got '{similarity}'")
        if kl_weight < 0 or infonce_weight < 0 or kl_weight + infonce_weight == 0:
            raise ValueError("kl_weight and infonce_weight must be >= 0 and not both 0")
        pairwise, matrix = SIMILARITIES[similarity]
        super().__init__(model, similarity_fct=pairwise, temperature=temperature,
                         teacher_temperature=teacher_temperature)
        self.objective = objective
        self.similarity = similarity
        self.kl_weight = kl_weight
        self.infonce_weight = infonce_weight
        self.rescale_by_temperature = rescale_by_temperature
        self.gather_across_devices = gather_across_devices
        self.infonce = (st_losses.MultipleNegativesRankingLoss(model, scale=1.0 / temperature, similarity_fct=matrix,
                                                               gather_across_devices=gather_across_devices)
                        if infonce_weight > 0 else None)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        if labels is None:
            raise ValueError("ListwiseDistillLoss needs teacher scores in a 'label' column")
        labels = labels.float()
        if labels.isnan().any():
            raise ValueError("ListwiseDistillLoss: the teacher scores contain NaN; check the label column")
        loss = torch.zeros((), device=embeddings[0].device)
        if self.kl_weight > 0:
            # DistillKLDivLoss: KL(p || q) * student_temperature^2
            distill = super().compute_loss_from_embeddings(embeddings, labels)
            if not self.rescale_by_temperature:
                distill = distill / self.student_temperature**2
            if self.objective == "cross_entropy":
                distill = distill + _entropy(labels.to(distill.device) / self.teacher_temperature)
            loss = loss + self.kl_weight * distill
        if self.infonce is not None:
            loss = loss + self.infonce_weight * self.infonce.compute_loss_from_embeddings(embeddings, None)
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.student_temperature, "teacher_temperature": self.teacher_temperature,
                "objective": self.objective, "similarity": self.similarity, "kl_weight": self.kl_weight,
                "infonce_weight": self.infonce_weight, "rescale_by_temperature": self.rescale_by_temperature,
                "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return """
@inproceedings{qu2021rocketqa,
    title={RocketQA: An Optimized Training Approach to Dense Passage Retrieval for Open-Domain Question Answering},
    author={Yingqi Qu and Yuchen Ding and Jing Liu and Kai Liu and Ruiyang Ren and Wayne Xin Zhao and Daxiang Dong and Hua Wu and Haifeng Wang},
    year={2021},
    eprint={2010.08191},
    archivePrefix={arXiv},
    primaryClass={cs.CL}
}
@misc{chen2024bgem3,
    title={BGE M3-Embedding: Multi-Lingual, Multi-Functionality, Multi-Granularity Text Embeddings Through Self-Knowledge Distillation},
    author={Jianlv Chen and Shitao Xiao and Peitian Zhang and Kun Luo and Defu Lian and Zheng Liu},
    year={2024},
    eprint={2402.03216},
    archivePrefix={arXiv},
    primaryClass={cs.CL}
}
"""


def _entropy(logits: Tensor) -> Tensor:
    """Mean over rows of the entropy of ``softmax(logits)`` (0 * log 0 counts as 0)."""
    p = torch.softmax(logits, dim=1)
    return -torch.special.xlogy(p, p).sum(dim=1).mean()
