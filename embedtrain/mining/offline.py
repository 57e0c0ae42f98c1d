"""Offline hard-negative mining: pairs file + corpus -> ``hard_negatives`` file with scores.

:func:`mine` encodes the corpus (the given documents plus every positive) and the distinct
queries, retrieves the top ``range_max`` documents per query with bounded memory
(:mod:`embedtrain.mining.search`), optionally rescores them (:mod:`embedtrain.mining.rescore`),
keeps those inside the rank window that pass the false-negative filters
(:mod:`embedtrain.mining.filtering`) and returns one row per input pair. :func:`write_mined`
writes jsonl or parquet; :func:`run_mining` does both and is what ``embedtrain mine`` and
``data_prep/mine_hard_negatives.py`` call.

With ``engine="sentence-transformers"`` the retrieval and filtering are done by
``sentence_transformers.util.mine_hard_negatives`` instead (see :mod:`embedtrain.mining.st_engine`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedtrain.errors import DataError
from embedtrain.io.formats import to_dataset
from embedtrain.io.readers import read_records
from embedtrain.mining.filtering import select_negatives
from embedtrain.mining.rescore import Rescorer, cross_encoder_rescorer
from embedtrain.mining.results import MiningResult, MiningStats, assemble_rows, log_stats
from embedtrain.mining.search import encode_texts, top_k
from embedtrain.models.precision import choose_precision
from embedtrain.schema.mining import OfflineMiningConfig

logger = logging.getLogger(__name__)

OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


@dataclass
class _Queries:
    """Distinct queries, which row uses which query, and each query's positive ids in the corpus."""

    texts: list[str]
    of_row: list[int]
    positives: list[list[int]]
    self_ids: list[int | None]


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


def read_pairs(path: str | Path, columns: dict[str, str] | None = None,
               max_samples: int | None = None) -> tuple[list[str], list[str]]:
    """Anchors and positives of a pairs file, validated like training data."""
    records = read_records(path, limit=max_samples)
    ds = to_dataset(records, "pairs", columns or {})
    return list(ds["anchor"]), list(ds["positive"])


