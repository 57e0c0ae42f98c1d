"""Length bucketing *inside* a batch: the same rows, embedded in length-sorted chunks with less padding.

A batch of short sentences is padded to its longest row: on STS Benchmark pairs (mean 14 tokens) a random
batch of 64 is padded to ~2.8x the tokens it holds, and every padded token costs as much compute as a real
one. Sorting the *dataset* by length would remove the padding but make batches uniform in length, and so
correlated in content (short with short), which changes what in-batch negatives teach. Here the batch
keeps exactly the rows the sampler chose (random, duplicate-free, one dataset per batch): only the
forward pass changes. :func:`bucketed_forward` sorts the batch's rows by length, splits them into chunks
(:func:`plan_chunks`), embeds each chunk trimmed to its own longest row, and puts the outputs back in the
original row order. Each row sees exactly its own tokens either way (padding is masked), so the
embeddings, the loss and the gradients are those of the padded batch up to float rounding; dropout masks
are drawn per chunk.

Where the split points fall is a cost trade-off: every extra forward pass has a fixed cost (Python,
kernel launches, smaller and so slower matrix products), worth ``overhead_tokens`` padded tokens.
:func:`plan_chunks` picks the split that minimises ``sum(rows * width * (1 + width / attention_width))
+ chunks * overhead_tokens`` exactly (dynamic programming over the distinct lengths). The default
overheads (:data:`DEFAULT_OVERHEAD_TOKENS`) were measured on CPU (docs/throughput.md); on a GPU a pass
costs far more than a token, so batches split only around very long outliers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

#: Fixed cost of one extra forward pass, in padded tokens, per device type (see the module docstring).
DEFAULT_OVERHEAD_TOKENS: dict[str, int] = {"cpu": 256, "cuda": 65536, "xpu": 65536, "mps": 8192}
#: Feature keys that are per-token (sliced along the sequence) or batch metadata (passed through).
TOKEN_KEYS = frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids"})
PASS_KEYS = frozenset({"prompt_length", "task", "dataset_name"})
#: Outputs that are per token (re-padded to the batch width when merged).
TOKEN_OUTPUTS = frozenset({"token_embeddings", "all_layer_embeddings"})
MARK = "_embedtrain_bucketed"


def plan_chunks(lengths: np.ndarray, overhead_tokens: float, attention_width: float | None = None
                ) -> list[np.ndarray]:
    """Row indices of each chunk (longest rows first) minimising padded compute + per-chunk overhead.

    ``lengths`` are the real token counts of the rows. A chunk costs ``rows * w * (1 + w /
    attention_width) + overhead_tokens`` with ``w`` its longest row (``attention_width=None``: no
    quadratic attention term). Rows of equal length always share a chunk, so the search runs over the
    distinct lengths only.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    if len(lengths) <= 1:
        return [order]
    widths, counts = np.unique(lengths[order], return_counts=True)
    widths, counts = widths[::-1].astype(np.float64), counts[::-1]  # longest first
    per_row = widths * (1.0 + widths / attention_width) if attention_width else widths
    rows_before = np.concatenate([[0], np.cumsum(counts)])  # rows in groups [0, g)
    n = len(widths)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    cut = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):  # chunk = groups [start, end), its width is that of group `start`
        starts = np.arange(end)
        cost = best[:end] + (rows_before[end] - rows_before[starts]) * per_row[starts] + overhead_tokens
        cut[end] = int(np.argmin(cost))
        best[end] = cost[cut[end]]
    bounds = []
    end = n
    while end > 0:
        bounds.append((cut[end], end))
        end = cut[end]
    return [order[rows_before[s]:rows_before[e]] for s, e in reversed(bounds)]


def _bucketable(features: dict[str, Any]) -> Tensor | None:
    """The 2-D attention mask when every tensor in ``features`` can be sliced by row and token, else None."""
    mask = features.get("attention_mask")
    if not isinstance(mask, Tensor) or mask.ndim != 2 or mask.shape[0] < 2:
        return None
    for key, value in features.items():
        if not isinstance(value, Tensor) or key in PASS_KEYS:
            continue
        if key not in TOKEN_KEYS or value.shape[:2] != mask.shape:
            return None  # flattened (cu_seq_lens), images, outputs already present...: leave the batch alone
    return mask


def _slice(features: dict[str, Any], rows: Tensor, width: int) -> dict[str, Any]:
    return {key: value.index_select(0, rows)[:, :width] if isinstance(value, Tensor) and key in TOKEN_KEYS else value
            for key, value in features.items()}


