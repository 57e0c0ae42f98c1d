"""Offline hard-negative mining: pairs file + corpus -> ``hard_negatives`` file with scores, across processes.

:func:`mine` runs one pipeline whether it has one process or is started with ``accelerate launch -m embedtrain
mine``:

1. **data**: the pairs file becomes a cached, memory-mapped Arrow dataset (:mod:`embedtrain.io.dataset_cache`,
   prepared by the main process, opened by the others); so does a corpus file. Text identities (which corpus
   document a positive is, which rows share a query) are integer arrays built from text hashes
   (:mod:`embedtrain.mining.corpus`), not dictionaries of strings. A BEIR folder given as input or corpus is
   first turned into a pairs / corpus file with mteb's title + text join (:mod:`embedtrain.mining.beir`).
2. **encoding**: corpus and distinct queries are encoded in fixed blocks of similar-length texts, shared out
   across the processes, into memory-mapped files reused by later runs with the same model and texts
   (:mod:`embedtrain.mining.embeddings`); a query that is also a corpus document takes the document's vector
   when queries and documents embed alike (``share_query_vectors``).
3. **search**: exact by default (chunked torch matmul, or a faiss flat index with ``use_faiss``), or
   approximate with faiss IVF / HNSW (``index``; recall@k against exact search is measured and reported,
   :mod:`embedtrain.mining.ann`). Each process searches the queries of its own contiguous range of input pairs.
4. **rescoring** (optional cross-encoder): all candidates of a chunk of queries go through the cross-encoder in
   one batched call (:mod:`embedtrain.mining.rescore`).
5. **filtering** (:mod:`embedtrain.mining.filtering`: rank window, margins, copies of a positive) and
   **output**: rows are written chunk by chunk (:mod:`embedtrain.mining.output`), never all held; the processes'
   parts are joined in input order. Rows left with too few negatives are counted by reason and, on request,
   written to a side file.

With ``engine="sentence-transformers"`` the retrieval and filtering are done by
``sentence_transformers.util.mine_hard_negatives`` instead (one process; see :mod:`embedtrain.mining.st_engine`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from embedtrain.errors import DataError
from embedtrain.mining.collective import Collective, init_collective, main_process_first
from embedtrain.mining.corpus import MiningLayout, build_layout
from embedtrain.mining.embeddings import (
    encode_to_file,
    fingerprint,
    gather_to_file,
    model_fingerprint,
    open_complete,
)
from embedtrain.mining.filtering import FilterCounts, drop_reason, is_normalized_copy, normalized, select_negatives
from embedtrain.mining.output import (
    OUTPUT_SUFFIXES,
    DiscardSink,
    FileSink,
    MemorySink,
    dropped_path,
    merge_parts,
    output_kind,
    part_path,
)
from embedtrain.mining.rescore import Rescorer, cross_encoder_rescorer
from embedtrain.mining.results import MiningResult, MiningStats, log_stats
from embedtrain.mining.search import top_k
from embedtrain.models.precision import choose_precision
from embedtrain.schema.mining import OfflineMiningConfig

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_SUFFIXES", "mine", "output_kind", "read_corpus", "read_pairs", "run_mining", "write_mined"]


class _Stages:
    """Progress bars on an optional ``rich.progress.Progress``; no-ops without one."""

    def __init__(self, progress) -> None:
        self.progress = progress

    @contextlib.contextmanager
    def stage(self, description: str, total: int) -> Iterator:
        if self.progress is None:
            yield None
            return
        task = self.progress.add_task(description, total=total)
        try:
            yield lambda n: self.progress.advance(task, n)
        finally:
            self.progress.update(task, completed=total)


# -- reading ------------------------------------------------------------------------------------------------
def _pairs_dataset(path: str | Path, columns: dict[str, str] | None, max_samples: int | None):
    from embedtrain.io.dataset_cache import load_dataset_cached

    with main_process_first():
        return load_dataset_cached(path, "pairs", columns=columns, max_samples=max_samples, hash_rows=False).dataset


def read_pairs(path: str | Path, columns: dict[str, str] | None = None,
               max_samples: int | None = None) -> tuple[list[str], list[str]]:
    """Anchors and positives of a pairs file, validated like training data (as Python lists: small data)."""
    ds = _pairs_dataset(path, columns, max_samples)
    return list(ds["anchor"]), list(ds["positive"])


def _corpus_column(path: str | Path, column: str, work_dir: Path | None = None) -> pa.ChunkedArray:
    """The documents of a corpus file as a memory-mapped Arrow column: a ``.txt`` file (one per non-blank line,
    stripped) or any readable table with ``column``."""
    from embedtrain.io.dataset_cache import cache_root, load_dataset_cached

    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.exists():
            raise DataError("corpus file not found", file=path)
        from embedtrain.io.sources import fingerprint_path

        key = fingerprint(json.dumps(fingerprint_path(path), sort_keys=True), hashes=np.zeros((0, 2), np.uint64))
        folder = (work_dir or cache_root()) / "corpus-txt"
        folder.mkdir(parents=True, exist_ok=True)
        arrow = folder / f"{path.stem[:40]}-{key}.arrow"
        with main_process_first():
            if not arrow.is_file():
                tmp = arrow.with_name(arrow.name + f".tmp{os.getpid()}")
                with pa.OSFile(str(tmp), "wb") as sink, \
                        pa.ipc.new_stream(sink, pa.schema([("text", pa.string())])) as writer:
                    lines: list[str] = []
                    with path.open(encoding="utf-8") as fh:
                        for line in fh:
                            if line.strip():
                                lines.append(line.strip())
                            if len(lines) >= 65536:
                                writer.write_batch(pa.record_batch([pa.array(lines, pa.string())], names=["text"]))
                                lines = []
                    if lines:
                        writer.write_batch(pa.record_batch([pa.array(lines, pa.string())], names=["text"]))
                tmp.replace(arrow)
        source = pa.memory_map(str(arrow))
        return pa.ipc.open_stream(source).read_all().column("text")
    with main_process_first():
        ds = load_dataset_cached(path, "text", columns={"text": column}, hash_rows=False).dataset
    return ds.data.table.column("text")


def read_corpus(path: str | Path, column: str = "text") -> list[str]:
    """Documents of a corpus file (``.txt``: one per line; else a table with ``column``) as a list (small data)."""
    return _corpus_column(path, column).to_pylist()


# -- the pipeline ---------------------------------------------------------------------------------------------
class _Texts:
    """Texts by corpus id / query id, taken from the memory-mapped columns (documents + positives, anchors)."""

    def __init__(self, layout: MiningLayout, anchors: pa.ChunkedArray, positives: pa.ChunkedArray,
                 documents: pa.ChunkedArray | None) -> None:
        self.layout = layout
        self.anchors, self.positives, self.documents = anchors, positives, documents
        self.n_docs = len(documents) if documents is not None else 0
        # chunk offsets of each column, computed once for the thousands of blocks taken from them
        self.anchor_bounds, self.positive_bounds = chunk_bounds(anchors), chunk_bounds(positives)
        self.document_bounds = chunk_bounds(documents) if documents is not None else None

    def corpus(self, ids: np.ndarray) -> list[str]:
        positions = self.layout.corpus_sources[np.asarray(ids, dtype=np.int64)]
        out: list[Any] = [None] * len(positions)
        is_doc = positions < self.n_docs
        if is_doc.any():
            docs = take_texts(self.documents, positions[is_doc], self.document_bounds)
            for i, t in zip(np.flatnonzero(is_doc), docs):
                out[i] = t
        if (~is_doc).any():
            pos = take_texts(self.positives, positions[~is_doc] - self.n_docs, self.positive_bounds)
            for i, t in zip(np.flatnonzero(~is_doc), pos):
                out[i] = t
        return out

    def queries(self, ids: np.ndarray) -> list[str]:
        return take_texts(self.anchors, self.layout.query_rows[np.asarray(ids, dtype=np.int64)],
                          self.anchor_bounds)

    def corpus_lengths(self) -> np.ndarray:
        """Characters per corpus id (read from the columns without building Python strings)."""
        parts = [_char_lengths(c) for c in (self.documents, self.positives) if c is not None]
        return np.concatenate(parts)[self.layout.corpus_sources]

    def query_lengths(self) -> np.ndarray:
        """Characters per query id."""
        return _char_lengths(self.anchors)[self.layout.query_rows]

    def rows(self, column: pa.ChunkedArray, start: int, end: int) -> list[str]:
        return column.slice(start, end - start).to_pylist()


def chunk_bounds(column: pa.ChunkedArray) -> np.ndarray:
    """Where each chunk of ``column`` starts, and its length at the end (``num_chunks + 1`` offsets)."""
    return np.cumsum([0] + [len(c) for c in column.chunks]).astype(np.int64)


def take_texts(column: pa.ChunkedArray, positions: np.ndarray, bounds: np.ndarray | None = None) -> list[str]:
    """``column[positions]`` as Python strings, taken chunk by chunk.

    ``ChunkedArray.take`` joins all the chunks of a multi-chunk column into one new buffer first: the whole
    memory-mapped column copied into memory and every page of it read, on each call. Here only the chunks that
    hold ``positions`` are read, so a block of texts costs memory in proportion to the block, not the corpus.
    ``bounds`` (:func:`chunk_bounds`, computed when not given) lets a caller that takes many blocks from one
    column compute the chunk offsets once.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if column.num_chunks <= 1:
        return column.take(pa.array(positions)).to_pylist()
    bounds = chunk_bounds(column) if bounds is None else bounds
    chunk_of = np.searchsorted(bounds, positions, side="right") - 1
    order = np.argsort(chunk_of, kind="stable")  # positions grouped by chunk, one pass over the block
    groups = np.split(order, np.flatnonzero(np.diff(chunk_of[order])) + 1)
    out: list[Any] = [None] * len(positions)
    for where in groups:
        c = int(chunk_of[where[0]]) if len(where) else 0
        for i, t in zip(where, column.chunk(c).take(pa.array(positions[where] - bounds[c])).to_pylist()):
            out[i] = t
    return out


