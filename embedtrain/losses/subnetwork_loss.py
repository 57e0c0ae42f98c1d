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

Loss = ``sum_i w_i * inner(sub_i) / sum_i w_i + kl_weight * mean_i KL_i``, where ``KL_i`` is the
KL divergence from the full model's in-batch similarity distribution (teacher, no gradient) to
sub-network ``i``'s: rows are the anchors (first column), candidates all other columns (positives and
hard negatives; the anchors themselves for one-column data), cosine similarity over
``kl_temperature``. It is exactly zero for the full model itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.gradcache import uses_gradient_cache
from sentence_transformers.base.losses.merged_forward import column_merging_disabled
from torch import Tensor, nn

from embedtrain.models.subnetworks import Pair, SubnetworkEmbedder

#: Returns the sub-networks to train this step (``(layers, dim)``, full model included if wanted).
PairPicker = Callable[[], Sequence[Pair]]


def similarity_kl(teacher: Sequence[Tensor], student: Sequence[Tensor], temperature: float,
                  chunk: int | None = None) -> Tensor:
    """KL(teacher || student) of in-batch similarity distributions, averaged over anchor rows.

    ``teacher``/``student`` are per-column embeddings (column 0 = anchors). The teacher is detached.
    """
    def split(cols: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        anchors = F.normalize(cols[0], dim=-1)
        candidates = torch.cat(list(cols[1:]), dim=0) if len(cols) > 1 else cols[0]
        return anchors, F.normalize(candidates, dim=-1)

    t_anchor, t_cand = split([c.detach() for c in teacher])
    s_anchor, s_cand = split(student)
    rows = s_anchor.size(0)
    chunk = chunk or rows
    total = s_anchor.new_zeros(())
    for begin in range(0, rows, chunk):
        end = min(begin + chunk, rows)
        target = F.log_softmax(t_anchor[begin:end] @ t_cand.T / temperature, dim=-1)
        pred = F.log_softmax(s_anchor[begin:end] @ s_cand.T / temperature, dim=-1)
        total = total + F.kl_div(pred, target, reduction="sum", log_target=True)
    return total / rows


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
    """Wrap ``inner`` so that it trains every sub-network returned by ``picker`` each step."""

    def __init__(self, model: Any, inner: nn.Module, picker: PairPicker, *, kl_weight: float = 1.0,
                 kl_temperature: float = 0.3, weights: dict[Pair, float] | None = None,
                 name: str = "subnetwork") -> None:
        super().__init__()
        if kl_temperature <= 0:
            raise ValueError("kl_temperature must be > 0")
        if kl_weight < 0:
            raise ValueError("kl_weight must be >= 0")
        self.model = model
        self.loss = inner
        self.picker = picker
        self.kl_weight = float(kl_weight)
        self.kl_temperature = float(kl_temperature)
        self.weights = dict(weights or {})
        self.name = name
        self.embedder = SubnetworkEmbedder(model)
        self.uses_gradient_cache = uses_gradient_cache(inner)
        #: Sub-networks of the step in progress (trained) and all that are embedded (+ the teacher).
        self._trained: list[Pair] = []
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
        full = self.embedder.full_pair
        self._trained = trained
        self._embedded = trained + ([full] if full not in trained and self.kl_weight > 0 else [])
        self._parts = {"inner": {}, "kl": {}}

    @property
    def last_parts(self) -> dict[str, dict[Pair, float]]:
        """Last step's unweighted parts, for logging and tests: ``{"inner": {pair: v}, "kl": {pair: v}}``."""
        return {kind: {pair: float(v) for pair, v in parts.items()} for kind, parts in self._parts.items()}

    def _weight(self, pair: Pair) -> float:
        return float(self.weights.get(pair, 1.0))

    def _kl_pairs(self) -> list[Pair]:
        full = self.embedder.full_pair
        return [p for p in self._trained if p != full] if self.kl_weight > 0 else []

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

            total_weight = sum(self._weight(p) for p in self._trained)
            loss: Tensor | float = 0.0
            with forward_answered_by(model, answer):
                for pair in self._trained:
                    current["index"] = self._embedded.index(pair)
                    part = self.loss(features, labels)
                    self._parts["inner"][pair] = part.detach()
                    loss = loss + self._weight(pair) * part / total_weight
        kl_pairs = self._kl_pairs()
        if kl_pairs:
            full_idx = self._embedded.index(self.embedder.full_pair)
            teacher = [embs[full_idx] for embs in per_column]
            kl_total: Tensor | float = 0.0
            for pair in kl_pairs:
                idx = self._embedded.index(pair)
                kl = similarity_kl(teacher, [embs[idx] for embs in per_column], self.kl_temperature)
                self._parts["kl"][pair] = kl.detach()
                kl_total = kl_total + kl
            loss = loss + self.kl_weight * kl_total / len(kl_pairs)
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
        total_weight = sum(self._weight(p) for p in self._trained)
        loss = reps[0][0].new_zeros(())

        def run(pair: Pair, fn: Callable[[list[list[Tensor]]], Tensor], scale: float) -> Tensor:
            sliced = per_pair[self._embedded.index(pair)]
            if not with_backward:
                return fn(sliced) * scale
            leaves = [[t.detach().requires_grad_() for t in col] for col in sliced]
            value = fn(leaves)
            targets = [t for col in sliced for t in col]
            grads = [leaf.grad for col in leaves for leaf in col]
            kept = [(t, g) for t, g in zip(targets, grads) if g is not None]
            if kept:  # push the sub-network's gradients on into the wide tensors' .grad
                torch.autograd.backward([t for t, _ in kept], [scale * g for _, g in kept])
            return value.detach() * scale

        for pair in self._trained:
            scale = self._weight(pair) / total_weight
            part = run(pair, lambda r: original(r, *args, with_backward=with_backward, **kwargs), scale)
            self._parts["inner"][pair] = part / scale if scale else torch.zeros(())
            loss = loss + part
        kl_pairs = self._kl_pairs()
        if kl_pairs:
            teacher = [torch.cat(col) for col in per_pair[self._embedded.index(self.embedder.full_pair)]]
            chunk = getattr(self.loss, "mini_batch_size", None)
            for pair in kl_pairs:
                scale = self.kl_weight / len(kl_pairs)

                def kl_fn(r: list[list[Tensor]]) -> Tensor:
                    value = similarity_kl(teacher, [torch.cat(col) for col in r], self.kl_temperature, chunk)
                    if with_backward:
                        value.backward()
                    return value

                part = run(pair, kl_fn, scale)
                self._parts["kl"][pair] = part / scale if scale else torch.zeros(())
                loss = loss + part
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, "kl_weight": self.kl_weight,
                "kl_temperature": self.kl_temperature, "weights": {str(k): v for k, v in self.weights.items()}}
