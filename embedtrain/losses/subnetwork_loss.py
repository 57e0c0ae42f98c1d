"""Train an inner loss on several (layer, dim) sub-networks at once, plus a KL alignment term.

:class:`SubnetworkLoss` is the engine behind the ``matryoshka2d`` (2DMSE) and ``starbucks`` losses.
Each step it asks a *pair picker* which sub-networks ``(L, D)`` to train, embeds every input column
with all of them in one transformer pass (:class:`~embedtrain.models.subnetworks.SubnetworkEmbedder`),
then evaluates the wrapped loss once per sub-network on those precomputed embeddings:

* ordinary inner losses (MNRL, CoSENT, GIST...) call ``model(features)``; during the step that call
  is answered from the precomputed embeddings of the sub-network being scored, so the transformer
  runs once per column however many sub-networks there are;
* GradCache inner losses (``CachedMultipleNegativesRankingLoss``, ``CachedGISTEmbedLoss``) embed
  mini-batches themselves, again inside the backward pass. Their ``embed_minibatch`` is made to
  return all sub-network embeddings side by side (one wide tensor), and their ``calculate_loss`` to
  split that tensor and score each sub-network. The cached gradient is then the gradient wrt. all
  sub-networks at once, and the replayed mini-batch forward back-propagates it through every layer.

Loss (``reduction: sum``, the papers' form) = ``sum_i w_i * inner(sub_i) + kl_weight * sum_k KL_k``; with
``reduction: mean`` both sums are divided by their number of terms (``sum_i w_i`` for the inner losses), which
keeps the scale of plain training with the inner loss. The KL terms ``KL_k`` compare sub-networks with the
full model in one of the forms of :mod:`embedtrain.losses.subnetwork_kl` (per trained sub-network, or per
trained layer for ``layer_embeddings``); a term that is identically zero (the full model itself, or a
full-depth sub-network under ``truncated_embeddings``) is not computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from sentence_transformers.base.losses.gradcache import uses_gradient_cache
from sentence_transformers.base.losses.merged_forward import column_merging_disabled
from torch import Tensor, nn

from embedtrain.losses.subnetwork_kl import DEFAULTS, KL_FORMS, kl_term, similarity_kl
from embedtrain.models.subnetworks import Pair, SubnetworkEmbedder

#: Returns the sub-networks to train this step (``(layers, dim)``, full model included if wanted).
PairPicker = Callable[[], Sequence[Pair]]
Reduction = Literal["sum", "mean"]

__all__ = ["PairPicker", "Reduction", "SubnetworkLoss", "forward_answered_by", "similarity_kl"]


@contextmanager
def forward_answered_by(model: nn.Module, fn: Callable[..., dict[str, Any]]) -> Iterator[None]:
    """Temporarily make ``model(features)`` call ``fn(features)`` (an instance-level override)."""
    had_own = "forward" in model.__dict__
    previous = model.__dict__.get("forward")
    model.forward = fn
    try:
        yield
    finally:
        if had_own:
            model.forward = previous
        else:
            del model.forward


class SubnetworkLoss(nn.Module):
    """Wrap ``inner`` so that it trains every sub-network returned by ``picker`` each step.

    Args:
        model / inner / picker: the model, the wrapped loss, and what to train each step.
        kl: the KL form (:data:`embedtrain.losses.subnetwork_kl.KL_FORMS`).
        kl_weight / kl_temperature: ``None`` = the form's paper default.
        kl_detach_teacher: the full model gets no gradient from the KL terms.
        reduction: ``sum`` (the papers) or ``mean`` over the sub-networks (inner losses and KL terms).
        weights: per-pair weights of the inner losses (default 1).
    """

    def __init__(self, model: Any, inner: nn.Module, picker: PairPicker, *, kl: str = "similarity",
                 kl_weight: float | None = None, kl_temperature: float | None = None, kl_detach_teacher: bool = True,
                 reduction: Reduction = "sum", weights: dict[Pair, float] | None = None,
                 name: str = "subnetwork") -> None:
        super().__init__()
        if kl not in KL_FORMS:
            raise ValueError(f"kl must be one of {list(KL_FORMS)}, got '{kl}'")
        defaults = DEFAULTS[kl]
        kl_weight = defaults.weight if kl_weight is None else kl_weight
        kl_temperature = defaults.temperature if kl_temperature is None else kl_temperature
        if kl_temperature <= 0:
            raise ValueError("kl_temperature must be > 0")
        if kl_weight < 0:
            raise ValueError("kl_weight must be >= 0")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got '{reduction}'")
        self.model = model
        self.loss = inner
        self.picker = picker
        self.kl = kl
        self.kl_weight = float(kl_weight)
        self.kl_temperature = float(kl_temperature)
        self.kl_detach_teacher = bool(kl_detach_teacher)
        self.reduction = reduction
        self.weights = dict(weights or {})
        self.name = name
        self.embedder = SubnetworkEmbedder(model)
        self.uses_gradient_cache = uses_gradient_cache(inner)
        #: Sub-networks of the step in progress (trained), the KL terms (log key, compared sub-network),
        #: and every sub-network that is embedded (trained + KL students + the teacher).
        self._trained: list[Pair] = []
        self._kl_terms: list[tuple[Pair, Pair]] = []
        self._embedded: list[Pair] = []
        #: Last step's parts as detached tensors (no device sync in the training step); read them
        #: as floats through :attr:`last_parts`.
        self._parts: dict[str, dict[Pair, Tensor]] = {"inner": {}, "kl": {}}
        if self.uses_gradient_cache:
            self._decorate_cached(inner)

    # -- step bookkeeping -----------------------------------------------------------------------
    def _start_step(self) -> None:
        trained = list(dict.fromkeys(tuple(p) for p in self.picker()))
        if not trained:
            raise ValueError(f"{self.name}: no sub-network to train this step")
        self._trained = trained
        self._kl_terms = self._plan_kl(trained)
        full = self.embedder.full_pair
        students = [s for _, s in self._kl_terms]
        teacher = [full] if self._kl_terms else []
        self._embedded = list(dict.fromkeys(trained + students + teacher))
        self._parts = {"inner": {}, "kl": {}}

    def _plan_kl(self, trained: list[Pair]) -> list[tuple[Pair, Pair]]:
        """The KL terms of a step: ``(log key, sub-network compared with the full model)``."""
        if self.kl_weight == 0:
            return []
        n, width = self.embedder.full_pair
        if self.kl == "layer_embeddings":  # one term per trained layer, at full width
            layers = dict.fromkeys(layer for layer, _ in trained if layer < n)
            return [((layer, width), (layer, width)) for layer in layers]
        if self.kl == "truncated_embeddings":  # (n, d) is the full model cut to d: its term is exactly 0
            return [(p, p) for p in trained if p[0] < n]
        return [(p, p) for p in trained if p != (n, width)]

    @property
    def last_parts(self) -> dict[str, dict[Pair, float]]:
        """Last step's unweighted parts, for logging and tests: ``{"inner": {pair: v}, "kl": {pair: v}}``."""
        return {kind: {pair: float(v) for pair, v in parts.items()} for kind, parts in self._parts.items()}

    def _weight(self, pair: Pair) -> float:
        return float(self.weights.get(pair, 1.0))

    def _inner_scale(self, pair: Pair) -> float:
        total = sum(self._weight(p) for p in self._trained) if self.reduction == "mean" else 1.0
        return self._weight(pair) / total if total else 0.0

    def _kl_scale(self) -> float:
        scale = self.kl_weight * (self.kl_temperature if DEFAULTS[self.kl].scale_by_temperature else 1.0)
        return scale / len(self._kl_terms) if self.reduction == "mean" and self._kl_terms else scale

    def _kl(self, teacher: Sequence[Tensor], student: Sequence[Tensor], chunk: int | None = None) -> Tensor:
        return kl_term(self.kl, teacher, student, self.kl_temperature, self.kl_detach_teacher, chunk)

    # -- ordinary inner losses --------------------------------------------------------------------
    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        self._start_step()
        if self.uses_gradient_cache:
            return self.loss(sentence_features, labels)
        features = list(sentence_features)
        model = self.embedder.model
        with column_merging_disabled():
            per_column = [self.embedder.embed(f, self._embedded) for f in features]
            by_id = {id(f): embs for f, embs in zip(features, per_column)}
            current = {"index": 0}

            def answer(f: dict[str, Any], **_: Any) -> dict[str, Any]:
                embs = by_id.get(id(f))
                if embs is None:  # the inner loss built new features (e.g. re-tokenised): embed them too
                    embs = by_id[id(f)] = self.embedder.embed(f, self._embedded)
                return {**f, "sentence_embedding": embs[current["index"]]}

            loss: Tensor | float = 0.0
            with forward_answered_by(model, answer):
                for pair in self._trained:
                    current["index"] = self._embedded.index(pair)
                    part = self.loss(features, labels)
                    self._parts["inner"][pair] = part.detach()
                    loss = loss + self._inner_scale(pair) * part
        if self._kl_terms:
            full_idx = self._embedded.index(self.embedder.full_pair)
            teacher = [embs[full_idx] for embs in per_column]
            scale = self._kl_scale()
            for key, student in self._kl_terms:
                idx = self._embedded.index(student)
                kl = self._kl(teacher, [embs[idx] for embs in per_column])
                self._parts["kl"][key] = kl.detach()
                loss = loss + scale * kl
        return loss  # type: ignore[return-value]

    # -- GradCache inner losses -------------------------------------------------------------------
    def _decorate_cached(self, inner: nn.Module) -> None:
        """Make a GradCache loss embed all sub-networks per mini-batch and score each of them."""
        original_embed = inner.embed_minibatch
        original_calculate = inner.calculate_loss
        embedder = self.embedder

        def embed_minibatch(*args: Any, **kwargs: Any):
            model = embedder.model

            def wide(f: dict[str, Any], **_: Any) -> dict[str, Any]:
                return {**f, "sentence_embedding": torch.cat(embedder.embed(f, self._embedded), dim=-1)}

            with forward_answered_by(model, wide):
                return original_embed(*args, **kwargs)

        def calculate_loss(reps: list[list[Tensor]], *args: Any, with_backward: bool = False, **kwargs: Any):
            return self._cached_calculate(original_calculate, reps, args, kwargs, with_backward)

        inner.embed_minibatch = embed_minibatch
        inner.calculate_loss = calculate_loss

    def _split(self, reps: list[list[Tensor]]) -> list[list[list[Tensor]]]:
        """Wide per-mini-batch embeddings -> one ``reps`` structure per embedded sub-network."""
        widths = [dim for _, dim in self._embedded]
        per_pair: list[list[list[Tensor]]] = [[[] for _ in reps] for _ in widths]
        for c, column in enumerate(reps):
            for mb in column:
                for p, part in enumerate(torch.split(mb, widths, dim=-1)):
                    per_pair[p][c].append(part)
        return per_pair

    def _cached_calculate(self, original: Callable[..., Tensor], reps: list[list[Tensor]], args: tuple,
                          kwargs: dict, with_backward: bool) -> Tensor:
        """Score every sub-network; with ``with_backward``, leave d(loss)/d(reps) in ``reps[..].grad``."""
        per_pair = self._split(reps)
        loss = reps[0][0].new_zeros(())
        full_pair = self.embedder.full_pair

        def run(pairs: Sequence[Pair], fn: Callable[..., Tensor], scale: float) -> Tensor:
            """``fn(*reps of pairs) * scale``; with backward, its gradients pushed into the wide tensors."""
            sliced = [per_pair[self._embedded.index(p)] for p in pairs]
            if not with_backward:
                return fn(*sliced) * scale
            leaves = [[[t.detach().requires_grad_() for t in col] for col in s] for s in sliced]
            value = fn(*leaves)
            targets = [t for s in sliced for col in s for t in col]
            grads = [leaf.grad for s in leaves for col in s for leaf in col]
            kept = [(t, g) for t, g in zip(targets, grads) if g is not None]
            if kept:  # push the sub-network's gradients on into the wide tensors' .grad
                torch.autograd.backward([t for t, _ in kept], [scale * g for _, g in kept])
            return value.detach() * scale

        for pair in self._trained:
            scale = self._inner_scale(pair)
            part = run([pair], lambda r: original(r, *args, with_backward=with_backward, **kwargs), scale)
            self._parts["inner"][pair] = part / scale if scale else torch.zeros(())
            loss = loss + part
        if self._kl_terms:
            chunk = getattr(self.loss, "mini_batch_size", None)
            scale = self._kl_scale()
            for key, student in self._kl_terms:
                def kl_fn(r: list[list[Tensor]], t: list[list[Tensor]]) -> Tensor:
                    value = self._kl([torch.cat(col) for col in t], [torch.cat(col) for col in r], chunk)
                    if with_backward:
                        value.backward()
                    return value

                # the teacher's reps are leaves too, so an undetached teacher also gets its gradient
                part = run([student, full_pair], kl_fn, scale)
                self._parts["kl"][key] = part / scale if scale else torch.zeros(())
                loss = loss + part
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, "kl": self.kl, "kl_weight": self.kl_weight,
                "kl_temperature": self.kl_temperature, "kl_detach_teacher": self.kl_detach_teacher,
                "reduction": self.reduction, "weights": {str(k): v for k, v in self.weights.items()}}