def _char_lengths(column: pa.ChunkedArray) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.utf8_length(column).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _work_dir(config: OfflineMiningConfig, reusable: bool, collective: Collective) -> tuple[Path, bool]:
    """Folder for the embeddings: the reusable cache, or (model given as an object) a run-private folder."""
    if reusable:
        if config.embeddings_dir:
            root = Path(config.embeddings_dir)
        else:
            from embedtrain.io.dataset_cache import cache_root

            root = cache_root("mining")
        root.mkdir(parents=True, exist_ok=True)
        return root, False
    base = Path(config.embeddings_dir) if config.embeddings_dir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    name = tempfile.mkdtemp(prefix="embedtrain-mining-", dir=base) if collective.rank == 0 else None
    return Path(collective.all_gather_object(name)[0]), True


def _device(config: OfflineMiningConfig) -> str | None:
    if config.device is not None:
        return config.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return str(PartialState().device)
    return None


def _row_bounds(n: int, collective: Collective) -> tuple[int, int]:
    bounds = np.linspace(0, n, collective.world_size + 1).astype(np.int64)
    return int(bounds[collective.rank]), int(bounds[collective.rank + 1])


def mine(config: OfflineMiningConfig, *, model=None, rescorer: Rescorer | None = None, progress=None,
         sink=None, dropped_sink=None) -> MiningResult:
    """Mine hard negatives as described by ``config``; see the module docstring.

    ``model`` (a loaded ``SentenceTransformer``) overrides ``config.model`` (its embeddings are then not kept
    for reuse); ``rescorer`` overrides ``config.cross_encoder``; ``progress`` is an optional
    ``rich.progress.Progress``. Rows go to ``sink`` (an object with ``write(rows)`` / ``close()``); without one
    they are returned in :attr:`MiningResult.rows` (this process's share under a multi-process launch). Rows
    dropped for too few negatives (``keep_incomplete`` off) go to ``dropped_sink``, else to
    :attr:`MiningResult.dropped`, with their ``reason``.
    """
    from embedtrain.mining.beir import resolve_beir

    config = resolve_beir(config)
    if config.engine == "sentence-transformers":
        return _mine_with_st(config, model, rescorer)
    collective = init_collective()
    is_main = collective.rank == 0
    t_read = time.perf_counter()
    pairs = _pairs_dataset(config.input, config.columns, config.max_samples)
    anchors, positives = pairs.data.table.column("anchor"), pairs.data.table.column("positive")
    documents = _corpus_column(config.corpus, config.corpus_column) if config.corpus else None
    layout = build_layout(anchors, positives, documents)
    texts = _Texts(layout, anchors, positives, documents)
    logger.info("read %d pairs (%d distinct queries), corpus of %d documents in %.1fs", len(anchors),
                layout.num_queries, layout.corpus_size, time.perf_counter() - t_read)

    reusable = model is None and model_fingerprint(_resolved_model(config)) is not None
    if model is None:
        from embedtrain.models.resolve import load_model

        model = load_model(config.model, device=_device(config), max_seq_length=config.max_seq_length,
                           trust_remote_code=config.trust_remote_code)
    if rescorer is None and config.cross_encoder:
        rescorer = cross_encoder_rescorer(config.cross_encoder, batch_size=config.batch_size, device=_device(config),
                                          trust_remote_code=config.trust_remote_code)
    work, private = _work_dir(config, reusable, collective)
    stages = _Stages(progress if is_main else None)
    stats = MiningStats(rows=len(anchors), queries=layout.num_queries, corpus_size=layout.corpus_size)
    stats.processes, stats.index = collective.world_size, config.index
    t_start = time.perf_counter()  # mining time: after reading data and loading the model
    try:
        precision = choose_precision(config.precision, str(getattr(model, "device", "cpu")))
        stats.precision = precision.name
        model_key = (model_fingerprint(_resolved_model(config)), config.max_seq_length, precision.name)

        def encode(side: str, kind: str, prompt: str | None, hashes, n: int, texts_at, lengths):
            """Embeddings of one side (corpus or queries), memory-mapped, reused when the key matches."""
            path = work / f"{side}-{fingerprint(*model_key, kind, prompt, hashes=hashes)}.f32"
            t = time.perf_counter()
            with stages.stage(f"encoding {side}", n) as advance:
                emb, reused = encode_to_file(model, texts_at, n, path, kind=kind, prompt=prompt,
                                             batch_size=config.batch_size, collective=collective,
                                             lengths=lengths, advance=advance, precision=precision)
            return emb, reused, path, time.perf_counter() - t

        corpus_emb, reused_c, corpus_file, stats.encode_corpus_s = encode(
            "corpus", "document", config.passage_prompt, layout.corpus_hashes, layout.corpus_size,
            texts.corpus, texts.corpus_lengths())
        in_corpus, query_lengths = layout.self_ids >= 0, texts.query_lengths()
        key = fingerprint(*model_key, "query", config.query_prompt, corpus_file.stem, hashes=layout.query_hashes)
        gathered = work / f"queries-{key}.f32"
        share = config.share_query_vectors and bool(in_corpus.any()) and (
            open_complete(gathered, layout.num_queries) is not None
            or _same_vectors(model, config, layout, texts, query_lengths, precision))
        if all(collective.all_gather_object(share)):  # every process takes the same path
            # queries that are also documents take the corpus vector; only the others are encoded
            t = time.perf_counter()
            rest = np.flatnonzero(~in_corpus)
            rest_emb, reused_q, _, _ = encode("queries", "query", config.query_prompt, layout.query_hashes[rest],
                                              len(rest), lambda ids: texts.queries(rest[ids]), query_lengths[rest])
            query_emb, _ = gather_to_file(gathered, corpus_emb, layout.self_ids, rest_emb, collective=collective)
            stats.queries_from_corpus = int(in_corpus.sum())
            stats.encode_queries_s = time.perf_counter() - t
        else:
            query_emb, reused_q, _, stats.encode_queries_s = encode(
                "queries", "query", config.query_prompt, layout.query_hashes, layout.num_queries,
                texts.queries, query_lengths)
        stats.embeddings_reused = bool(reused_c and reused_q)

        searcher = _Searcher(config, corpus_emb, work / f"{corpus_file.stem}", collective, stats)
        k = min(config.range_max + layout.max_positives() + int(config.exclude_query_text), layout.corpus_size)
        if searcher.ann is not None and is_main and config.recall_sample:
            stats.recall_at_k, stats.recall_k = searcher.recall(query_emb, k, config.recall_sample, seed=0)
            logger.info("%s search: recall@%d = %.4f against exact search (%d queries)", config.index, k,
                        stats.recall_at_k, min(config.recall_sample, layout.num_queries))

        start, end = _row_bounds(len(anchors), collective)
        query_pos_score = _positive_scores(config, layout, texts, anchors, positives, query_emb, corpus_emb,
                                           rescorer, collective, (start, end), stats)
        own_sink = sink
        if own_sink is None:
            own_sink = MemorySink()
        dropped = dropped_sink if dropped_sink is not None else MemorySink()
        with stages.stage("searching and writing", end - start) as advance:
            for chunk in range(start, end, config.query_chunk_size):
                rows, dropped_rows = _mine_chunk(config, layout, texts, anchors, positives, query_emb, searcher,
                                                 rescorer, query_pos_score, chunk,
                                                 min(chunk + config.query_chunk_size, end), k, stats)
                own_sink.write(rows)
                dropped.write(dropped_rows)
                if advance is not None:
                    advance(min(config.query_chunk_size, end - chunk))
        own_sink.close()
        dropped.close()
        _combine_stats(stats, collective)
        stats.total_s = time.perf_counter() - t_start
        if is_main:
            log_stats(stats)
        return MiningResult(own_sink.rows if isinstance(own_sink, MemorySink) else [], stats, is_main=is_main,
                            dropped=dropped.rows if isinstance(dropped, MemorySink) else [])
    finally:
        if private:
            collective.barrier()
            if is_main:
                shutil.rmtree(work, ignore_errors=True)


