"""Training data formats and their conversion to the column layout sentence-transformers losses expect.

=================  =======================================  ==========================================
format             roles (source column found by name)      dataset columns produced
=================  =======================================  ==========================================
``pairs``          anchor, positive                          anchor, positive
``triplets``       anchor, positive, negative                anchor, positive, negative
``hard_negatives`` anchor, positive, negatives (list)        anchor, positive, negative_1 ... negative_n
``scored_pairs``   sentence1, sentence2, score               sentence1, sentence2, score
``scored_negatives`` anchor, positive, negatives (+ teacher   anchor, positive, negative_1 ... negative_n,
                   scores: positive_score and {"text",        label = [s_pos, s_1 ... s_n] (no label when
                   "score"} negatives, or a scores list)      the rows carry no scores: a teacher scores them)
``text``           text                                      text  (plain text, e.g. SMAE pre-training)
=================  =======================================  ==========================================

Role names map to file columns through the dataset's ``columns`` mapping; roles that are not mapped
are looked up among their usual aliases (``query`` for ``anchor``, ``label`` for ``score``...).
For ``hard_negatives`` the negatives may be one list-valued column or numbered columns
(``negative_1``, ``negative_2``...). Every row is checked; the first bad row raises a
:class:`~embedtrain.errors.DataError` naming file, line and field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from datasets import Dataset

from embedtrain.errors import DataError
from embedtrain.io.readers import Records


@dataclass(frozen=True)
class FormatSpec:
    """Roles of one data format: text roles, an optional list role and an optional score role."""

    text_roles: tuple[str, ...]
    list_role: str | None = None
    score_role: str | None = None
    #: Roles whose text is a query (gets the query prompt); the rest get the passage prompt.
    query_roles: tuple[str, ...] = ("anchor",)

    @property
    def roles(self) -> tuple[str, ...]:
        extra = tuple(r for r in (self.list_role, self.score_role) if r)
        return self.text_roles + extra


FORMATS: dict[str, FormatSpec] = {
    "pairs": FormatSpec(("anchor", "positive")),
    "triplets": FormatSpec(("anchor", "positive", "negative")),
    "hard_negatives": FormatSpec(("anchor", "positive"), list_role="negatives"),
    "scored_pairs": FormatSpec(("sentence1", "sentence2"), score_role="score",
                               query_roles=("sentence1", "sentence2")),
    "text": FormatSpec(("text",), query_roles=()),
    # + optional roles positive_score / scores (SCORE_ROLES), read by scored_negatives_dataset
    "scored_negatives": FormatSpec(("anchor", "positive"), list_role="negatives"),
}

#: Usual column names of each role, tried in order when a role is not mapped explicitly (one table for all readers).
ALIASES: dict[str, tuple[str, ...]] = {
    "anchor": ("anchor", "query", "question", "text1", "sentence1", "premise"),
    "positive": ("positive", "pos", "document", "passage", "answer", "text2", "sentence2", "hypothesis"),
    "negative": ("negative", "neg", "hard_negative"),
    "negatives": ("negatives", "negs", "hard_negatives", "neg"),
    "sentence1": ("sentence1", "text1", "anchor", "s1"),
    "sentence2": ("sentence2", "text2", "positive", "s2"),
    "score": ("score", "label", "similarity", "relevance"),
    "text": ("text", "sentence", "content", "passage", "document", "body"),
    # roles of evaluation files (embedtrain.evaluation.local_data)
    "id": ("_id", "id"),
    "label": ("label", "label_text"),
    # teacher scores of scored_negatives rows
    "positive_score": ("positive_score", "pos_score"),
    "scores": ("scores", "label", "labels", "teacher_scores"),
}

_NUMBERED_NEG = re.compile(r"^negative_(\d+)$")


def resolve_columns(records: Records, spec: FormatSpec, mapping: dict[str, str]) -> dict[str, str | None]:
    """Map each role to a source column (None: numbered negative columns), or raise naming the role."""
    available = set(records.columns())
    unknown = set(mapping) - set(spec.roles)
    if unknown:
        role = sorted(unknown)[0]
        raise DataError(f"'{role}' is not a role of this format; roles are {list(spec.roles)}",
                        file=records.path, field=f"columns.{role}")
    resolved: dict[str, str | None] = {}
    for role in spec.roles:
        if role in mapping:
            if mapping[role] not in available:
                raise records.error(0, mapping[role],
                                    f"column '{mapping[role]}' (mapped to role '{role}') is missing; "
                                    f"columns are {sorted(available)}")
            resolved[role] = mapping[role]
            continue
        found = next((c for c in ALIASES.get(role, (role,)) if c in available and c not in resolved.values()), None)
        if found is None and role == spec.list_role and any(_NUMBERED_NEG.match(c) for c in available):
            resolved[role] = None  # numbered negative_1..negative_n columns
            continue
        if found is None:
            raise records.error(0, role,
                                f"missing column for '{role}' (looked for {list(ALIASES.get(role, (role,)))}); "
                                f"columns are {sorted(available)}. Map it with columns: {{{role}: <column>}}")
        resolved[role] = found
    return resolved


def row_text(records: Records, i: int, column: str, *, allow_empty: bool = False) -> str:
    """The text in ``column`` of row ``i``; a missing, non-string or (unless allowed) blank value is a located error."""
    row = records.rows[i]
    if column not in row:
        raise records.error(i, column, f"missing column '{column}' (columns here: {sorted(row)})")
    value = row[column]
    if not isinstance(value, str):
        raise records.error(i, column, f"expected a string, got {type(value).__name__} {value!r}")
    if not allow_empty and not value.strip():
        raise records.error(i, column, "empty text")
    return value


def row_score(records: Records, i: int, column: str) -> float:
    """The finite number in ``column`` of row ``i`` (numeric strings accepted); anything else is a located error."""
    row = records.rows[i]
    if column not in row:
        raise records.error(i, column, f"missing column '{column}' (columns here: {sorted(row)})")
    return _finite(records, i, column, row[column])


def row_negatives(records: Records, i: int, column: str | None) -> list[str]:
    row = records.rows[i]
    if column is None:
        numbered = sorted((int(m.group(1)), k) for k in row if (m := _NUMBERED_NEG.match(k)))
        return [row_text(records, i, k) for _, k in numbered]
    value = row.get(column)
    if not isinstance(value, list):
        raise records.error(i, column, f"expected a list of negatives, got {type(value).__name__}")
    out = []
    for j, neg in enumerate(value):
        if isinstance(neg, dict) and "text" in neg:  # mined output: {"text": ..., "score": ...}
            neg = neg["text"]
        if not isinstance(neg, str) or not neg.strip():
            raise records.error(i, f"{column}[{j}]", "each negative must be a non-empty string")
        out.append(neg)
    return out


@dataclass
class CheckedRow:
    """One row checked as a format: its texts by role, its negatives and its score (when the format has them)."""

    texts: dict[str, str]
    negatives: list[str] | None = None
    score: float | None = None
    #: Extra per-row values some readers keep (dynamic mining's file negatives and candidates).
    extras: dict | None = None


def check_row(records: Records, i: int, spec: FormatSpec, cols: dict[str, str | None],
              num_negatives: int | None = None) -> CheckedRow:
    """Check row ``i`` of ``records`` as format ``spec`` (columns from :func:`resolve_columns`); the reference
    for every reader: the first problem of the row is a located :class:`DataError`."""
    texts = {role: row_text(records, i, cols[role]) for role in spec.text_roles}  # type: ignore[arg-type]
    checked = CheckedRow(texts)
    if spec.list_role:
        negs = row_negatives(records, i, cols[spec.list_role])
        if num_negatives is not None and len(negs) < num_negatives:
            raise records.error(i, cols[spec.list_role] or "negative_*",
                                f"has {len(negs)} negatives, num_negatives asks for {num_negatives}")
        checked.negatives = negs
    if spec.score_role:
        checked.score = row_score(records, i, cols[spec.score_role])  # type: ignore[arg-type]
    return checked


def to_dataset(records: Records, fmt: str, mapping: dict[str, str] | None = None,
               num_negatives: int | None = None) -> Dataset:
    """Validate every row of in-memory ``records`` as format ``fmt`` and return the training ``Dataset``.

    For files, :func:`embedtrain.io.dataset_cache.load_dataset_cached` does the same checks in a vectorised,
    streamed pass into a memory-mapped, cached Arrow dataset.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}'; choose from {sorted(FORMATS)}", file=records.path, field="format")
    if len(records) == 0:
        raise DataError("no records found", file=records.path)
    if fmt == "scored_negatives":
        return scored_negatives_dataset(records, mapping or {}, num_negatives)
    spec = FORMATS[fmt]
    cols = resolve_columns(records, spec, mapping or {})
    out: dict[str, list] = {role: [] for role in spec.text_roles}
    negatives: list[list[str]] = []
    scores: list[float] = []
    for i in range(len(records)):
        row = check_row(records, i, spec, cols, num_negatives)
        for role in spec.text_roles:
            out[role].append(row.texts[role])
        if row.negatives is not None:
            negatives.append(row.negatives)
        if row.score is not None:
            scores.append(row.score)
    if spec.list_role:
        n = num_negatives if num_negatives is not None else min(len(n_) for n_ in negatives)
        if n == 0:
            idx = next(i for i, n_ in enumerate(negatives) if not n_)
            raise records.error(idx, cols[spec.list_role] or "negative_*", "row has no negatives")
        for k in range(n):
            out[f"negative_{k + 1}"] = [negs[k] for negs in negatives]
    if spec.score_role:
        out["score"] = scores
    return Dataset.from_dict(out)


