"""Approximate nearest-neighbour search for mining with faiss (IVF or HNSW), and its recall against exact search.

Exact search (:func:`embedtrain.mining.search.top_k`, or a faiss flat index) scales with corpus x queries. For
large corpora :func:`build_index` builds a faiss inner-product index over the memory-mapped embeddings:

* ``ivf``: ``IndexIVFFlat`` with ``ivf_lists`` k-means cells (default ``4 * sqrt(n)``), trained on a sample of
  at most 256 vectors per cell; ``ivf_probe`` cells are searched per query.
* ``hnsw``: ``IndexHNSWFlat`` with ``hnsw_m`` links per node, searched with ``efSearch = hnsw_ef_search``.

The index is built once by the main process, written next to the embeddings (named by their fingerprint and the
index parameters, so later runs reuse it) and read by the other ranks. :func:`recall_at_k` compares the
approximate lists with exact search on a sample of queries, the figure to report with any approximate run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embedtrain.mining.collective import Collective

logger = logging.getLogger(__name__)


def _faiss():
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError:
        raise ImportError("approximate search needs the faiss package: pip install 'embedtrain[faiss]'") from None
    return faiss


def ivf_lists_for(n: int, lists: int | None) -> int:
    """Number of IVF cells: ``lists`` or ``4 * sqrt(n)``, at most ``n / 39`` (faiss wants >= 39 points per cell)."""
    wanted = lists if lists is not None else int(4 * np.sqrt(max(n, 1)))
    return max(1, min(wanted, n // 39 if n >= 39 else 1))


def build_index(corpus: np.ndarray, kind: str, path: Path, collective: Collective, *, ivf_lists: int | None = None,
                hnsw_m: int = 32, seed: int = 0, chunk: int = 65536):
    """An ``ivf`` or ``hnsw`` faiss index over ``corpus`` (built by rank 0, saved at ``path``, read by all)."""
    faiss = _faiss()
    n, dim = corpus.shape
    if collective.rank == 0 and not path.is_file():
        if kind == "ivf":
            lists = ivf_lists_for(n, ivf_lists)
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(n, size=min(n, 256 * lists), replace=False))
            index.train(np.ascontiguousarray(corpus[sample], dtype=np.float32))
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        else:
            raise ValueError(f"unknown index kind '{kind}'")
        for start in range(0, n, chunk):
            index.add(np.ascontiguousarray(corpus[start:start + chunk], dtype=np.float32))
        tmp = path.with_name(path.name + ".partial")
        faiss.write_index(index, str(tmp))
        tmp.replace(path)
        logger.info("built %s index over %d vectors: %s", kind, n, path)
    collective.barrier()
    return faiss.read_index(str(path))


def search_index(index, queries: np.ndarray, k: int, *, ivf_probe: int = 32,
                 hnsw_ef_search: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of the ``k`` best per query (missing slots: score -inf, id -1)."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = ivf_probe
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = max(hnsw_ef_search, k)
    kk = min(k, index.ntotal)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    if len(queries) and kk:
        s, i = index.search(np.ascontiguousarray(queries, dtype=np.float32), kk)
        scores[:, :kk], ids[:, :kk] = s, i
    scores[ids < 0] = -np.inf
    return scores, ids


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean share of each query's exact top ``k`` that the approximate top ``k`` found."""
    if len(exact_ids) == 0:
        return float("nan")
    hits = [len(set(a[:k][a[:k] >= 0]) & set(e[:k][e[:k] >= 0])) / max(1, int((e[:k] >= 0).sum()))
            for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits))
