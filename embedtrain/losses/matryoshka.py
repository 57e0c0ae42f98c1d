"""Matryoshka: the inner loss on the first D dims of the embedding, for several D (``matryoshka``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentence_transformers.sentence_transformer import losses as st_losses

from embedtrain.losses.registry import ANY_FORMAT, register_loss
from embedtrain.models.subnetworks import default_dims, validate_choices
from embedtrain.models.truncate import embedding_dim

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext


def checked_choices(ctx: LossContext, field: str, values, upper: int, what: str) -> list[int]:
    """``values`` validated as a list of sizes in ``1..upper``; errors at ``params.<field>``."""
    try:
        return validate_choices(values, upper, what)
    except ValueError as exc:
        raise ctx.error(str(exc), f"params.{field}") from None


@register_loss("matryoshka", formats=ANY_FORMAT, wraps_inner=True,
               description="Matryoshka: the inner loss on the first D dims for each D in 'dims'")
class MatryoshkaLoss(st_losses.MatryoshkaLoss):
    """sentence-transformers' ``MatryoshkaLoss``: the inner loss is computed on embeddings truncated to each of
    ``dims`` (and summed with ``weights``), so the first D dims of the trained model are a good embedding on
    their own. Works with GradCache inner losses.

    Args:
        model: the SentenceTransformer being trained.
        inner: the wrapped loss (in a recipe: ``inner: {name: ..., params: ...}``).
        dims: the widths to train; default: the Starbucks dims scaled to the model (e.g. 16..384 for MiniLM).
        weights: one weight per dim (default: equal).
        n_dims_per_step: train a random subset of this many dims per step (-1: all).

    Inputs: whatever the inner loss takes.

    Example::

        loss: {name: matryoshka, params: {dims: [32, 64, 128, 384]}, inner: {name: mnrl}}

    Citation: Kusupati et al., "Matryoshka Representation Learning", 2022 (arXiv:2205.13147).
    """

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        if ctx.model_shape is not None and params.get("dims") is not None:
            checked_choices(ctx, "dims", params["dims"], ctx.model_shape[1], "dims")

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *, dims: list[int] | None = None,
                    weights: list[float] | None = None, n_dims_per_step: int = -1):
        full = embedding_dim(model)
        dims = list(dims) if dims is not None else default_dims(full)
        checked_choices(ctx, "dims", dims, full, "dims")
        if len(set(dims)) != len(dims):
            raise ctx.error(f"dims lists a value twice: {dims}", "params.dims")
        if weights is not None and len(weights) != len(dims):
            raise ctx.error(f"weights has {len(weights)} values for {len(dims)} dims", "params.weights")
        return cls(model, ctx.build_inner(model), matryoshka_dims=dims, matryoshka_weights=weights,
                   n_dims_per_step=n_dims_per_step)