def prompt_columns(fmt: str, n_columns: list[str], query_prompt: str | None,
                   passage_prompt: str | None) -> dict[str, str]:
    """Column -> prompt for a dataset of format ``fmt`` (query roles get the query prompt)."""
    spec = FORMATS[fmt]
    prompts: dict[str, str] = {}
    for column in n_columns:
        if column in ("score", "label"):
            continue
        is_query = column in spec.query_roles
        if fmt == "scored_pairs" and column == "sentence2" and passage_prompt is not None:
            is_query = False  # asymmetric scored pairs: sentence2 is a passage
        prompt = query_prompt if is_query else passage_prompt
        if prompt:
            prompts[column] = prompt
    return prompts


# -- scored_negatives: hard negatives with teacher scores (score distillation) ------------------------------
#: Optional roles of ``scored_negatives`` rows: the positive's teacher score, or all scores in one list.
SCORE_ROLES = ("positive_score", "scores")


def _finite(records: Records, i: int, field: str, value) -> float:
    """``value`` (a number or numeric string) of row ``i``'s ``field`` as a finite float, else a located error."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise records.error(i, field, f"score must be a number, got {value!r}") from None
    if not math.isfinite(score):
        raise records.error(i, field, f"score must be finite, got {value!r}")
    return score


def _scored_row(records: Records, i: int, negatives: str | None, positive_score: str | None,
                scores: str | None) -> tuple[list[str], list[float] | None]:
    """Row ``i``'s negatives and its teacher scores ``[s_pos, s_1, ...]`` (None when the row has none)."""
    row = records.rows[i]
    texts, neg_scores = [], []
    value = row.get(negatives) if negatives is not None else None
    if negatives is None:
        texts = row_negatives(records, i, None)
    elif not isinstance(value, list):
        raise records.error(i, negatives, f"expected a list of negatives, got {type(value).__name__}")
    else:
        for j, neg in enumerate(value):
            text = neg.get("text") if isinstance(neg, dict) else neg
            if not isinstance(text, str) or not text.strip():
                raise records.error(i, f"{negatives}[{j}]", "each negative must be a non-empty string or "
                                                            '{"text": ..., "score": ...}')
            texts.append(text)
            score = neg.get("score") if isinstance(neg, dict) else None
            neg_scores.append(None if score is None else _finite(records, i, f"{negatives}[{j}].score", score))
    pos = row.get(positive_score) if positive_score is not None else None
    if pos is not None and texts and all(s is not None for s in neg_scores):
        return texts, [_finite(records, i, positive_score, pos), *neg_scores]  # type: ignore[list-item]
    listed = row.get(scores) if scores is not None else None
    if listed is not None:
        if not isinstance(listed, list) or len(listed) != len(texts) + 1:
            raise records.error(i, scores, f"expected {len(texts) + 1} scores (the positive's, then one per "
                                           f"negative), got {listed!r}")
        return texts, [_finite(records, i, f"{scores}[{j}]", v) for j, v in enumerate(listed)]
    if pos is not None or any(s is not None for s in neg_scores):
        field = negatives if pos is not None else (positive_score or "positive_score")
        raise records.error(i, field, "scores are incomplete: give positive_score and a score for every "
                                      "negative, or a scores list")
    return texts, None


