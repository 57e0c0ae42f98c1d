"""Pick negatives from one query's ranked retrieval list: rank window, then false-negative filters.

The semantics are those documented on :class:`~embedtrain.schema.mining.NegativeFilter`: ranks
are positions in the retrieval list after removing excluded documents (the query's positives and
its own text); the margin filters compare each candidate's score with the positive's score.
:class:`FilterCounts` tallies why candidates were skipped so a mining run can report it, and
:func:`drop_reason` names why a row that got too few negatives did.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields

import numpy as np

from embedtrain.schema.mining import NegativeFilter


@dataclass
class FilterCounts:
    """How many in-window candidates each filter removed (window: ranked above ``range_min``)."""

    considered: int = 0
    above_range_min: int = 0
    absolute_margin: int = 0
    relative_margin: int = 0
    max_score: int = 0
    min_score: int = 0
    #: Candidates that are a copy of one of the query's positives (see :func:`is_positive_copy`).
    positive_copy: int = 0

    def add(self, other: FilterCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def select_negatives(ids: np.ndarray, scores: np.ndarray, *, exclude: Collection[int], positive_score: float,
                     flt: NegativeFilter, limit: int | None = None,
                     counts: FilterCounts | None = None) -> list[tuple[int, float]]:
    """``(id, score)`` of the accepted candidates of one query, in the given (best-first) order.

    ``ids``/``scores`` are the query's retrieval list (id ``-1`` = empty slot); ``exclude`` are
    ids that are never negatives (positives, the query itself); ``limit`` caps the result length.
    """
    ids = np.asarray(ids)
    scores = np.asarray(scores, dtype=np.float64)
    valid = (ids >= 0) & np.isfinite(scores)
    if exclude:
        valid &= ~np.isin(ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    rank = np.cumsum(valid) - 1
    keep = valid & (rank < flt.range_max)
    c = FilterCounts(considered=int(keep.sum()))
    above = keep & (rank < flt.range_min)
    c.above_range_min = int(above.sum())
    keep &= ~above
    p = float(positive_score)
    for name, drop in (
        ("absolute_margin", None if flt.absolute_margin is None else scores > p - flt.absolute_margin),
        ("relative_margin", None if flt.relative_margin is None else scores > p - abs(p) * flt.relative_margin),
        ("max_score", None if flt.max_score is None else scores > flt.max_score),
        ("min_score", None if flt.min_score is None else scores < flt.min_score),
    ):
        if drop is None:
            continue
        removed = keep & drop
        setattr(c, name, int(removed.sum()))
        keep &= ~removed
    if counts is not None:
        counts.add(c)
    picked = np.flatnonzero(keep)
    if limit is not None:
        picked = picked[:limit]
    return [(int(ids[j]), float(scores[j])) for j in picked]


#: Why a row got fewer negatives than asked: the filter that removed most of its query's candidates, or
#: ``too_few_documents`` when no filter removed any (the corpus or the rank window holds too few documents).
DROP_REASONS = ("absolute_margin", "relative_margin", "max_score", "min_score", "positive_copy", "too_few_documents")


def drop_reason(counts: FilterCounts) -> str:
    """The main reason a query whose candidate tallies are ``counts`` got too few negatives (:data:`DROP_REASONS`)."""
    removed = {name: getattr(counts, name) for name in DROP_REASONS[:-1]}
    name, value = max(removed.items(), key=lambda item: item[1])
    return name if value > 0 else "too_few_documents"


def normalized(text: str) -> str:
    """``text`` case-folded with its white space collapsed (what :func:`is_positive_copy` compares)."""
    return " ".join(text.casefold().split())


def is_normalized_copy(a: str, b: str, *, min_chars: int = 20, min_share: float = 0.5) -> bool:
    """:func:`is_positive_copy` on texts already passed through :func:`normalized`."""
    if a == b:
        return True
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    return len(short) >= min_chars and len(short) >= min_share * len(long) and short in long


def is_positive_copy(candidate: str, positive: str, *, min_chars: int = 20, min_share: float = 0.5) -> bool:
    """Whether ``candidate`` is (a version of) ``positive``: equal up to case and white space, or one contains the
    other while the shorter holds at least ``min_share`` of the longer's characters (and ``min_chars``).

    This catches a corpus entry ``title + " " + text`` of a positive given as its text alone (or the reverse),
    which hashing exact texts cannot see, without excluding a long document merely because it quotes a short
    positive.
    """
    return is_normalized_copy(normalized(candidate), normalized(positive), min_chars=min_chars, min_share=min_share)
