"""GISTEmbed: contrastive loss whose false negatives are masked by a frozen guide model (``gist``).

For each query the guide scores the query-positive pair; every in-batch candidate (other positives,
other anchors, hard negatives) that the guide rates more similar to the query than
``positive_score - margin`` (``absolute``) or ``positive_score - |positive_score| * margin``
(``relative``) is treated as a likely false negative and masked out of the softmax.

The guide can be a model (run on every batch) or a table of its embeddings computed once beforehand
(:func:`write_guide_embeddings`, recipe parameter ``guide_embeddings``): a strong guide such as
all-mpnet-base-v2 costs several times the student's own forward and backward pass per step on a CPU,
and the table makes it free.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.util import all_gather_with_grad, batch_to_device, get_rank
from torch import Tensor, nn

from embedtrain.errors import DataError
from embedtrain.losses.registry import CONTRASTIVE_FORMATS, register_loss
from embedtrain.models.resolve import load_model, resolve_model_path

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext

logger = logging.getLogger(__name__)

MarginStrategy = Literal["absolute", "relative"]


def guide_path(name_or_path: str, ctx: LossContext, param: str = "guide"):
    """The local folder of the guide (relative to the recipe, or a packaged name); errors at ``params.<param>``."""
    if ctx.recipe is not None:
        loc = (*ctx.loc, "params", param)
        origin = ctx.recipe.override_of(*loc)
        return resolve_model_path(name_or_path, base_dir=ctx.base_dir, file=None if origin else ctx.recipe_file,
                                  line=None if origin else ctx.recipe.line_of(*loc),
                                  field=f"{ctx.field}.params.{param}" + (f" (from --set '{origin}')" if origin else ""))
    return resolve_model_path(name_or_path, base_dir=ctx.base_dir, file=ctx.recipe_file, line=ctx.line,
                              field=f"{ctx.field}.params.{param}")


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


# -- precomputed guide embeddings ----------------------------------------------------------------------------
def write_guide_embeddings(guide, texts: Sequence[str], path: str | Path, *, batch_size: int = 64) -> Path:
    """Embed ``texts`` with ``guide`` (a SentenceTransformer) once and save them for ``guide_embeddings``.

    The file (``.npz``: ``texts``, ``embeddings``) must hold every text the training data can show the loss:
    anchors, positives, negatives and, with dynamic re-mining, the candidates and corpus.
    """
    texts = list(dict.fromkeys(texts))
    emb = guide.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, texts=np.array(texts, dtype=str), embeddings=np.asarray(emb, dtype=np.float32))
    return path


class GuideEmbeddingTable(nn.Module):
    """A frozen guide whose sentence embeddings were computed beforehand and are looked up by text.

    It reads the *student's* features: each row's ``input_ids`` are decoded with the student's tokenizer
    and looked up under the same decoding of the table's texts (truncated at the student's
    ``max_seq_length``), so the texts match whatever the tokenizer normalises (case, accents, spaces).
    A text that is not in the table is an error naming it.
    """

    def __init__(self, texts: Sequence[str], embeddings: np.ndarray | Tensor, tokenizer, max_seq_length: int | None,
                 source: str | Path | None = None) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.source = source
        self.register_buffer("table", torch.as_tensor(np.asarray(embeddings, dtype=np.float32)))
        ids = tokenizer(list(texts), truncation=max_seq_length is not None, max_length=max_seq_length)["input_ids"]
        self.index = {key: i for i, key in enumerate(tokenizer.batch_decode(ids, skip_special_tokens=True))}

    @classmethod
    def load(cls, path: str | Path, model) -> GuideEmbeddingTable:
        path = Path(path)
        with np.load(path, allow_pickle=False) as data:
            if "texts" not in data.files or "embeddings" not in data.files:
                raise DataError("a guide embeddings file needs the arrays 'texts' and 'embeddings' "
                                "(see embedtrain.losses.gist.write_guide_embeddings)", file=path)
            texts, emb = [str(t) for t in data["texts"]], data["embeddings"]
        if len(texts) != len(emb):
            raise DataError(f"{len(texts)} texts but {len(emb)} embeddings", file=path)
        return cls(texts, emb, model.tokenizer, getattr(model, "max_seq_length", None), source=path)

    @property
    def device(self) -> torch.device:
        return self.table.device

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        texts = self.tokenizer.batch_decode(features["input_ids"], skip_special_tokens=True)
        rows = [self.index.get(t) for t in texts]
        missing = [t for t, r in zip(texts, rows) if r is None]
        if missing:
            raise DataError(f"text not in the guide embeddings table: {missing[0]!r} ({len(missing)} of "
                            f"{len(texts)} in this batch); embed every training text with write_guide_embeddings",
                            file=self.source)
        return {**features, "sentence_embedding": self.table[torch.tensor(rows, device=self.table.device)]}


@register_loss("gist", formats=CONTRASTIVE_FORMATS,
               description="GISTEmbed: MNRL whose false negatives are masked by a frozen guide model")
class MultiNegativeGISTEmbedLoss(MaskedCandidateStats, st_losses.GISTEmbedLoss):
    """sentence-transformers' ``GISTEmbedLoss`` that also takes several hard-negative columns.

    Every column is embedded on its own (no merged forward), so ``negative_1 ... negative_n`` may have
    different features and the loss works inside the sub-network wrappers (``starbucks``,
    ``matryoshka2d``); the negative columns' embeddings are then stacked, so every hard negative of every
    row is a candidate for every query, as in MNRL. The guide's embeddings are computed once per batch and
    reused when a wrapper scores several sub-networks on the same batch.

    Args:
        model: the SentenceTransformer being trained.
        guide: the frozen guide model (in a recipe: its folder, relative to the recipe, or a packaged name;
            ``guide: all-MiniLM-L6-v2`` while training all-MiniLM-L6-v2 uses a frozen copy of the start model),
            or a :class:`GuideEmbeddingTable` (recipe: ``guide_embeddings: FILE`` instead of ``guide``).
        temperature: softmax temperature; default 0.01.
        margin_strategy / margin: how close to the positive's guide score a candidate may come before it is
            masked (``absolute``: ``p - margin``; ``relative``: ``p - |p| * margin``).
        contrast_anchors / contrast_positives: also contrast anchor-anchor / positive-positive pairs.
        gather_across_devices: share in-batch candidates across processes.

    Inputs:
        +------------------------------------------------+--------+
        | Texts                                          | Labels |
        +================================================+========+
        | (anchor, positive) pairs                       | none   |
        +------------------------------------------------+--------+
        | (anchor, positive, negative_1..n)              | none   |
        +------------------------------------------------+--------+

    Training logs ``gist_masked_fraction``: the share of in-batch candidates the guide masked (see
    :class:`MaskedCandidateStats`); near 0 the guide changes nothing, near 1 little is left to contrast.

    Example::

        loss: {name: gist, params: {guide: all-mpnet-base-v2, margin_strategy: relative, margin: 0.05}}
        loss: {name: gist, params: {guide_embeddings: mpnet_guide.npz}}   # precomputed guide

    Citation: Solatorio, "GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding
    Fine-tuning", 2024 (arXiv:2402.16829).
    """

    def __init__(self, model, guide, temperature: float = 0.01, margin_strategy: MarginStrategy = "absolute",
                 margin: float = 0.0, contrast_anchors: bool = True, contrast_positives: bool = True,
                 gather_across_devices: bool = False) -> None:
        super().__init__(model, guide, temperature=temperature, margin_strategy=margin_strategy, margin=margin,
                         contrast_anchors=contrast_anchors, contrast_positives=contrast_positives,
                         gather_across_devices=gather_across_devices)
        if isinstance(guide, GuideEmbeddingTable):
            self.must_retokenize = False  # the table reads the student's own tokens
        #: (feature dicts, guide embeddings) of the last batch; the dicts are held, so their ids stay unique.
        self._guide_cache: tuple[list[dict[str, Any]], list[Tensor]] | None = None
        #: How many times the guide actually ran (for tests and logs).
        self.guide_calls = 0
        self._start_counting()

    def guide_columns(self, features: list[dict[str, Any]]) -> list[Tensor]:
        """The guide's embedding of every column; computed once per batch (the same feature dicts)."""
        cached = self._guide_cache
        if cached is not None and len(cached[0]) == len(features) and all(
                a is b for a, b in zip(cached[0], features)):
            return cached[1]
        with torch.no_grad():
            if self.must_retokenize:
                texts = [self.tokenizer.batch_decode(f["input_ids"], skip_special_tokens=True) for f in features]
                guide_features = [batch_to_device(self.guide.preprocess(t), self.guide.device) for t in texts]
            else:  # shallow copies: the guide writes its outputs into the dict it is given
                guide_features = [dict(f) for f in features]
            out = embed_columns(self.guide, guide_features)
        self.guide_calls += 1
        self._guide_cache = (list(features), out)
        return out

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        features = list(sentence_features)
        if len(features) < 2:
            raise ValueError(f"gist needs (anchor, positive[, negatives...]) columns, got {len(features)}")
        embeddings = embed_columns(self.model, features)
        return self.guided_loss(embeddings, self.guide_columns(features))

    def guided_loss(self, embeddings: list[Tensor], guide: list[Tensor]) -> Tensor:
        """The GIST loss from per-column student and guide embeddings (column 0 anchors, 1 positives, rest
        negatives)."""
        anchor, positive = embeddings[0], embeddings[1]
        anchor_g, positive_g = guide[0], guide[1]
        negative = torch.cat(embeddings[2:]) if len(embeddings) > 2 else None
        negative_g = torch.cat(guide[2:]) if len(guide) > 2 else None
        batch_size, offset = anchor.size(0), 0
        if self.gather_across_devices:  # every process's candidates, this process's anchors
            positive, positive_g = all_gather_with_grad(positive), all_gather_with_grad(positive_g)
            if negative is not None:
                negative, negative_g = all_gather_with_grad(negative), all_gather_with_grad(negative_g)
            offset = get_rank() * batch_size
        rows = torch.arange(batch_size, device=anchor.device)
        # each anchor's threshold: the guide's score of its own pair, minus the margin
        pair_score = self.sim_matrix(anchor_g, positive_g)[rows, offset + rows].unsqueeze(1)
        slack = self.margin if self.margin_strategy == "absolute" else pair_score.abs() * self.margin
        threshold = pair_score - slack

        def masked(student: Tensor, guided: Tensor, keep: Tensor | None = None) -> Tensor:
            drop = guided > threshold
            if keep is not None:
                drop = drop & ~keep
            return student.masked_fill(drop, float("-inf"))

        true_pair = torch.zeros(batch_size, positive.size(0), dtype=torch.bool, device=anchor.device)
        true_pair[rows, offset + rows] = True
        blocks = [masked(self.sim_matrix(anchor, positive), self.sim_matrix(anchor_g, positive_g), true_pair)]
        if self.contrast_anchors:
            blocks.append(masked(self.sim_matrix(anchor, anchor), self.sim_matrix(anchor_g, anchor_g)))
        if self.contrast_positives:
            mine = slice(offset, offset + batch_size)
            blocks.append(masked(self.sim_matrix(positive[mine], positive), self.sim_matrix(positive_g[mine], positive_g)))
        if negative is not None:
            blocks.append(masked(self.sim_matrix(anchor, negative), self.sim_matrix(anchor_g, negative_g)))
        scores = torch.cat(blocks, dim=1) / self.temperature
        return self.cross_entropy_loss(scores, offset + rows)

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        if ("guide" in params) == ("guide_embeddings" in params):
            raise ctx.error("set either 'guide' (a model) or 'guide_embeddings' (a file of its precomputed "
                            "embeddings)", "params")
        if "guide" in params:
            guide_path(params["guide"], ctx)
        else:
            path = ctx.resolve_path(params["guide_embeddings"])
            if not path.is_file():
                raise ctx.error(f"guide embeddings file not found: {path}", "params.guide_embeddings")

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *, guide: str | None = None, guide_embeddings: str | None = None,
                    temperature: float = 0.01, margin_strategy: MarginStrategy = "absolute", margin: float = 0.0,
                    contrast_anchors: bool = True, contrast_positives: bool = True,
                    gather_across_devices: bool = False):
        check_margin(margin_strategy, margin)
        cls.check_recipe(ctx, {k: v for k, v in (("guide", guide), ("guide_embeddings", guide_embeddings))
                               if v is not None})
        if guide is not None:
            guide_model = load_guide(guide, model, ctx)
        else:
            guide_model = GuideEmbeddingTable.load(ctx.resolve_path(guide_embeddings), model).to(model.device)
            logger.info("gist: %d precomputed guide embeddings from %s", len(guide_model.index), guide_embeddings)
        return cls(model, guide_model, temperature=temperature, margin_strategy=margin_strategy,
                   margin=margin, contrast_anchors=contrast_anchors, contrast_positives=contrast_positives,
                   gather_across_devices=gather_across_devices)
