"""Training datasets -> the ``label`` column the distillation losses read. No model, no file access.

Score distillation (``margin_mse``, ``listwise_kl``) reads ``anchor, positive, negative_1 .. negative_k`` and a
``label`` with the teacher's scores ``[s_pos, s_neg_1, .., s_neg_k]``. Rows read as ``scored_negatives``
(:func:`embedtrain.io.formats.scored_negatives_dataset`) already carry it when the file has scores; otherwise
:func:`label_with_teacher_scores` adds it from a teacher scorer (e.g.
``functools.partial(embedtrain.distill.teachers.score_pairs, scorer=..., cache=...)``).

Embedding distillation (``embed_distill``) reads the text columns and a ``label`` with each text's row in a
teacher store: :func:`teacher_texts` lists what to pre-compute, :func:`attach_teacher_rows` adds the rows.

Every function takes and returns a ``datasets.Dataset`` (or a ``dict`` of equal-length lists); which columns are
text follows sentence-transformers' collator: every column except ``label``, ``labels``, ``score``, ``scores``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from embedtrain.errors import DataError

ScoreFn = Callable[[Sequence[str], Sequence[str]], Any]
#: Columns sentence-transformers' data collator treats as the label (the first one present wins).
LABEL_COLUMNS = ("label", "labels", "score", "scores")


def _columns(data) -> list[str]:
    return list(data.column_names) if hasattr(data, "column_names") else list(data)


def _with_label(data, label: list):
    """``data`` with its ``label`` column set to ``label`` (replacing one that is there)."""
    if isinstance(data, dict):
        return {**data, "label": label}
    if "label" in data.column_names:
        data = data.remove_columns("label")
    return data.add_column("label", label)


def text_columns(data) -> list[str]:
    """The columns the trainer embeds, in order (everything but the label columns)."""
    return [c for c in _columns(data) if c not in LABEL_COLUMNS]


def candidate_columns(data) -> list[str]:
    """``positive, negative_1, ..., negative_k`` present in ``data``, in order."""
    names = set(_columns(data))
    k = 0
    while f"negative_{k + 1}" in names:
        k += 1
    return ["positive"] + [f"negative_{j + 1}" for j in range(k)]


def label_with_teacher_scores(data, score_fn: ScoreFn, *, margins: bool = False):
    """Set ``label = [s(anchor, positive), s(anchor, negative_1), ...]`` computed by ``score_fn``.

    ``score_fn(queries, documents)`` returns one score per pair; it is called once with all pairs (a cached,
    sharded teacher: :func:`embedtrain.distill.teachers.score_pairs`). ``margins=True`` stores
    ``[s_pos - s_neg_i]`` instead.
    """
    cands = candidate_columns(data)
    anchors = list(data["anchor"])
    columns = {c: list(data[c]) for c in cands}
    n = len(anchors)
    queries = [q for q in anchors for _ in cands]
    documents = [columns[c][i] for i in range(n) for c in cands]
    scores = np.asarray(score_fn(queries, documents), dtype=np.float64).reshape(n, len(cands))
    if not np.isfinite(scores).all():
        bad = int(np.argwhere(~np.isfinite(scores))[0][0])
        raise DataError(f"the teacher gave a non-finite score to row {bad + 1}", field="label")
    labels = (scores[:, :1] - scores[:, 1:]) if margins else scores
    return _with_label(data, labels.tolist())


def teacher_texts(data, kinds: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Every ``(text, kind)`` of the text columns (``kinds`` maps a column to ``"query"``; default document)."""
    kinds = kinds or {}
    return [(text, kinds.get(column, "document")) for column in text_columns(data) for text in data[column]]


def attach_teacher_rows(data, store, columns: Sequence[str] | None = None, *,
                        kinds: dict[str, str] | None = None):
    """Set ``label`` = each row's teacher-store rows, one per text column (``columns``, default all).

    One column gives an ``int`` per row, several a list of ints (the ``(C,)`` layout the loss reads).
    ``kinds`` maps a column to ``"query"`` / ``"document"`` (default: document), which must match how the texts
    were given to ``precompute_teacher_embeddings``. ``store`` is a
    :class:`~embedtrain.distill.teachers.TeacherEmbeddings` (anything with ``rows(texts, kind)``).
    """
    columns = list(columns) if columns is not None else text_columns(data)
    if not columns:
        raise DataError("no text columns to look up", field="columns")
    kinds = kinds or {}
    per_column = []
    for column in columns:
        if column not in _columns(data):
            raise DataError(f"column '{column}' is missing; columns are {sorted(_columns(data))}", field=column)
        try:
            per_column.append(store.rows(list(data[column]), kinds.get(column, "document")))
        except KeyError as exc:
            raise DataError(f"{exc.args[0]}; pre-compute the store with this column's texts", field=column) from None
    rows = np.stack(per_column, axis=1)
    return _with_label(data, rows[:, 0].tolist() if len(columns) == 1 else rows.tolist())