def _same_vectors(model, config: OfflineMiningConfig, layout: MiningLayout, texts: _Texts, query_lengths: np.ndarray,
                  precision, sample: int = 8) -> bool:
    """Whether queries may take their corpus vector: :func:`~embedtrain.mining.search.same_query_and_document_vectors`
    on the ``sample`` longest and the ``sample`` first queries that are also documents."""
    from embedtrain.mining.search import same_query_and_document_vectors

    shared = np.flatnonzero(layout.self_ids >= 0)
    lengths = query_lengths[shared]
    picked = np.unique(np.r_[shared[np.argsort(-lengths, kind="stable")[:sample]], shared[:sample]])
    same = same_query_and_document_vectors(model, texts.queries(picked), query_prompt=config.query_prompt,
                                           document_prompt=config.passage_prompt, batch_size=config.batch_size,
                                           precision=precision)
    logger.info("%d of %d queries are also documents; %s", len(shared), layout.num_queries,
                "they take the corpus vectors" if same else "queries and documents embed differently: "
                "every query is encoded")
    return same


def _resolved_model(config: OfflineMiningConfig) -> Path | None:
    from embedtrain.models.resolve import resolve_model_path

    try:
        return resolve_model_path(config.model, field="model")
    except Exception:  # noqa: BLE001 - loading reports the error properly
        return None