def read_corpus(path: str | Path, column: str = "text") -> list[str]:
    """Documents of a corpus file: a ``.txt`` file (one per line) or any readable table with ``column``."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.exists():
            raise DataError("corpus file not found", file=path)
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = read_records(path)
    texts = []
    for i, row in enumerate(records.rows):
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            raise records.error(i, column, f"expected a non-empty text in column '{column}'"
                                f" (columns: {sorted(row)}); choose the column with --corpus-column")
        texts.append(value)
    return texts


def build_corpus(documents: list[str], positives: list[str]) -> tuple[list[str], dict[str, int]]:
    """Deduplicated corpus of ``documents`` + ``positives`` (order kept) and its text -> id map."""
    corpus = list(dict.fromkeys([*documents, *positives]))
    return corpus, {t: i for i, t in enumerate(corpus)}


def group_queries(anchors: list[str], positives: list[str], corpus_ids: dict[str, int]) -> _Queries:
    """Distinct queries; all positives of a repeated anchor count as positives of that query."""
    index: dict[str, int] = {}
    of_row, pos_sets, self_ids = [], [], []
    for anchor, positive in zip(anchors, positives):
        q = index.setdefault(anchor, len(index))
        if q == len(pos_sets):
            pos_sets.append([])
            self_ids.append(corpus_ids.get(anchor))
        pid = corpus_ids[positive]
        if pid not in pos_sets[q]:
            pos_sets[q].append(pid)
        of_row.append(q)
    return _Queries(list(index), of_row, pos_sets, self_ids)


def mine(config: OfflineMiningConfig, *, model=None, rescorer: Rescorer | None = None,
         progress=None) -> MiningResult:
    """Mine hard negatives as described by ``config``; see the module docstring.

    ``model`` (a loaded ``SentenceTransformer``) overrides ``config.model``; ``rescorer``
    overrides ``config.cross_encoder``; ``progress`` is an optional ``rich.progress.Progress``.
    """
    anchors, positives = read_pairs(config.input, config.columns, config.max_samples)
    documents = read_corpus(config.corpus, config.corpus_column) if config.corpus else []
    if model is None:
        from embedtrain.models.resolve import load_model

        model = load_model(config.model, device=config.device, max_seq_length=config.max_seq_length,
                           trust_remote_code=config.trust_remote_code)
    t_start = time.perf_counter()  # mining time: after reading data and loading the model
    if config.engine == "sentence-transformers":
        from embedtrain.mining.st_engine import mine_with_sentence_transformers

        if rescorer is not None:
            raise ValueError("a custom rescorer needs engine='embedtrain'; the sentence-transformers engine "
                             "takes a cross-encoder path (cross_encoder)")
        with choose_precision(config.precision, str(model.device)).context():
            return mine_with_sentence_transformers(config, model, anchors, positives, documents, t_start)

    stages = _Stages(progress)
    stats = MiningStats(rows=len(anchors))
    corpus, corpus_ids = build_corpus(documents, positives)
    queries = group_queries(anchors, positives, corpus_ids)
    stats.queries, stats.corpus_size = len(queries.texts), len(corpus)
    logger.info("mining %d pairs (%d distinct queries) against %d documents", len(anchors), stats.queries,
                stats.corpus_size)

    precision = choose_precision(config.precision, str(model.device))
    t = time.perf_counter()
    with stages.stage("encoding corpus", len(corpus)) as advance:
        corpus_emb = encode_texts(model, corpus, kind="document", prompt=config.passage_prompt,
                                  batch_size=config.batch_size, advance=advance, precision=precision)
    stats.encode_corpus_s = time.perf_counter() - t
    t = time.perf_counter()
    with stages.stage("encoding queries", len(queries.texts)) as advance:
        query_emb = encode_texts(model, queries.texts, kind="query", prompt=config.query_prompt,
                                 batch_size=config.batch_size, advance=advance, precision=precision)
    stats.encode_queries_s = time.perf_counter() - t

    max_pos = max(len(p) for p in queries.positives)
    k = min(config.range_max + max_pos + int(config.exclude_query_text), len(corpus))
    t = time.perf_counter()
    with stages.stage("searching", len(queries.texts)) as advance:
        scores, ids = top_k(query_emb, corpus_emb, k, query_chunk_size=config.query_chunk_size,
                            corpus_chunk_size=config.corpus_chunk_size, use_faiss=config.use_faiss,
                            advance=advance)
    stats.search_s = time.perf_counter() - t
    row_pos_scores = [float(query_emb[queries.of_row[i]] @ corpus_emb[corpus_ids[p]])
                      for i, p in enumerate(positives)]
    del corpus_emb, query_emb

    if rescorer is None and config.cross_encoder:
        rescorer = cross_encoder_rescorer(config.cross_encoder, batch_size=config.batch_size, device=config.device,
                                          trust_remote_code=config.trust_remote_code)
    if rescorer is not None:
        t = time.perf_counter()
        with stages.stage("rescoring", len(queries.texts)) as advance:
            scores, ids = _rescore(rescorer, queries.texts, corpus, scores, ids, advance)
            row_pos_scores = [float(s) for s in rescorer(anchors, positives)]
        stats.rescore_s = time.perf_counter() - t

    query_pos_score = [float("inf")] * len(queries.texts)
    for i, s in enumerate(row_pos_scores):
        q = queries.of_row[i]
        query_pos_score[q] = min(query_pos_score[q], s)
    flt = config.filter_only()
    selected: list[list[tuple[str, float]]] = []
    with stages.stage("filtering", len(queries.texts)) as advance:
        for q in range(len(queries.texts)):
            exclude = set(queries.positives[q])
            if config.exclude_query_text and queries.self_ids[q] is not None:
                exclude.add(queries.self_ids[q])
            picked = select_negatives(ids[q], scores[q], exclude=exclude, positive_score=query_pos_score[q],
                                      flt=flt, limit=config.num_negatives + config.candidates, counts=stats.counts)
            selected.append([(corpus[j], s) for j, s in picked])
            if advance is not None and (q + 1) % 1000 == 0:
                advance(1000)
    rows = assemble_rows(anchors, positives, queries.of_row, selected, row_pos_scores, config, stats)
    stats.total_s = time.perf_counter() - t_start
    log_stats(stats)
    return MiningResult(rows, stats)


def _rescore(rescorer: Rescorer, queries: list[str], corpus: list[str], scores: np.ndarray, ids: np.ndarray,
             advance) -> tuple[np.ndarray, np.ndarray]:
    """Replace retrieval scores with ``rescorer`` scores and re-sort each query's list."""
    new_scores = np.full_like(scores, -np.inf)
    for q, text in enumerate(queries):
        valid = np.flatnonzero(ids[q] >= 0)
        docs = [corpus[j] for j in ids[q][valid]]
        new_scores[q, valid] = rescorer([text] * len(docs), docs)
        if advance is not None:
            advance(1)
    order = np.argsort(-new_scores, axis=1, kind="stable")
    return np.take_along_axis(new_scores, order, 1), np.take_along_axis(ids, order, 1)


def output_kind(path: str | Path) -> str:
    """``jsonl`` or ``parquet`` from the output file's suffix (DataError otherwise)."""
    kind = OUTPUT_SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise DataError(f"output must end in one of {sorted(OUTPUT_SUFFIXES)}", file=path)
    return kind


def write_mined(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write mined rows as jsonl or parquet (by suffix); the parent folder is created."""
    path = Path(path)
    kind = output_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run_mining(config: OfflineMiningConfig, *, model=None, rescorer: Rescorer | None = None,
               progress=None) -> MiningResult:
    """:func:`mine` then :func:`write_mined` to ``config.output``; also writes ``<output>.stats.json``."""
    output_kind(config.output)  # fail on a bad suffix before any encoding
    result = mine(config, model=model, rescorer=rescorer, progress=progress)
    if not result.rows:
        raise DataError("no row got enough negatives; nothing written (widen range_max, loosen margins, "
                        "or pass keep_incomplete)", file=config.input)
    out = write_mined(result.rows, config.output)
    stats_path = out.with_name(out.name + ".stats.json")
    stats_path.write_text(json.dumps({"config": config.model_dump(mode="json"), **result.stats.summary()},
                                     indent=2), encoding="utf-8")
    logger.info("wrote %d rows to %s", len(result.rows), out)
    return result
