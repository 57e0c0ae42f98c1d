"""Dynamic re-mining at the loss's cost: reuse the anchor-negative similarities training already computes.

Conan-style re-mining (:mod:`embedtrain.mining.dynamic`) needs, for every row trained on since the last
round, the mean cosine between its anchor and its current negatives under the current model. Re-encoding
those rows costs about a third of the training forward+backward they just had. But the loss already
embedded exactly these texts (with the training prompts) in its forward pass: :class:`LossTap` keeps those
embeddings for the length of one loss call and turns them into the per-row score, so a round only has to
decide.

How the rows are known: the dataset view carries each row's index in its ``label`` column
(:meth:`NegativeTable.wrap(carry_rows=True) <embedtrain.mining.table.NegativeTable.wrap>`);
sentence-transformers passes it to the loss as ``labels``. The tap takes it out and calls the loss with
``labels=None``, as it would be called without mining. The trained model's forward is wrapped by one
:class:`EmbeddingRecorder`, which hands the ``sentence_embedding`` of every call made while a tap is
listening to that tap. The losses embed the columns in order (anchor, positive, negative_1..n; merged
candidate columns are stacked column-major; GradCache losses embed mini-batches in order without
gradients first), so the recorded rows, concatenated, are ``(2 + n) * batch`` embeddings; any other count
(a loss that embeds differently) records nothing for that batch, and those rows are re-encoded as before.

Differences from re-encoding, both small and documented in docs/throughput.md: the captured score is
taken in training mode (dropout on, the run's precision) and before that batch's optimizer step.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from torch import Tensor

from embedtrain.mining.table import NegativeTable

logger = logging.getLogger(__name__)

RECORDER_ATTR = "_embedtrain_recorder"
TAP_MARK = "_embedtrain_tap"


class EmbeddingRecorder:
    """Wraps a SentenceTransformer's ``forward``; while a sink is set, sends it each call's embeddings."""

    def __init__(self) -> None:
        self.sink: list[Tensor] | None = None

    @classmethod
    def on(cls, model) -> EmbeddingRecorder:
        """The recorder of ``model``, installed on its forward the first time."""
        recorder = getattr(model.forward, RECORDER_ATTR, None)
        if recorder is not None:
            return recorder
        recorder = cls()
        forward = model.forward

        @functools.wraps(forward)
        def run(features, *args, **kwargs):
            out = forward(features, *args, **kwargs)
            if recorder.sink is not None:
                emb = out.get("sentence_embedding") if hasattr(out, "get") else None
                if isinstance(emb, Tensor):
                    recorder.sink.append(emb.detach())
            return out

        setattr(run, RECORDER_ATTR, recorder)
        model.forward = run
        return recorder


def row_scores(embeddings: Tensor, batch: int, num_negatives: int) -> Tensor:
    """Per row, the mean cosine of its anchor with its ``num_negatives`` negatives.

    ``embeddings`` are the loss's column-major rows: anchors (``batch``), positives (``batch``), then each
    negative column (``batch`` each).
    """
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    anchors = e[:batch]
    negatives = e[2 * batch:].reshape(num_negatives, batch, -1)
    return torch.einsum("bd,kbd->bk", anchors, negatives).mean(dim=1)


class LossTap:
    """Wraps one dataset's loss so each call records its rows' anchor-negative scores into ``table``."""

    def __init__(self, table: NegativeTable, recorder: EmbeddingRecorder) -> None:
        self.table = table
        self.recorder = recorder
        self.batches = 0
        self.missed = 0

    def install(self, loss) -> None:
        forward = loss.forward
        if getattr(forward, TAP_MARK, None) is not None:
            raise ValueError("this loss already reports its similarities to a table")

        @functools.wraps(forward)
        def run(sentence_features, labels=None, *args, **kwargs):
            rows = labels
            if not (isinstance(rows, Tensor) and rows.ndim == 1) or not torch.is_grad_enabled():
                return forward(sentence_features, None if isinstance(rows, Tensor) else labels, *args, **kwargs)
            sink: list[Tensor] = []
            outer, self.recorder.sink = self.recorder.sink, sink
            try:
                out = forward(sentence_features, None, *args, **kwargs)
            finally:
                self.recorder.sink = outer
            self.record(rows, sink)
            return out

        setattr(run, TAP_MARK, self)
        loss.forward = run

    def record(self, rows: Tensor, outputs: list[Tensor]) -> None:
        batch, n = len(rows), self.table.num_negatives
        self.batches += 1
        total = sum(o.shape[0] for o in outputs)
        if total != (2 + n) * batch:
            self.missed += 1
            if self.missed == 1:
                logger.warning("dynamic mining [%s]: the loss embedded %d rows for a batch of %d with %d negatives "
                               "(expected %d); its rows are re-encoded at the next round instead", self.table.name,
                               total, batch, n, (2 + n) * batch)
            return
        with torch.no_grad():
            scores = row_scores(torch.cat(outputs, dim=0), batch, n)
        self.table.capture(rows.tolist(), scores.tolist())


def tap_loss(table: NegativeTable, model, loss: Any) -> LossTap:
    """Make ``loss`` report ``table``'s rows' anchor-negative scores while training ``model``."""
    tap = LossTap(table, EmbeddingRecorder.on(model))
    tap.install(loss)
    return tap