class _Searcher:
    """Top-k search over the memory-mapped corpus: exact (torch chunks, or faiss flat) or a faiss ANN index."""

    def __init__(self, config: OfflineMiningConfig, corpus: np.ndarray, stem: Path, collective: Collective,
                 stats: MiningStats) -> None:
        self.config, self.corpus = config, corpus
        self.ann = None
        self.flat = None
        t = time.perf_counter()
        if config.index != "exact" and len(corpus):
            from embedtrain.mining.ann import build_index

            params = f"ivf{config.ivf_lists}" if config.index == "ivf" else f"hnsw{config.hnsw_m}"
            self.ann = build_index(corpus, config.index, stem.with_name(f"{stem.name}.{params}.faiss"), collective,
                                   ivf_lists=config.ivf_lists, hnsw_m=config.hnsw_m)
        elif config.use_faiss and len(corpus):
            from embedtrain.mining.ann import _faiss

            faiss = _faiss()
            self.flat = faiss.IndexFlatIP(corpus.shape[1])
            for s in range(0, len(corpus), 65536):
                self.flat.add(np.ascontiguousarray(corpus[s:s + 65536], dtype=np.float32))
        stats.index_build_s = time.perf_counter() - t

    def exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(queries, self.corpus, k, query_chunk_size=max(1, len(queries)),
                     corpus_chunk_size=self.config.corpus_chunk_size)

    def __call__(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from embedtrain.mining.ann import search_index

        if self.ann is not None:
            return search_index(self.ann, queries, k, ivf_probe=self.config.ivf_probe,
                                hnsw_ef_search=self.config.hnsw_ef_search)
        if self.flat is not None:
            return search_index(self.flat, queries, k)
        return self.exact(queries, k)

    def recall(self, query_emb: np.ndarray, k: int, sample: int, seed: int) -> tuple[float, int]:
        from embedtrain.mining.ann import recall_at_k

        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(query_emb), size=min(sample, len(query_emb)), replace=False))
        q = np.asarray(query_emb[picked], dtype=np.float32)
        return recall_at_k(self(q, k)[1], self.exact(q, k)[1], k), k


