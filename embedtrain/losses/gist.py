"""GISTEmbed: contrastive loss whose false negatives are masked by a frozen guide model (``gist``).

For each query the guide scores the query-positive pair; every in-batch candidate (other positives,
other anchors, hard negatives) that the guide rates more similar to the query than
``positive_score - margin`` (``absolute``) or ``positive_score - |positive_score| * margin``
(``relative``) is treated as a likely false negative and masked out of the softmax.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import torch
from sentence_transformers.base.losses.merged_forward import column_merging_disabled, merge_feature_batches
from sentence_transformers.sentence_transformer import losses as st_losses
from torch import Tensor, nn

from embedtrain.losses.registry import CONTRASTIVE_FORMATS, register_loss
from embedtrain.models.resolve import load_model, resolve_model_path

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext

MarginStrategy = Literal["absolute", "relative"]


def guide_path(name_or_path: str, ctx: LossContext):
    """The local folder of the guide (relative to the recipe, or a packaged name); errors at ``params.guide``."""
    if ctx.recipe is not None:
        loc = (*ctx.loc, "params", "guide")
        origin = ctx.recipe.override_of(*loc)
        return resolve_model_path(name_or_path, base_dir=ctx.base_dir, file=None if origin else ctx.recipe_file,
                                  line=None if origin else ctx.recipe.line_of(*loc),
                                  field=f"{ctx.field}.params.guide" + (f" (from --set '{origin}')" if origin else ""))
    return resolve_model_path(name_or_path, base_dir=ctx.base_dir, file=ctx.recipe_file, line=ctx.line,
                              field=f"{ctx.field}.params.guide")


def load_guide(name_or_path: str, model, ctx: LossContext):
    """Load the frozen guide model next to ``model``."""
    guide = load_model(guide_path(name_or_path, ctx), device=str(model.device),
                       trust_remote_code=ctx.trust_remote_code)
    guide.eval()
    guide.requires_grad_(False)
    return guide


def check_margin(margin_strategy: str, margin: float) -> None:
    if margin_strategy not in ("absolute", "relative"):
        raise ValueError(f"margin_strategy must be 'absolute' or 'relative', got '{margin_strategy}'")
    if margin < 0:
        raise ValueError("margin must be >= 0")


class _CountingCrossEntropy(nn.Module):
    """The loss's cross-entropy, which first hands the (masked) score matrix to a counter."""

    def __init__(self, inner: nn.Module, count) -> None:
        super().__init__()
        self.inner = inner
        self.count = count  # a bound method, not a module: no cycle in the module tree

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        self.count(scores, labels)
        return self.inner(scores, labels)


class MaskedCandidateStats:
    """Counts the in-batch candidates the guide masks (the number that tells whether ``margin`` is right).

    Mixed into the GIST losses: sentence-transformers' GIST masks a false negative by setting its similarity to
    ``-inf`` before the cross-entropy, so the masked share is read from the score matrix the cross-entropy gets.
    Counted: every candidate of every anchor except its positive and the anchor's own similarity with itself
    (anchor-anchor and positive-positive diagonals, which are always masked). :meth:`step_metrics` returns the
    share since the last call as ``gist_masked_fraction`` (the training run logs and plots it per step).
    """

    #: Rows of the whole local batch when the cross-entropy sees it in mini-batches (cached GIST).
    _batch_rows: int | None = None

    def _start_counting(self) -> None:
        self._masked = 0
        self._candidates = 0
        self.cross_entropy_loss = _CountingCrossEntropy(self.cross_entropy_loss, self._count_masked)

    def _count_masked(self, scores: Tensor, labels: Tensor) -> None:
        with torch.no_grad():
            rows, cols = scores.shape
            batch = self._batch_rows or rows
            world = 1
            if self.gather_across_devices and torch.distributed.is_available() and torch.distributed.is_initialized():
                world = torch.distributed.get_world_size()
            n_pos = batch * world
            offset = int(labels.min()) // batch * batch if world > 1 else 0  # rank * batch
            keep = torch.ones_like(scores, dtype=torch.bool)
            r = torch.arange(rows, device=scores.device)
            keep[r, labels] = False  # the positive
            col = n_pos
            if self.contrast_anchors:
                keep[r, col + labels - offset] = False  # anchor with itself
                col += batch
            if self.contrast_positives and col + n_pos <= cols:
                keep[r, col + labels] = False  # positive with itself
            self._masked += int((torch.isneginf(scores) & keep).sum())
            self._candidates += int(keep.sum())

    def step_metrics(self) -> dict[str, float]:
        """``{"gist_masked_fraction": share}`` of the candidates counted since the last call ({} if none)."""
        if not getattr(self, "_candidates", 0):
            return {}
        share = self._masked / self._candidates
        self._masked = self._candidates = 0
        return {"gist_masked_fraction": share}