def _score_columns(records: Records, mapping: dict[str, str]) -> dict[str, str | None]:
    available = set(records.columns())
    found: dict[str, str | None] = {}
    for role in SCORE_ROLES:
        if role in mapping:
            if mapping[role] not in available:
                raise records.error(0, mapping[role], f"column '{mapping[role]}' (mapped to role '{role}') is "
                                                      f"missing; columns are {sorted(available)}")
            found[role] = mapping[role]
        else:
            found[role] = next((c for c in ALIASES[role] if c in available), None)
    return found


def scored_negatives_dataset(records: Records, mapping: dict[str, str], num_negatives: int | None = None
                             ) -> Dataset:
    """``anchor, positive, negative_1..n`` and the teacher scores ``label = [s_pos, s_1..s_n]`` of each row.

    Scores come from ``positive_score`` plus ``{"text", "score"}`` negatives (what ``embedtrain mine`` writes),
    or from a ``scores`` list (positive first). Either every row has scores or none has: a file without
    scores yields no ``label`` column and a teacher must score the pairs (``distill.scorer``). ``n`` is
    ``num_negatives`` (rows with fewer raise) or the fewest negatives of any row; extra negatives are dropped
    with their scores.
    """
    spec = FORMATS["scored_negatives"]
    unknown = set(mapping) - set(spec.roles) - set(SCORE_ROLES)
    if unknown:
        role = min(unknown)
        raise DataError(f"'{role}' is not a role of this format; roles are {[*spec.roles, *SCORE_ROLES]}",
                        file=records.path, field=f"columns.{role}")
    cols = resolve_columns(records, spec, {k: v for k, v in mapping.items() if k not in SCORE_ROLES})
    score_cols = _score_columns(records, mapping)
    anchors, positives, negatives, labels = [], [], [], []
    for i in range(len(records)):
        anchors.append(row_text(records, i, cols["anchor"]))  # type: ignore[arg-type]
        positives.append(row_text(records, i, cols["positive"]))  # type: ignore[arg-type]
        texts, scores = _scored_row(records, i, cols["negatives"], score_cols["positive_score"],
                                    score_cols["scores"])
        if num_negatives is not None and len(texts) < num_negatives:
            raise records.error(i, cols["negatives"] or "negative_*",
                                f"has {len(texts)} negatives, num_negatives asks for {num_negatives}")
        if labels and (scores is None) != (labels[0] is None):
            first = "has" if labels[0] is not None else "has no"
            raise records.error(i, cols["negatives"] or "negative_*",
                                f"the first row {first} teacher scores and this one {'has' if scores is not None else 'has none'}; "
                                "score every row or none (a teacher then scores them)")
        negatives.append(texts)
        labels.append(scores)
    n = num_negatives if num_negatives is not None else min(len(t) for t in negatives)
    if n == 0:
        idx = next(i for i, t in enumerate(negatives) if not t)
        raise records.error(idx, cols["negatives"] or "negative_*", "row has no negatives")
    out: dict[str, list] = {"anchor": anchors, "positive": positives}
    for k in range(n):
        out[f"negative_{k + 1}"] = [t[k] for t in negatives]
    if labels[0] is not None:
        out["label"] = [scores[:n + 1] for scores in labels]  # type: ignore[index]
    return Dataset.from_dict(out)
