"""Training data formats and their conversion to the column layout sentence-transformers losses expect.

=================  =======================================  ==========================================
format             roles (source column found by name)      dataset columns produced
=================  =======================================  ==========================================
``pairs``          anchor, positive                          anchor, positive
``triplets``       anchor, positive, negative                anchor, positive, negative
``hard_negatives`` anchor, positive, negatives (list)        anchor, positive, negative_1 ... negative_n
``scored_pairs``   sentence1, sentence2, score               sentence1, sentence2, score
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
    value = row[column]
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise records.error(i, column, f"score must be a number, got {value!r}") from None
    if not math.isfinite(score):
        raise records.error(i, column, f"score must be finite, got {value!r}")
    return score


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
        if column == "score":
            continue
        is_query = column in spec.query_roles
        if fmt == "scored_pairs" and column == "sentence2" and passage_prompt is not None:
            is_query = False  # asymmetric scored pairs: sentence2 is a passage
        prompt = query_prompt if is_query else passage_prompt
        if prompt:
            prompts[column] = prompt
    return prompts
