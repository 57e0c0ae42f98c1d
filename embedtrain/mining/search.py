"""Batched encoding and memory-bounded exact top-k retrieval.

:func:`encode_texts` embeds texts in chunks (so a progress bar can advance) with unit-length
output, making inner product = cosine. :func:`top_k` finds the ``k`` best documents per query
either with torch, holding at most ``query_chunk_size x corpus_chunk_size`` scores at a time and
merging running top-k lists, or with a flat faiss inner-product index.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from embedtrain.models.precision import Precision

Advance = Callable[[int], None]


def encode_texts(model, texts: Sequence[str], *, kind: str = "document", prompt: str | None = None,
                 batch_size: int = 64, chunk_size: int = 2048, advance: Advance | None = None,
                 precision: Precision | None = None) -> np.ndarray:
    """Unit-normalised float32 embeddings of ``texts``, shape ``(len(texts), dim)``.

    ``kind`` is ``"query"`` or ``"document"``: with ``prompt=None`` the model's own ``query`` /
    ``document`` prompt applies (``encode_query`` / ``encode_document``); a string ``prompt`` is
    prepended instead. ``kind="plain"`` uses ``encode`` and only ``prompt`` (as the trainer does
    with per-column prompts). ``advance(n)`` is called after each chunk of ``n`` texts. ``precision``
    (:func:`embedtrain.models.precision.choose_precision`) runs the model in bf16 autocast; None or fp32
    encodes exactly as the model is.
    """
    encode = getattr(model, {"query": "encode_query", "document": "encode_document", "plain": "encode"}[kind])
    context = precision.context if precision is not None else contextlib.nullcontext
    chunks = []
    for start in range(0, len(texts), chunk_size):
        part = list(texts[start:start + chunk_size])
        with context():
            emb = encode(part, prompt=prompt, batch_size=batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
        chunks.append(np.asarray(emb, dtype=np.float32))
        if advance is not None:
            advance(len(part))
    if not chunks:
        dim = model.get_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(chunks, axis=0)


def effective_prompt(model, kind: str, prompt: str | None) -> str:
    """The text :func:`encode_texts` puts before each text for ``kind`` and ``prompt`` ("" for none).

    sentence-transformers' rules: an explicit ``prompt`` wins; else ``encode_query`` takes the model's ``query``
    prompt and ``encode_document`` its ``document``, ``passage`` or ``corpus`` prompt, the first one defined;
    else the model's ``default_prompt_name``.
    """
    if prompt is not None:
        return prompt
    prompts = getattr(model, "prompts", None) or {}
    for name in {"query": ("query",), "document": ("document", "passage", "corpus"), "plain": ()}[kind]:
        if name in prompts:
            return prompts[name] or ""
    default = getattr(model, "default_prompt_name", None)
    return (prompts.get(default) or "") if default is not None else ""


def same_query_and_document_vectors(model, texts: Sequence[str], *, query_prompt: str | None,
                                    document_prompt: str | None, batch_size: int = 64,
                                    precision: Precision | None = None) -> bool:
    """Whether a text embedded as a query gets the vector it gets as a document, so one encoding serves both.

    The prompts must resolve to the same string (:func:`effective_prompt`), and ``texts`` (a sample of the
    texts that are both: pass the longest ones, which a per-side maximum length would cut) must embed to the
    same vectors through ``encode_query`` and ``encode_document``: that catches whatever else routes by side
    (a ``Router`` module, task adapters, per-side lengths, query expansion).
    """
    if effective_prompt(model, "query", query_prompt) != effective_prompt(model, "document", document_prompt):
        return False
    if not len(texts):
        return True
    texts = list(texts)
    q = encode_texts(model, texts, kind="query", prompt=query_prompt, batch_size=batch_size, precision=precision)
    d = encode_texts(model, texts, kind="document", prompt=document_prompt, batch_size=batch_size,
                     precision=precision)
    return bool(np.abs(q - d).max() <= 1e-5)


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, *, query_chunk_size: int = 1024,
          corpus_chunk_size: int = 16384, use_faiss: bool = False,
          advance: Advance | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores and corpus ids of the ``k`` highest inner products per query, best first.

    Returns ``(scores, ids)`` of shape ``(n_queries, k)``; when the corpus has fewer than ``k``
    documents the missing slots hold score ``-inf`` and id ``-1``. ``advance(n)`` is called after
    each chunk of ``n`` queries.
    """
    n_q = queries.shape[0]
    scores_out = np.full((n_q, k), -np.inf, dtype=np.float32)
    ids_out = np.full((n_q, k), -1, dtype=np.int64)
    if n_q == 0 or corpus.shape[0] == 0:
        return scores_out, ids_out
    if use_faiss:
        return _top_k_faiss(queries, corpus, k, query_chunk_size, scores_out, ids_out, advance)
    with warnings.catch_warnings():  # a read-only memory map: torch only reads it
        warnings.simplefilter("ignore", UserWarning)
        corpus_t = torch.from_numpy(np.ascontiguousarray(corpus, dtype=np.float32))
    for qs in range(0, n_q, query_chunk_size):
        q = torch.from_numpy(np.ascontiguousarray(queries[qs:qs + query_chunk_size], dtype=np.float32))
        best_s = torch.empty((q.shape[0], 0))
        best_i = torch.empty((q.shape[0], 0), dtype=torch.long)
        for cs in range(0, corpus_t.shape[0], corpus_chunk_size):
            block = q @ corpus_t[cs:cs + corpus_chunk_size].T
            s, i = torch.topk(block, min(k, block.shape[1]), dim=1)
            merged_s = torch.cat([best_s, s], dim=1)
            merged_i = torch.cat([best_i, i + cs], dim=1)
            best_s, pos = torch.topk(merged_s, min(k, merged_s.shape[1]), dim=1)
            best_i = torch.gather(merged_i, 1, pos)
        width = best_s.shape[1]
        scores_out[qs:qs + q.shape[0], :width] = best_s.numpy()
        ids_out[qs:qs + q.shape[0], :width] = best_i.numpy()
        if advance is not None:
            advance(q.shape[0])
    return scores_out, ids_out


def _top_k_faiss(queries, corpus, k, query_chunk_size, scores_out, ids_out, advance):
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs each CPU-feature probe
    try:
        import faiss
    except ImportError:
        raise ImportError("use_faiss needs the faiss package: pip install 'embedtrain[faiss]'") from None
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(np.ascontiguousarray(corpus, dtype=np.float32))
    kk = min(k, corpus.shape[0])
    for qs in range(0, queries.shape[0], query_chunk_size):
        q = np.ascontiguousarray(queries[qs:qs + query_chunk_size], dtype=np.float32)
        s, i = index.search(q, kk)
        scores_out[qs:qs + q.shape[0], :kk] = s
        ids_out[qs:qs + q.shape[0], :kk] = i
        if advance is not None:
            advance(q.shape[0])
    ids_out[ids_out < 0] = -1
    scores_out[ids_out < 0] = -np.inf
    return scores_out, ids_out
