"""What a mining run produces: rows ready to write, and its statistics (shared by both mining engines)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from embedtrain.mining.filtering import FilterCounts
from embedtrain.schema.mining import OfflineMiningConfig

logger = logging.getLogger("embedtrain.mining.offline")


@dataclass
class MiningStats:
    """Sizes, timings and filter tallies of one mining run."""

    rows: int = 0
    queries: int = 0
    corpus_size: int = 0
    written_rows: int = 0
    #: Rows that found fewer negatives than asked: kept (``keep_incomplete``) or dropped, and why (the filter
    #: that removed most of their query's candidates, :func:`embedtrain.mining.filtering.drop_reason`).
    incomplete_rows: int = 0
    dropped_rows: int = 0
    incomplete_reasons: dict[str, int] = field(default_factory=dict)
    #: Where the dropped rows were written (``keep_dropped``).
    dropped_output: str | None = None
    encode_corpus_s: float = 0.0
    encode_queries_s: float = 0.0
    #: Precision the texts were encoded in (``fp32`` or ``bf16``; ``precision: auto`` resolved on the hardware).
    precision: str = "fp32"
    #: Queries whose vector was taken from the corpus (their text is also a document; ``share_query_vectors``).
    queries_from_corpus: int = 0
    search_s: float = 0.0
    rescore_s: float = 0.0
    total_s: float = 0.0
    counts: FilterCounts = field(default_factory=FilterCounts)
    #: Processes the work was split across.
    processes: int = 1
    #: Search: ``exact`` or an approximate faiss index (``ivf``, ``hnsw``), its build time and measured recall.
    index: str = "exact"
    index_build_s: float = 0.0
    recall_at_k: float | None = None
    recall_k: int | None = None
    #: True when corpus and query embeddings came from an earlier run's files.
    embeddings_reused: bool = False
    #: Per input row, its positive's score (retrieval or cross-encoder); not part of the summary.
    row_positive_scores: Any = field(default=None, repr=False)

    @property
    def corpus_docs_per_s(self) -> float:
        """Corpus documents encoded per second."""
        return self.corpus_size / self.encode_corpus_s if self.encode_corpus_s > 0 else float("nan")

    @property
    def queries_per_s(self) -> float:
        """Distinct queries mined per second, end to end (encoding, search, filtering)."""
        return self.queries / self.total_s if self.total_s > 0 else float("nan")

    @property
    def search_queries_per_s(self) -> float:
        """Queries per second of the top-k search alone."""
        return self.queries / self.search_s if self.search_s > 0 else float("nan")

    def note_incomplete(self, reason: str, *, kept: bool) -> None:
        """Count one row that got too few negatives, for ``reason``; ``kept``: written anyway."""
        self.incomplete_rows += 1
        self.dropped_rows += 0 if kept else 1
        self.incomplete_reasons[reason] = self.incomplete_reasons.get(reason, 0) + 1

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "queries": self.queries, "corpus_size": self.corpus_size,
            "written_rows": self.written_rows, "incomplete_rows": self.incomplete_rows,
            "dropped_rows": self.dropped_rows, "incomplete_by_reason": dict(sorted(self.incomplete_reasons.items())),
            "dropped_output": self.dropped_output,
            "encode_corpus_s": round(self.encode_corpus_s, 3), "encode_queries_s": round(self.encode_queries_s, 3),
            "queries_from_corpus": self.queries_from_corpus, "precision": self.precision,
            "search_s": round(self.search_s, 3), "rescore_s": round(self.rescore_s, 3),
            "total_s": round(self.total_s, 3), "corpus_docs_per_s": round(self.corpus_docs_per_s, 1),
            "queries_per_s": round(self.queries_per_s, 1), "search_queries_per_s": round(self.search_queries_per_s, 1),
            "skipped": self.counts.as_dict(), "processes": self.processes, "index": self.index,
            "index_build_s": round(self.index_build_s, 3), "recall_at_k": self.recall_at_k, "recall_k": self.recall_k,
            "embeddings_reused": self.embeddings_reused,
        }


@dataclass
class MiningResult:
    """Mined rows (dicts ready to write) and the run's statistics."""

    rows: list[dict[str, Any]]
    stats: MiningStats
    #: False on the other processes of a multi-process launch (they report nothing).
    is_main: bool = True
    #: Rows dropped for too few negatives, with ``reason`` (in memory only when no dropped sink was given).
    dropped: list[dict[str, Any]] = field(default_factory=list)


def assemble_rows(anchors: list[str], positives: list[str], of_row: list[int],
                  selected: list[list[tuple[str, float]]], positive_scores: list[float],
                  config: OfflineMiningConfig, stats: MiningStats,
                  dropped: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One output row per input pair: negatives (first ``num_negatives``) and optional candidates.

    Rows with too few negatives are kept (``keep_incomplete``) or appended to ``dropped`` with the reason
    ``not_reported`` (this path serves the sentence-transformers engine, which reports no filter tallies).
    """
    rows = []
    n = config.num_negatives
    for i, (anchor, positive) in enumerate(zip(anchors, positives)):
        picked = selected[of_row[i]]
        row: dict[str, Any] = {
            "anchor": anchor, "positive": positive, "positive_score": round(float(positive_scores[i]), 6),
            "negatives": [{"text": t, "score": round(s, 6)} for t, s in picked[:n]],
        }
        if config.candidates:
            row["candidates"] = [{"text": t, "score": round(s, 6)} for t, s in picked[n:n + config.candidates]]
        if len(picked) < n:
            stats.note_incomplete("not_reported", kept=config.keep_incomplete)
            if not config.keep_incomplete:
                if dropped is not None:
                    dropped.append({**row, "reason": "not_reported"})
                continue
        rows.append(row)
    stats.written_rows = len(rows)
    return rows


def log_stats(stats: MiningStats) -> None:
    """Log throughput and what the filters skipped."""
    if stats.encode_corpus_s > 0:  # the sentence-transformers engine only reports the total
        logger.info("encoded %d corpus documents in %.1fs (%.0f docs/s); %d queries in %.1fs (%d of them took "
                    "their corpus vector)", stats.corpus_size, stats.encode_corpus_s, stats.corpus_docs_per_s,
                    stats.queries, stats.encode_queries_s, stats.queries_from_corpus)
        logger.info("search %.2fs (%.0f queries/s)", stats.search_s, stats.search_queries_per_s)
    logger.info("mined %d queries against %d documents in %.1fs = %.1f queries/s end to end", stats.queries,
                stats.corpus_size, stats.total_s, stats.queries_per_s)
    skipped = {k: v for k, v in stats.counts.as_dict().items() if k != "considered" and v}
    if skipped:
        logger.info("skipped candidates (of %d in the window): %s", stats.counts.considered, skipped)
    if stats.incomplete_rows:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stats.incomplete_reasons.items(), key=lambda x: -x[1]))
        what = (f"{stats.dropped_rows} dropped" if stats.dropped_rows else "kept with fewer negatives")
        logger.warning("%d of %d rows (%.1f%%) found fewer negatives than asked (%s) by main reason: %s. Widen "
                       "range_max or loosen the margins; keep_incomplete (--keep-incomplete) keeps them with fewer "
                       "negatives, keep_dropped (--keep-dropped) writes them to <output>.dropped.jsonl",
                       stats.incomplete_rows, stats.rows, 100.0 * stats.incomplete_rows / max(stats.rows, 1), what,
                       reasons)