def _positive_scores(config, layout: MiningLayout, texts: _Texts, anchors, positives, query_emb, corpus_emb,
                     rescorer, collective: Collective, bounds: tuple[int, int], stats: MiningStats) -> np.ndarray:
    """Per query, the lowest score of its positives over all its rows (what the margins compare with).

    Each process scores its own rows (dot products, or the cross-encoder); the per-row scores are gathered.
    """
    start, end = bounds
    own = np.empty(end - start, dtype=np.float64)
    t = time.perf_counter()
    for s in range(start, end, config.query_chunk_size):
        e = min(s + config.query_chunk_size, end)
        if rescorer is not None:
            own[s - start:e - start] = rescorer(texts.rows(anchors, s, e), texts.rows(positives, s, e))
        else:
            q = np.asarray(query_emb[layout.row_query[s:e]], dtype=np.float32)
            p = np.asarray(corpus_emb[layout.row_positive[s:e]], dtype=np.float32)
            own[s - start:e - start] = np.einsum("ij,ij->i", q, p)
    if rescorer is not None:
        stats.rescore_s += time.perf_counter() - t
    row_scores = np.concatenate(collective.all_gather_object(own)) if collective.world_size > 1 else own
    stats.row_positive_scores = row_scores  # the row's own score goes into its output line
    per_query = np.full(layout.num_queries, np.inf)
    np.minimum.at(per_query, layout.row_query, row_scores)
    return per_query