def _merge_values(values: list[Any], chunks: list[Tensor], widths: list[int], inverse: Tensor, seq_len: int,
                  token_aligned: bool) -> Any:
    first = values[0]
    if isinstance(first, (tuple, list)) and all(isinstance(v, type(first)) and len(v) == len(first) for v in values):
        return type(first)(_merge_values([v[i] for v in values], chunks, widths, inverse, seq_len, token_aligned)
                           for i in range(len(first)))
    if not (isinstance(first, Tensor) and first.ndim >= 1 and
            all(isinstance(v, Tensor) and v.shape[0] == len(c) for v, c in zip(values, chunks))):
        return first  # batch metadata (prompt_length...): the same for every chunk
    if first.ndim >= 2 and (token_aligned or (len(set(widths)) > 1 and
                                              all(v.shape[1] == w for v, w in zip(values, widths)))):
        padded = []
        for v in values:
            extra = seq_len - v.shape[1]
            padded.append(torch.nn.functional.pad(v, [0, 0] * (v.ndim - 2) + [0, extra]) if extra else v)
        values = padded
    return torch.cat(values, dim=0).index_select(0, inverse)


def _merge(outputs: list[dict[str, Any]], chunks: list[Tensor], widths: list[int], seq_len: int
           ) -> dict[str, Any]:
    """Per-row outputs of the chunks back in the original row order (token outputs re-padded to ``seq_len``)."""
    n_rows = sum(len(c) for c in chunks)
    inverse = torch.empty(n_rows, dtype=torch.long, device=chunks[0].device)
    inverse[torch.cat(chunks)] = torch.arange(n_rows, device=inverse.device)
    return {key: _merge_values([o[key] for o in outputs], chunks, widths, inverse, seq_len,
                               token_aligned=key in TOKEN_KEYS or key in TOKEN_OUTPUTS)
            for key in outputs[0]}


def bucketed_forward(forward: Callable[..., dict[str, Any]], *, overhead_tokens: float,
                     attention_width: float | None = None) -> Callable[..., dict[str, Any]]:
    """Wrap a SentenceTransformer ``forward`` so each call embeds its rows in length-sorted chunks.

    Calls whose features are not plain right-padded token batches (images, flattened sequences, left
    padding, one row) go straight to ``forward``. The input dict is updated with the merged outputs and returned, as the
    unwrapped forward does.
    """
    if getattr(forward, MARK, False):
        return forward

    @functools.wraps(forward)
    def run(features: dict[str, Any], *args, **kwargs) -> dict[str, Any]:
        mask = _bucketable(features)
        if mask is None:
            return forward(features, *args, **kwargs)
        lengths = mask.sum(dim=1)
        seq_len = mask.shape[1]
        # left padding (decoders): trimming it would shift positions, so such batches are left alone
        if not bool((mask.cumsum(dim=1) == torch.arange(1, seq_len + 1, device=mask.device).clamp(
                max=lengths.unsqueeze(1))).all()):
            return forward(features, *args, **kwargs)
        plan = plan_chunks(lengths.cpu().numpy(), overhead_tokens, attention_width)
        if len(plan) == 1 and int(lengths.max()) == seq_len:
            return forward(features, *args, **kwargs)
        chunks = [torch.as_tensor(p, dtype=torch.long, device=mask.device) for p in plan]
        widths = [int(lengths[rows].max()) for rows in chunks]
        outputs = [forward(_slice(features, rows, w), *args, **kwargs) for rows, w in zip(chunks, widths)]
        merged = _merge(outputs, chunks, widths, seq_len)
        features.update({k: v for k, v in merged.items() if k not in TOKEN_KEYS})
        return features

    setattr(run, MARK, True)
    return run


def install(model, *, overhead_tokens: float | None = None) -> bool:
    """Make ``model`` (a SentenceTransformer) embed every batch bucketed; False if it already does.

    ``overhead_tokens`` defaults to :data:`DEFAULT_OVERHEAD_TOKENS` for the model's device. The attention
    term uses the hidden size of the first module's transformer config when there is one.
    """
    if getattr(model.forward, MARK, False):
        return False
    device_type = getattr(getattr(model, "device", None), "type", "cpu")
    overhead = DEFAULT_OVERHEAD_TOKENS.get(device_type, 4096) if overhead_tokens is None else overhead_tokens
    config = getattr(getattr(model[0], "auto_model", None), "config", None) if len(model) else None
    hidden = getattr(config, "hidden_size", None)
    model.forward = bucketed_forward(model.forward, overhead_tokens=overhead,
                                     attention_width=3.0 * hidden if hidden else None)
    logger.info("length bucketing inside batches: on (%s, a forward pass costs ~%d padded tokens)",
                device_type, overhead)
    return True


def uninstall(model) -> None:
    """Undo :func:`install` (the instance forward goes back to the class's)."""
    if getattr(model.forward, MARK, False) and "forward" in vars(model):
        del model.forward
