"""MarginMSE score distillation: the student's score margin (positive - negative) regresses on the teacher's.

sentence-transformers' ``MarginMSELoss`` already does the computation and accepts both label layouts
(teacher margins, or raw teacher scores ``[s_pos, s_neg_1, ...]``). This subclass adds what a recipe
needs on top: the student similarity chosen by name, a student ``scale`` (so a cosine student can match
a teacher whose margins are in logit units), a check that the teacher scores are finite, and a config
dict that names those settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.util import pairwise_cos_sim, pairwise_dot_score
from torch import Tensor

from embedtrain.losses.registry import TEACHER_SCORE_FORMATS, register_loss

PAIRWISE_SIMILARITIES = {"dot": pairwise_dot_score, "cosine": pairwise_cos_sim}


@register_loss("margin_mse", formats=TEACHER_SCORE_FORMATS,
               description="MarginMSE: the student's margins sim(q,p) - sim(q,n) regress on the teacher's")
class MarginMSEDistillLoss(st_losses.MarginMSELoss):
    """MSE between the student's margins ``scale * (sim(q, p) - sim(q, n_i))`` and the teacher's margins.

    For a row with query ``q``, positive ``p``, negatives ``n_1..n_k`` and teacher scores
    ``t_p, t_1..t_k`` the loss is::

        mean_i ( scale * (sim(q, p) - sim(q, n_i)) - (t_p - t_i) )^2

    averaged over rows and negatives. Only score *differences* are learned, so the teacher (usually a
    cross-encoder, as written by ``embedtrain mine --cross-encoder``) may be on any offset; its *scale*
    matters, which is what ``scale`` is for: with ``similarity="cosine"`` the student's margins lie in
    [-2, 2] while cross-encoder logit margins are often ~10, so set ``scale`` to roughly the ratio
    (Hofstätter et al. use the raw dot product, ``similarity="dot"``, ``scale=1``).

    Args:
        model: The student SentenceTransformer.
        similarity: ``"dot"`` (default, as in the paper) or ``"cosine"``.
        scale: Multiplies the student's similarities before the margins are taken.

    Inputs:
        +------------------------------------------------+---------------------------------------------------+
        | Inputs (text columns)                          | label                                             |
        +================================================+===================================================+
        | (anchor, positive, negative)                   | ``[t_p, t_n]`` or the margin ``t_p - t_n``        |
        +------------------------------------------------+---------------------------------------------------+
        | (anchor, positive, negative_1, ..., negative_k)| ``[t_p, t_1, ..., t_k]`` (k + 1 floats) or the    |
        |                                                | k margins ``[t_p - t_1, ..., t_p - t_k]``         |
        +------------------------------------------------+---------------------------------------------------+

        In a recipe: a ``scored_negatives`` dataset (mined rows with ``{"text", "score"}`` negatives and
        ``positive_score``, or a ``scores`` list; rows without scores are scored by ``distill.scorer``).

    Example:
        ::

            loss: {name: margin_mse, params: {similarity: cosine, scale: 5.0}}

        or in Python::

            from datasets import Dataset
            from embedtrain.losses.margin_mse import MarginMSEDistillLoss

            train = Dataset.from_dict({
                "anchor": ["what is a cat"], "positive": ["a cat is a small feline"],
                "negative_1": ["a car is a vehicle"], "negative_2": ["cats and dogs"],
                "label": [[9.1, -3.2, 4.0]],   # cross-encoder scores: positive, then negatives
            })
            loss = MarginMSEDistillLoss(model, similarity="cosine", scale=5.0)

    Citation: Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture
    Knowledge Distillation", arXiv:2010.02666.
    """

    def __init__(self, model, similarity: Literal["dot", "cosine"] = "dot", scale: float = 1.0) -> None:
        if similarity not in PAIRWISE_SIMILARITIES:
            raise ValueError(f"similarity must be one of {sorted(PAIRWISE_SIMILARITIES)}, got '{similarity}'")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        base = PAIRWISE_SIMILARITIES[similarity]
        super().__init__(model, similarity_fct=base if scale == 1.0 else _Scaled(base, scale))
        self.similarity = similarity
        self.scale = scale

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        if labels is None:
            raise ValueError("MarginMSEDistillLoss needs teacher scores in a 'label' column")
        if not labels.is_floating_point():
            labels = labels.float()
        if not labels.isfinite().all():
            raise ValueError("MarginMSEDistillLoss: the teacher scores contain NaN or inf; check the label column")
        return super().forward(sentence_features, labels)

    def get_config_dict(self) -> dict[str, Any]:
        return {"similarity": self.similarity, "scale": self.scale}

    @property
    def citation(self) -> str:
        return """
@misc{hofstatter2021improving,
    title={Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation},
    author={Sebastian Hofst{\\"a}tter and Sophia Althammer and Michael Schr{\\"o}der and Mete Sertkan and Allan Hanbury},
    year={2021},
    eprint={2010.02666},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}
"""


class _Scaled:
    """``scale * base(a, b)``; a named callable so the loss config and pickling stay readable."""

    def __init__(self, base, scale: float) -> None:
        self.base = base
        self.scale = scale
        self.__name__ = f"{base.__name__}*{scale:g}"

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return self.scale * self.base(a, b)
