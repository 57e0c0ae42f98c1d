"""Run an offline mining config through ``sentence_transformers.util.mine_hard_negatives``.

sentence-transformers' function does the encoding, retrieval, positive masking, margin filtering
and cross-encoder rescoring itself. Asking it for ``num_negatives + candidates`` negatives in its
``labeled-list`` format with scores gives, per (anchor, positive) pair, the ranked list of
accepted documents, which is split here into negatives and candidates like the built-in engine.

Differences from the built-in engine (documented, not bugs): sentence-transformers counts
``range_min``/``range_max`` among the candidates that survive the margin filters, retrieves
``range_max`` plus the number of positives, does not exclude the query's own text (it is removed
here afterwards, as are copies of the row's own positive: only among the documents it returned, with no
room kept for them), prints tqdm bars, and reports no per-stage timings (only the total) nor why a row got
too few negatives (``reason: not_reported``).
"""

from __future__ import annotations

import time

from embedtrain.mining.filtering import is_positive_copy
from embedtrain.mining.results import MiningResult, MiningStats, assemble_rows, log_stats
from embedtrain.schema.mining import OfflineMiningConfig


def mine_with_sentence_transformers(config: OfflineMiningConfig, model, anchors: list[str], positives: list[str],
                                    documents: list[str], t_start: float) -> MiningResult:
    """Mine with sentence-transformers and return rows in embedtrain's output layout."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    cross_encoder = None
    if config.cross_encoder:
        from embedtrain.mining.rescore import load_cross_encoder

        cross_encoder = load_cross_encoder(config.cross_encoder, device=config.device)
    stats = MiningStats(rows=len(anchors), queries=len(dict.fromkeys(anchors)),
                        corpus_size=len(dict.fromkeys([*documents, *positives])))
    wanted = config.num_negatives + config.candidates + int(config.exclude_query_text)
    mined = mine_hard_negatives(
        Dataset.from_dict({"anchor": anchors, "positive": positives}), model,
        anchor_column_name="anchor", positive_column_name="positive", corpus=documents or None,
        cross_encoder=cross_encoder, range_min=config.range_min,
        range_max=max(config.range_max, config.range_min + wanted),
        max_score=config.max_score, min_score=config.min_score, absolute_margin=config.absolute_margin,
        relative_margin=config.relative_margin, num_negatives=wanted, sampling_strategy="top",
        query_prompt=config.query_prompt, corpus_prompt=config.passage_prompt, output_format="labeled-list",
        output_scores=True, batch_size=config.batch_size, faiss_batch_size=config.query_chunk_size,
        use_faiss=config.use_faiss, verbose=False,
    )
    # encoding, search and filtering happen inside one call: only total_s is known (per-stage stays 0)
    # labeled-list rows: anchor, positive = [positive, neg_1, ...], scores = [pos_score, s_1, ...]
    by_pair: dict[tuple[str, str], tuple[float, list[tuple[str, float]]]] = {}
    for anchor, docs, scores in zip(mined["anchor"], mined["positive"], mined["scores"]):
        negs = [(d, float(s)) for d, s in zip(docs[1:], scores[1:])
                if not (config.exclude_query_text and d == anchor)
                and not (config.exclude_positive_copies and is_positive_copy(d, docs[0]))]
        by_pair[(anchor, docs[0])] = (float(scores[0]), negs[:config.num_negatives + config.candidates])
    selected, pos_scores = [], []
    for anchor, positive in zip(anchors, positives):
        pos_score, negs = by_pair.get((anchor, positive), (float("nan"), []))
        selected.append(negs)
        pos_scores.append(pos_score)
    dropped: list = []
    rows = assemble_rows(anchors, positives, list(range(len(anchors))), selected, pos_scores, config, stats,
                         dropped)
    stats.total_s = time.perf_counter() - t_start
    log_stats(stats)
    return MiningResult(rows, stats, dropped=dropped)
