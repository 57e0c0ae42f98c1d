"""Matryoshka losses: ``matryoshka`` (output dims only) and ``matryoshka2d`` (2DMSE: layers and dims).

``matryoshka`` is sentence-transformers' ``MatryoshkaLoss`` (which already supports GradCache losses).
``matryoshka2d`` is our 2D Matryoshka (2DMSE) on the shared sub-network engine
(:class:`~embedtrain.losses.subnetwork.SubnetworkLoss`), which, unlike sentence-transformers'
``Matryoshka2dLoss``, also works with GradCache inner losses (``cached_mnrl``, ``cached_gist``).

2DMSE step: draw one layer ``l`` from ``layers`` (the last layer only if nothing else is listed) and
one dim ``d`` from ``dims`` (likewise), then train the full model and the sub-network ``(l, d)``;
with ``marginals: true`` (default) also ``(last, d)`` and ``(l, full)``, i.e. the last layer at the
drawn dim and the drawn layer at full width, as in the 2DMSE paper. Every sub-network is pulled
towards the full model's in-batch similarity distribution by the KL term.
"""

from __future__ import annotations

import random
import typing

from sentence_transformers.sentence_transformer import losses as st_losses

from embedtrain.config.recipe import DataFormat
from embedtrain.losses.registry import LossContext, register_loss
from embedtrain.losses.subnetwork import SubnetworkLoss
from embedtrain.models.subnetwork_pairs import default_dims, default_layers, validate_choices
from embedtrain.models.subnetworks import SubnetworkEmbedder
from embedtrain.models.truncate import embedding_dim

#: Wrapper losses take whatever data their inner loss takes (the inner loss is checked separately).
ANY_FORMAT = frozenset(typing.get_args(DataFormat))


def _checked(ctx: LossContext, field: str, values, upper: int, what: str) -> list[int]:
    try:
        return validate_choices(values, upper, what)
    except ValueError as exc:
        raise ctx.error(str(exc), f"params.{field}") from None


@register_loss("matryoshka", formats=ANY_FORMAT, wraps_inner=True,
               description="Matryoshka: the inner loss on the first D dims for each D in 'dims'")
def matryoshka(model, ctx: LossContext, *, dims: list[int] | None = None, weights: list[float] | None = None,
               n_dims_per_step: int = -1):
    full = embedding_dim(model)
    dims = list(dims) if dims is not None else default_dims(full)
    _checked(ctx, "dims", dims, full, "dims")
    if len(set(dims)) != len(dims):
        raise ctx.error(f"dims lists a value twice: {dims}", "params.dims")
    if weights is not None and len(weights) != len(dims):
        raise ctx.error(f"weights has {len(weights)} values for {len(dims)} dims", "params.weights")
    inner = ctx.build_inner(model)
    return st_losses.MatryoshkaLoss(model, inner, matryoshka_dims=dims, matryoshka_weights=weights,
                                    n_dims_per_step=n_dims_per_step)


class TwoDPicker:
    """2DMSE pair sampling: the full model plus a random (layer, dim) (and its marginals)."""

    def __init__(self, layers: list[int], dims: list[int], num_layers: int, dim: int, marginals: bool,
                 rng: random.Random | None = None) -> None:
        self.layers = [layer for layer in layers if layer < num_layers] or [num_layers]
        self.dims = [d for d in dims if d < dim] or [dim]
        self.full = (num_layers, dim)
        self.marginals = marginals
        self.rng = rng or random

    def __call__(self) -> list[tuple[int, int]]:
        layer, d = self.rng.choice(self.layers), self.rng.choice(self.dims)
        pairs = [self.full, (layer, d)]
        if self.marginals:
            pairs += [(self.full[0], d), (layer, self.full[1])]
        return list(dict.fromkeys(pairs))


@register_loss("matryoshka2d", formats=ANY_FORMAT, wraps_inner=True,
               description="2DMSE: full model + one random (layer, dim) sub-network per step, KL-aligned")
def matryoshka2d(model, ctx: LossContext, *, layers: list[int] | None = None, dims: list[int] | None = None,
                 marginals: bool = True, kl_weight: float = 1.0, kl_temperature: float = 0.05):
    embedder = SubnetworkEmbedder(model)
    n, full = embedder.full_pair
    layers = _checked(ctx, "layers", layers if layers is not None else default_layers(n), n, "layers")
    dims = _checked(ctx, "dims", dims if dims is not None else default_dims(full), full, "dims")
    inner = ctx.build_inner(model)
    picker = TwoDPicker(layers, dims, n, full, marginals)
    return SubnetworkLoss(model, inner, picker, kl_weight=kl_weight, kl_temperature=kl_temperature,
                          name="matryoshka2d")