@register_loss("gist", formats=CONTRASTIVE_FORMATS,
               description="GISTEmbed: MNRL whose false negatives are masked by a frozen guide model")
class MultiNegativeGISTEmbedLoss(MaskedCandidateStats, st_losses.GISTEmbedLoss):
    """sentence-transformers' ``GISTEmbedLoss`` that also takes several hard-negative columns.

    The plain ``GISTEmbedLoss`` takes at most one negative column; here ``negative_1 ... negative_n`` are
    merged into one padded feature batch first, so every hard negative of every row is a candidate for every
    query, as in MNRL.

    Args:
        model: the SentenceTransformer being trained.
        guide: the frozen guide model (in a recipe: its folder, relative to the recipe, or a packaged name;
            ``guide: all-MiniLM-L6-v2`` while training all-MiniLM-L6-v2 uses a frozen copy of the start model).
        temperature: softmax temperature; default 0.01.
        margin_strategy / margin: how close to the positive's guide score a candidate may come before it is
            masked (``absolute``: ``p - margin``; ``relative``: ``p - |p| * margin``).
        contrast_anchors / contrast_positives: also contrast anchor-anchor / positive-positive pairs.
        gather_across_devices: share in-batch candidates across processes.

    Inputs: (anchor, positive[, negative_1, ..., negative_n]) texts, no labels.

    Training logs ``gist_masked_fraction``: the share of in-batch candidates the guide masked (see
    :class:`MaskedCandidateStats`); near 0 the guide changes nothing, near 1 little is left to contrast.

    Example::

        loss: {name: gist, params: {guide: all-mpnet-base-v2, margin_strategy: relative, margin: 0.05}}

    Citation: Solatorio, "GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding
    Fine-tuning", 2024 (arXiv:2402.16829).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._start_counting()

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        features = list(sentence_features)
        if len(features) <= 3:
            return super().forward(features, labels)
        merged = merge_feature_batches(features[2:])
        if merged is None:
            raise ValueError("cannot batch the negative columns together for 'gist' (different features per "
                             "column); use 'cached_gist', which embeds each negative column separately")
        # The merged negatives have n x batch rows, so the columns cannot be merged again into one forward:
        # say so up front instead of letting sentence-transformers try and warn.
        with column_merging_disabled():
            return super().forward([features[0], features[1], merged], labels)

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        if "guide" in params:
            guide_path(params["guide"], ctx)

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *, guide: str, temperature: float = 0.01,
                    margin_strategy: MarginStrategy = "absolute", margin: float = 0.0, contrast_anchors: bool = True,
                    contrast_positives: bool = True, gather_across_devices: bool = False):
        check_margin(margin_strategy, margin)
        return cls(model, load_guide(guide, model, ctx), temperature=temperature, margin_strategy=margin_strategy,
                   margin=margin, contrast_anchors=contrast_anchors, contrast_positives=contrast_positives,
                   gather_across_devices=gather_across_devices)
