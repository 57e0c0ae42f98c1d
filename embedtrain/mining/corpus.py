"""Text identities for mining at scale: 128-bit hashes instead of Python dicts of strings.

Mining needs, per input pair, the id of its positive in the corpus, the id of its distinct query, every positive
of that query, and whether the query's own text is in the corpus. With millions of texts, Python ``dict``s of
strings cost gigabytes; here every text is reduced to a 128-bit hash (:func:`text_hashes`) and identities are
found by sorting those hashes (:func:`first_occurrence_ids`), so the bookkeeping is a few integer arrays per
row and the texts themselves stay in memory-mapped Arrow columns. Two different texts with equal hashes
(probability about n^2 / 2^129) would be merged; the second 64-bit half is checked, so even a 64-bit collision
is caught and reported rather than silently merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from embedtrain.errors import DataError

HASH_CHUNK = 65536


def text_hashes(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``(n, 2)`` uint64: two independent 64-bit hashes of each text (polars when installed, else xxhash)."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    out = []
    try:
        import polars as pl
    except ImportError:
        pl = None
    for chunk in chunks:
        for start in range(0, len(chunk), HASH_CHUNK):
            part = chunk.slice(start, HASH_CHUNK)
            if pl is not None:
                series = pl.from_arrow(part)
                out.append(np.stack([series.hash(seed=0).to_numpy(), series.hash(seed=1).to_numpy()], axis=1)
                           .astype(np.uint64, copy=False))
            else:
                import xxhash

                digests = [xxhash.xxh3_128_intdigest(t.encode()) for t in part.to_pylist()]
                out.append(np.array([[d >> 64, d & ((1 << 64) - 1)] for d in digests], dtype=np.uint64)
                           .reshape(-1, 2))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.uint64)


def first_occurrence_ids(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, firsts)``: each element's id (distinct texts numbered in order of first occurrence) and the position
    of each distinct text's first occurrence."""
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    key, check = hashes[:, 0], hashes[:, 1]
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    group = np.cumsum(starts) - 1
    group_first = order[starts]  # stable sort: the smallest position of each group
    if not np.array_equal(check[order], check[group_first][group]):
        raise DataError("two different texts have the same 64-bit hash; mining cannot tell them apart "
                        "(astronomically rare: please report it)")
    rank = np.empty(len(group_first), dtype=np.int64)
    rank[np.argsort(group_first, kind="stable")] = np.arange(len(group_first))
    ids = np.empty(n, dtype=np.int64)
    ids[order] = rank[group]
    return ids, np.sort(group_first)


def lookup(hashes: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index in ``table`` (hashes of distinct texts) of each of ``hashes``; -1 where absent."""
    if len(table) == 0:
        return np.full(len(hashes), -1, dtype=np.int64)
    order = np.argsort(table[:, 0], kind="stable")
    sorted_key = table[order, 0]
    pos = np.clip(np.searchsorted(sorted_key, hashes[:, 0]), 0, len(sorted_key) - 1)
    found = (sorted_key[pos] == hashes[:, 0]) & (table[order[pos], 1] == hashes[:, 1])
    return np.where(found, order[pos], -1).astype(np.int64)


@dataclass
class MiningLayout:
    """Who is who in a mining run, as integer arrays (see the module docstring).

    The corpus is the documents followed by the positives, deduplicated in order of first occurrence; queries
    are the distinct anchors in order of first occurrence.
    """

    #: Per corpus id: position in the concatenation documents + positives of its first occurrence.
    corpus_sources: np.ndarray
    corpus_hashes: np.ndarray
    #: Per row: its query id and the corpus id of its positive.
    row_query: np.ndarray
    row_positive: np.ndarray
    #: Per query: the row of its first occurrence, and (CSR) the corpus ids of all its positives.
    query_rows: np.ndarray
    positive_starts: np.ndarray
    positive_ids: np.ndarray
    #: Per query: the corpus id of the query's own text (-1 when it is not in the corpus).
    self_ids: np.ndarray
    query_hashes: np.ndarray

    @property
    def corpus_size(self) -> int:
        return len(self.corpus_sources)

    @property
    def num_queries(self) -> int:
        return len(self.query_rows)

    def positives_of(self, q: int) -> np.ndarray:
        return self.positive_ids[self.positive_starts[q]:self.positive_starts[q + 1]]

    def max_positives(self) -> int:
        return int(np.diff(self.positive_starts).max()) if self.num_queries else 0


def build_layout(anchors: pa.ChunkedArray, positives: pa.ChunkedArray,
                 documents: pa.ChunkedArray | None) -> MiningLayout:
    """The :class:`MiningLayout` of pairs (``anchors``, ``positives``) mined against ``documents`` + positives."""
    doc_hashes = text_hashes(documents) if documents is not None else np.zeros((0, 2), dtype=np.uint64)
    pos_hashes = text_hashes(positives)
    all_hashes = np.concatenate([doc_hashes, pos_hashes])
    ids, firsts = first_occurrence_ids(all_hashes)
    corpus_hashes = all_hashes[firsts]
    anchor_hashes = text_hashes(anchors)
    row_query, query_rows = first_occurrence_ids(anchor_hashes)
    row_positive = ids[len(doc_hashes):]
    order = np.lexsort((row_positive, row_query))  # by query, then positive: duplicates become neighbours
    q_sorted, p_sorted = row_query[order], row_positive[order]
    keep = np.r_[True, (q_sorted[1:] != q_sorted[:-1]) | (p_sorted[1:] != p_sorted[:-1])]
    counts = np.bincount(q_sorted[keep], minlength=len(query_rows))
    starts = np.r_[0, np.cumsum(counts)].astype(np.int64)
    self_ids = lookup(anchor_hashes[query_rows], corpus_hashes)
    return MiningLayout(firsts, corpus_hashes, row_query, row_positive, query_rows, starts, p_sorted[keep],
                        self_ids, anchor_hashes[query_rows])