def _mine_chunk(config, layout: MiningLayout, texts: _Texts, anchors, positives, query_emb, searcher, rescorer,
                query_pos_score, start: int, end: int, k: int, stats: MiningStats) -> list[dict[str, Any]]:
    """Search, rescore and filter the distinct queries of rows ``start:end``; return those rows."""
    queries = np.unique(layout.row_query[start:end])
    t = time.perf_counter()
    scores, ids = searcher(np.asarray(query_emb[queries], dtype=np.float32), k)
    stats.search_s += time.perf_counter() - t
    if rescorer is not None:
        t = time.perf_counter()
        query_texts = texts.queries(queries)
        scores, ids = _rescore(rescorer, query_texts, texts, scores, ids)
        stats.rescore_s += time.perf_counter() - t
    flt = config.filter_only()
    wanted = config.num_negatives + config.candidates
    picked: dict[int, list[tuple[int, float]]] = {}
    tallies: dict[int, FilterCounts] = {}
    for j, q in enumerate(queries):
        q_positives = layout.positives_of(q)
        exclude = set(q_positives.tolist())
        if config.exclude_query_text and layout.self_ids[q] >= 0:
            exclude.add(int(layout.self_ids[q]))
        # room for copies of the positives, which are only recognised from the texts below
        slack = 2 * len(q_positives) + 2 if config.exclude_positive_copies else 0
        tallies[int(q)] = FilterCounts()
        picked[int(q)] = select_negatives(ids[j], scores[j], exclude=exclude, positive_score=query_pos_score[q],
                                          flt=flt, limit=wanted + slack, counts=tallies[int(q)])
    needed = sorted({i for sel in picked.values() for i, _ in sel})
    text_of = dict(zip(needed, texts.corpus(np.array(needed, dtype=np.int64)))) if needed else {}
    if config.exclude_positive_copies:
        _drop_positive_copies(layout, texts, picked, text_of, tallies)
    for q in picked:
        picked[q] = picked[q][:wanted]
        stats.counts.add(tallies[q])
    anchor_texts, positive_texts = texts.rows(anchors, start, end), texts.rows(positives, start, end)
    rows, dropped = [], []
    n = config.num_negatives
    for r in range(start, end):
        q = int(layout.row_query[r])
        sel = picked[q]
        row: dict[str, Any] = {
            "anchor": anchor_texts[r - start], "positive": positive_texts[r - start],
            "positive_score": round(float(stats.row_positive_scores[r]), 6),
            "negatives": [{"text": text_of[i], "score": round(s, 6)} for i, s in sel[:n]],
        }
        if config.candidates:
            row["candidates"] = [{"text": text_of[i], "score": round(s, 6)} for i, s in sel[n:n + config.candidates]]
        if len(sel) < n:
            reason = drop_reason(tallies[q])
            stats.note_incomplete(reason, kept=config.keep_incomplete)
            if not config.keep_incomplete:
                dropped.append({**row, "reason": reason,
                                "skipped": {k: v for k, v in tallies[q].as_dict().items() if v}})
                continue
        rows.append(row)
    stats.written_rows += len(rows)
    return rows, dropped


def _drop_positive_copies(layout: MiningLayout, texts: _Texts, picked: dict[int, list[tuple[int, float]]],
                          text_of: dict[int, str], tallies: dict[int, FilterCounts]) -> None:
    """Remove from each query's picks the documents that are copies of one of its positives (a positive
    given as text alone whose corpus entry is title + text, different casing or spacing: different hashes)."""
    pos_ids = sorted({int(i) for q in picked for i in layout.positives_of(q)})
    pos_norm = {i: normalized(t) for i, t in zip(pos_ids, texts.corpus(np.array(pos_ids, dtype=np.int64)))} \
        if pos_ids else {}
    cand_norm = {i: normalized(t) for i, t in text_of.items()}
    for q, sel in picked.items():
        q_pos = [pos_norm[int(i)] for i in layout.positives_of(q)]
        kept = [(i, s) for i, s in sel if not any(is_normalized_copy(cand_norm[i], p) for p in q_pos)]
        tallies[q].positive_copy += len(sel) - len(kept)
        picked[q] = kept


def _rescore(rescorer: Rescorer, query_texts: list[str], texts: _Texts, scores: np.ndarray,
             ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace retrieval scores with ``rescorer`` scores (one batched call for all queries) and re-sort."""
    valid = ids >= 0
    rows, cols = np.nonzero(valid)
    docs = texts.corpus(ids[rows, cols])
    new_scores = np.full_like(scores, -np.inf)
    if len(rows):
        new_scores[rows, cols] = rescorer([query_texts[r] for r in rows], docs)
    order = np.argsort(-new_scores, axis=1, kind="stable")
    return np.take_along_axis(new_scores, order, 1), np.take_along_axis(ids, order, 1)


def _combine_stats(stats: MiningStats, collective: Collective) -> None:
    """Sum the processes' tallies; stage times are the slowest process's."""
    if collective.world_size == 1:
        return
    mine_ = {"counts": stats.counts.as_dict(), "incomplete": stats.incomplete_rows, "written": stats.written_rows,
             "search_s": stats.search_s, "rescore_s": stats.rescore_s, "reasons": stats.incomplete_reasons,
             "dropped": stats.dropped_rows}
    parts = collective.all_gather_object(mine_)
    counts = FilterCounts()
    for p in parts:
        counts.add(FilterCounts(**p["counts"]))
    stats.counts = counts
    stats.incomplete_rows = sum(p["incomplete"] for p in parts)
    stats.dropped_rows = sum(p["dropped"] for p in parts)
    stats.incomplete_reasons = {}
    for p in parts:
        for reason, n in p["reasons"].items():
            stats.incomplete_reasons[reason] = stats.incomplete_reasons.get(reason, 0) + n
    stats.written_rows = sum(p["written"] for p in parts)
    stats.search_s = max(p["search_s"] for p in parts)
    stats.rescore_s = max(p["rescore_s"] for p in parts)


def _mine_with_st(config: OfflineMiningConfig, model, rescorer) -> MiningResult:
    from embedtrain.mining.st_engine import mine_with_sentence_transformers

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DataError("engine 'sentence-transformers' runs in one process; launch it without accelerate, or use "
                        "the default engine", field="--engine")
    if rescorer is not None:
        raise ValueError("a custom rescorer needs engine='embedtrain'; the sentence-transformers engine "
                         "takes a cross-encoder path (cross_encoder)")
    anchors, positives = read_pairs(config.input, config.columns, config.max_samples)
    documents = read_corpus(config.corpus, config.corpus_column) if config.corpus else []
    if model is None:
        from embedtrain.models.resolve import load_model

        model = load_model(config.model, device=config.device, max_seq_length=config.max_seq_length,
                           trust_remote_code=config.trust_remote_code)
    with choose_precision(config.precision, str(getattr(model, "device", "cpu"))).context():
        return mine_with_sentence_transformers(config, model, anchors, positives, documents, time.perf_counter())


# -- files ----------------------------------------------------------------------------------------------------
def write_mined(rows: list[dict[str, Any]], path: str | Path, with_candidates: bool | None = None) -> Path:
    """Write mined rows as jsonl or parquet (by suffix); the parent folder is created."""
    sink = FileSink(path, output_kind(path), bool(rows and "candidates" in rows[0]) if with_candidates is None
                    else with_candidates)
    sink.write(rows)
    sink.close()
    return Path(path)


def _nothing_written(result: MiningResult, side: Path | None, config: OfflineMiningConfig) -> DataError:
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(result.stats.incomplete_reasons.items()))
    where = f"; the rows are in {side}" if side is not None else ""
    return DataError(f"no row got enough negatives (by reason: {reasons or 'none'}); nothing written (widen "
                     f"range_max, loosen margins, or pass keep_incomplete){where}", file=config.input)


def run_mining(config: OfflineMiningConfig, *, model=None, rescorer: Rescorer | None = None,
               progress=None) -> MiningResult:
    """:func:`mine` streamed into ``config.output`` (each process writes its part; the main process joins them);
    also writes ``<output>.stats.json``."""
    kind = output_kind(config.output)  # fail on a bad suffix before any encoding
    side = dropped_path(config.output) if config.keep_dropped else None
    if config.engine == "sentence-transformers":
        result = mine(config, model=model, rescorer=rescorer, progress=progress)
        if side is not None:
            write_mined(result.dropped, side, bool(config.candidates))
            result.stats.dropped_output = str(side)
        if not result.rows:
            raise _nothing_written(result, side, config)
        write_mined(result.rows, config.output, bool(config.candidates))
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        target = part_path(config.output, rank) if world > 1 else Path(config.output)
        sink = FileSink(target, kind, bool(config.candidates))
        dropped_sink = DiscardSink()
        if side is not None:
            dropped_sink = FileSink(part_path(side, rank) if world > 1 else side, "jsonl", bool(config.candidates))
        result = mine(config, model=model, rescorer=rescorer, progress=progress, sink=sink,
                      dropped_sink=dropped_sink)
        collective = init_collective()
        collective.barrier()
        if result.is_main and world > 1:
            merge_parts(config.output, world, kind, bool(config.candidates))
            if side is not None:
                merge_parts(side, world, "jsonl", bool(config.candidates))
        if side is not None:
            result.stats.dropped_output = str(side)
        if result.stats.written_rows == 0:
            if result.is_main:
                Path(config.output).unlink(missing_ok=True)
            raise _nothing_written(result, side, config)
    if result.is_main:
        out = Path(config.output)
        stats_path = out.with_name(out.name + ".stats.json")
        stats_path.write_text(json.dumps({"config": config.model_dump(mode="json"), **result.stats.summary()},
                                         indent=2), encoding="utf-8")
        logger.info("wrote %d rows to %s", result.stats.written_rows, out)
        if side is not None:
            logger.info("wrote the %d rows dropped for too few negatives to %s", result.stats.dropped_rows, side)
    return result
