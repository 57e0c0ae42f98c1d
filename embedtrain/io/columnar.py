"""Vectorised validation and conversion of Arrow record batches into a data format's training columns.

:func:`convert` turns a :class:`~embedtrain.io.sources.Source` into record batches of the format's columns
(``anchor``, ``positive``, ``negative_1`` ...) without a Python object per value:

1. the first row names the columns (:func:`~embedtrain.io.formats.resolve_columns`, same errors as ever);
2. each batch is *screened* with Arrow compute kernels (nulls, non-text types, blank text, too few
   negatives, scores that are not finite numbers) per role kind (:data:`CHECKS`);
3. a flagged row is looked up in the file (:meth:`~embedtrain.io.sources.Source.locate`) and checked by the
   reference row check (:func:`~embedtrain.io.formats.check_row`), which raises the located
   ``file:line, field`` error the row-by-row readers always raised;
4. when the Arrow readers cannot read the file (a column whose type changes between rows, mixed
   string/object negatives, invalid UTF-8...), the whole source goes through the reference row path
   instead: slower, identical result or error.

A format is described by its :class:`~embedtrain.io.formats.FormatSpec` roles; each role kind (text,
list of texts, score) has one screening function and one conversion, so a new format made of existing
kinds needs nothing here, and a new kind is one screening function plus one conversion.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedtrain.errors import DataError
from embedtrain.io.formats import _NUMBERED_NEG, FORMATS, FormatSpec, check_row, resolve_columns
from embedtrain.io.readers import Records
from embedtrain.io.sources import BATCH_ROWS, FastPathUnavailable, Source

logger = logging.getLogger(__name__)

#: Column holding the full negatives list while ``num_negatives`` is unknown (split into negative_k at the end).
NEGATIVES_LIST = "__negatives"
#: Extra columns kept for dynamic re-mining (:attr:`Plan.candidates_column`): every negative of the file, their
#: ``score`` (null where the file has none) and the row's ranked candidates.
FILE_NEGATIVES, FILE_SCORES, CANDIDATES = "__file_negatives", "__file_scores", "__candidates"
EXTRA_COLUMNS = (FILE_NEGATIVES, FILE_SCORES, CANDIDATES)
_SCORED_ITEM = pa.struct([("text", pa.string()), ("score", pa.float64())])


@dataclass
class Plan:
    """How a source's columns become a format's columns."""

    fmt: str
    spec: FormatSpec
    cols: dict[str, str | None]
    #: Numbered negative columns (``negative_1`` ...) of the first row when the negatives are not one list.
    numbered: list[str]
    num_negatives: int | None
    #: ``"dicts"`` when list items are ``{"text": ..., "score": ...}`` (mined output), else ``"strings"``.
    list_items: str = "strings"
    #: Dynamic re-mining needs every negative of the file, their scores and the ranked candidates of this column:
    #: kept as the extra columns :data:`EXTRA_COLUMNS` (None: not kept).
    candidates_column: str | None = None
    candidate_items: str = "strings"

    def input_schema(self, *, text_scores: bool = False) -> pa.Schema:
        """Columns (and types) the fast readers should produce."""
        fields: list[pa.Field] = []
        for role in self.spec.text_roles:
            fields.append(pa.field(self.cols[role], pa.string()))
        if self.spec.list_role:
            column = self.cols[self.spec.list_role]
            if column is None:
                fields += [pa.field(c, pa.string()) for c in self.numbered]
            else:
                item = _SCORED_ITEM if self.list_items == "dicts" else pa.string()
                fields.append(pa.field(column, pa.list_(item)))
        if self.candidates_column is not None:
            item = _SCORED_ITEM if self.candidate_items == "dicts" else pa.string()
            fields.append(pa.field(self.candidates_column, pa.list_(item)))
        if self.spec.score_role:
            fields.append(pa.field(self.cols[self.spec.score_role], pa.string() if text_scores else pa.float64()))
        seen: dict[str, pa.Field] = {}
        for f in fields:
            seen.setdefault(f.name, f)
        return pa.schema(list(seen.values()))


@dataclass
class ConvertStats:
    """What the pass saw: rows, score range, per-row hashes (for the duplicate count), the shortest negatives."""

    rows: int = 0
    score_min: float = math.inf
    score_max: float = -math.inf
    min_negatives: int | None = None
    first_without_negatives: int | None = None
    fast_path: bool = True
    hashes: list[np.ndarray] = field(default_factory=list)

    def distinct_rows(self) -> int:
        """Distinct rows (by 64-bit row hash); sorting beats ``np.unique``'s hash path on large arrays."""
        if not self.hashes:
            return self.rows
        values = np.sort(np.concatenate(self.hashes))
        return int(1 + np.count_nonzero(values[1:] != values[:-1])) if len(values) else 0


def make_plan(source: Source, fmt: str, mapping: dict[str, str] | None, num_negatives: int | None,
              candidates_column: str | None = None) -> Plan:
    """Resolve the roles of ``fmt`` against the source's first row (errors as :func:`to_dataset` raises them)."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}'; choose from {sorted(FORMATS)}", file=source.path, field="format")
    first = source.first()
    if first is None:
        raise DataError("no records found", file=source.path)
    pos, row = first
    records = Records(source.path, [row], [pos], unit=source.unit)
    spec = FORMATS[fmt]
    cols = resolve_columns(records, spec, mapping or {})
    numbered: list[str] = []
    list_items = "strings"
    if spec.list_role:
        column = cols[spec.list_role]
        if column is None:
            found = [(int(m.group(1)), k) for k in row if (m := _NUMBERED_NEG.match(k))]
            numbered = [k for _, k in sorted(found)]
        elif isinstance(row.get(column), list) and row[column] and isinstance(row[column][0], dict):
            list_items = "dicts"
    candidate_items = "strings"
    if candidates_column is not None:
        value = row.get(candidates_column)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            candidate_items = "dicts"
    return Plan(fmt, spec, cols, numbered, num_negatives, list_items, candidates_column, candidate_items)


# -- screening: one function per role kind, each returns a boolean "suspect" mask -----------------------------
def _is_text(arr: pa.Array) -> bool:
    return pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)


def screen_text(arr: pa.Array) -> pa.Array:
    """Rows whose value is missing, not text, or blank."""
    if not _is_text(arr):
        return pa.array(np.ones(len(arr), dtype=bool))
    blank = pc.or_(pc.equal(pc.utf8_length(arr), 0), pc.utf8_is_space(arr))
    return pc.fill_null(blank, True)


def _list_texts(arr: pa.Array) -> pa.Array:
    """The flat item texts of a list column (``text`` of dict items)."""
    values = pc.list_flatten(arr)
    if pa.types.is_struct(values.type):
        values = pc.struct_field(values, "text")
    return values


def screen_text_list(arr: pa.Array, num_negatives: int | None) -> pa.Array:
    """Rows whose list is missing, holds a blank / non-text item, or is shorter than ``num_negatives``."""
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        return pa.array(np.ones(len(arr), dtype=bool))
    n = len(arr)
    bad = np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)
    values = _list_texts(arr)
    if len(values):
        item_bad = np.asarray(screen_text(values).to_numpy(zero_copy_only=False), dtype=bool)
        if item_bad.any():
            parents = np.asarray(pc.list_parent_indices(arr).to_numpy(zero_copy_only=False))
            bad |= np.bincount(parents[item_bad], minlength=n)[:n] > 0
    if num_negatives is not None:
        lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False))
        bad |= lengths < num_negatives
    return pa.array(bad)


def parse_scores(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(values, suspect)``: scores as float64 (Python's ``float`` rules for text) and rows that are not finite."""
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:
            values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = np.array([_py_float(v) for v in arr.to_pylist()], dtype=np.float64)
    elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
        values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    else:
        values = np.full(len(arr), np.nan)
    values = np.asarray(values, dtype=np.float64)
    return values, ~np.isfinite(values)


def _py_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def screen(batch: pa.RecordBatch, plan: Plan) -> tuple[np.ndarray, np.ndarray | None]:
    """``(suspect mask, scores)`` of one batch."""
    spec, cols = plan.spec, plan.cols
    mask = np.zeros(batch.num_rows, dtype=bool)
    for role in spec.text_roles:
        mask |= np.asarray(screen_text(batch.column(cols[role])).to_numpy(zero_copy_only=False), dtype=bool)
    if spec.list_role:
        column = cols[spec.list_role]
        if column is None:
            for c in plan.numbered:
                mask |= np.asarray(screen_text(batch.column(c)).to_numpy(zero_copy_only=False), dtype=bool)
            if plan.num_negatives is not None and len(plan.numbered) < plan.num_negatives:
                mask[:] = True
        else:
            mask |= np.asarray(screen_text_list(batch.column(column), plan.num_negatives).to_numpy(
                zero_copy_only=False), dtype=bool)
    scores = None
    if spec.score_role:
        scores, bad = parse_scores(batch.column(cols[spec.score_role]))
        mask |= bad
    if plan.candidates_column is not None:  # a missing candidates list is fine; a bad item is not
        arr = batch.column(plan.candidates_column)
        bad = np.asarray(screen_text_list(arr, None).to_numpy(zero_copy_only=False), dtype=bool)
        mask |= bad & ~np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)
    return mask, scores


# -- conversion -----------------------------------------------------------------------------------------------
def _as_string(arr: pa.Array) -> pa.Array:
    return arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())


def convert_batch(batch: pa.RecordBatch, plan: Plan, scores: np.ndarray | None) -> dict[str, pa.Array]:
    """The format's columns for a screened batch."""
    spec, cols = plan.spec, plan.cols
    out: dict[str, pa.Array] = {role: _as_string(batch.column(cols[role])) for role in spec.text_roles}
    if spec.list_role:
        column = cols[spec.list_role]
        if column is None:
            negs = [_as_string(batch.column(c)) for c in plan.numbered]
            if plan.num_negatives is not None:
                negs = negs[:plan.num_negatives]
            out.update({f"negative_{k + 1}": a for k, a in enumerate(negs)})
        else:
            arr = batch.column(column)
            if plan.num_negatives is not None:
                for k in range(plan.num_negatives):
                    item = pc.list_element(arr, k)
                    if pa.types.is_struct(item.type):
                        item = pc.struct_field(item, "text")
                    out[f"negative_{k + 1}"] = _as_string(item)
            else:
                lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False))
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
                out[NEGATIVES_LIST] = pa.ListArray.from_arrays(pa.array(offsets), _as_string(_list_texts(arr)))
    if spec.score_role:
        out["score"] = pa.array(scores, pa.float64())
    if plan.candidates_column is not None:
        out.update(_extra_columns(batch, plan))
    return out


def _as_list(arr: pa.Array, field: str = "text", dtype: pa.DataType = pa.string()) -> pa.Array:
    """A list column as ``list<dtype>`` of its items (``field`` of dict items; nulls for plain items' scores);
    a missing list becomes an empty one."""
    lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False))
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    values = pc.list_flatten(arr)
    if pa.types.is_struct(values.type):
        values = pc.struct_field(values, field) if values.type.get_field_index(field) >= 0 else \
            pa.nulls(len(values), dtype)
    elif field != "text":
        values = pa.nulls(len(values), dtype)
    return pa.ListArray.from_arrays(offsets, pc.cast(values, dtype))


def _extra_columns(batch: pa.RecordBatch, plan: Plan) -> dict[str, pa.Array]:
    column = plan.cols[plan.spec.list_role]
    if column is None:  # numbered negative columns
        texts = [_as_string(batch.column(c)).to_pylist() for c in plan.numbered]
        negatives = pa.array([list(r) for r in zip(*texts)], pa.list_(pa.string()))
        scores = pa.array([[None] * len(plan.numbered)] * batch.num_rows, pa.list_(pa.float64()))
    else:
        negatives = _as_list(batch.column(column))
        scores = _as_list(batch.column(column), "score", pa.float64())
    return {FILE_NEGATIVES: negatives, FILE_SCORES: scores,
            CANDIDATES: _as_list(batch.column(plan.candidates_column))}


def _row_extras(records: Records, plan: Plan) -> dict[str, list]:
    """The dynamic-mining extras of the one row of ``records`` (reference path; same checks as the training
    code always made: candidate items are texts or ``{"text": ...}``)."""
    from embedtrain.io.formats import row_negatives

    column = plan.cols[plan.spec.list_role]
    raw = records.rows[0].get(column) if column else None
    scores = [item.get("score") if isinstance(item, dict) else None for item in raw] if isinstance(raw, list) \
        else [None] * len(row_negatives(records, 0, column))
    scores = [float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None for x in scores]
    candidates = row_negatives(records, 0, plan.candidates_column) \
        if records.rows[0].get(plan.candidates_column) is not None else []
    return {FILE_NEGATIVES: row_negatives(records, 0, column), FILE_SCORES: scores, CANDIDATES: candidates}


def _rows_to_columns(rows: list, plan: Plan) -> dict[str, pa.Array]:
    """Reference-path rows (:class:`CheckedRow`) as the same columns :func:`convert_batch` makes."""
    spec = plan.spec
    out: dict[str, pa.Array] = {role: pa.array([r.texts[role] for r in rows], pa.string()) for role in spec.text_roles}
    if spec.list_role:
        if plan.num_negatives is not None:
            for k in range(plan.num_negatives):
                out[f"negative_{k + 1}"] = pa.array([r.negatives[k] for r in rows], pa.string())
        else:
            out[NEGATIVES_LIST] = pa.array([r.negatives for r in rows], pa.list_(pa.string()))
    if spec.score_role:
        out["score"] = pa.array([r.score for r in rows], pa.float64())
    if plan.candidates_column is not None:
        out[FILE_NEGATIVES] = pa.array([r.extras[FILE_NEGATIVES] for r in rows], pa.list_(pa.string()))
        out[FILE_SCORES] = pa.array([r.extras[FILE_SCORES] for r in rows], pa.list_(pa.float64()))
        out[CANDIDATES] = pa.array([r.extras[CANDIDATES] for r in rows], pa.list_(pa.string()))
    return out


def _update_stats(stats: ConvertStats, columns: dict[str, pa.Array], plan: Plan, offset: int,
                  hash_rows: bool) -> None:
    n = len(next(iter(columns.values())))
    stats.rows += n
    if "score" in columns and n:
        values = columns["score"].to_numpy(zero_copy_only=False)
        stats.score_min = min(stats.score_min, float(values.min()))
        stats.score_max = max(stats.score_max, float(values.max()))
    if NEGATIVES_LIST in columns:
        lengths = np.asarray(pc.list_value_length(columns[NEGATIVES_LIST]).to_numpy(zero_copy_only=False))
        if n:
            low = int(lengths.min())
            stats.min_negatives = low if stats.min_negatives is None else min(stats.min_negatives, low)
            if low == 0 and stats.first_without_negatives is None:
                stats.first_without_negatives = offset + int(np.argmax(lengths == 0))
    if hash_rows and n:
        texts = {k: (v if k != NEGATIVES_LIST else pc.binary_join(v, "\x1f")) for k, v in columns.items()
                 if k != "score" and k not in EXTRA_COLUMNS}
        stats.hashes.append(row_hashes(texts))


def row_hashes(columns: dict[str, pa.Array]) -> np.ndarray:
    """A 64-bit hash per row of text columns (polars' multi-threaded row hash when installed - mteb needs it -
    else xxhash per value, combined per row)."""
    try:
        import polars as pl
    except ImportError:
        pl = None
    if pl is not None:
        return pl.from_arrow(pa.table(columns)).hash_rows(seed=0).to_numpy().astype(np.uint64, copy=False)
    import xxhash

    out = np.zeros(len(next(iter(columns.values()))), dtype=np.uint64)
    for arr in columns.values():
        h = np.fromiter((xxhash.xxh3_64_intdigest(v.encode()) if v is not None else 0 for v in arr.to_pylist()),
                        dtype=np.uint64, count=len(arr))
        out = out * np.uint64(0x9E3779B97F4A7C15) ^ h
    return out


def convert(source: Source, plan: Plan, *, limit: int | None = None, hash_rows: bool = True,
            stats: ConvertStats | None = None, fast: bool = True) -> Iterator[dict[str, pa.Array]]:
    """The format's columns of ``source``, batch by batch.

    The Arrow readers and vectorised checks go first; if they cannot go on (see the module docstring), the
    reference row path continues from the first row not yet given out, so the output is the same either way.
    """
    stats = stats if stats is not None else ConvertStats()
    if fast:
        try:
            yield from _convert_fast(source, plan, limit, hash_rows, stats)
            return
        except FastPathUnavailable as exc:
            logger.info("%s: reading row by row from row %d (%s)", source.path, stats.rows,
                        str(exc).splitlines()[0][:200])
    stats.fast_path = False
    yield from _convert_reference(source, plan, limit, hash_rows, stats, start=stats.rows)


def _convert_fast(source: Source, plan: Plan, limit: int | None, hash_rows: bool,
                  stats: ConvertStats) -> Iterator[dict[str, pa.Array]]:
    schema = plan.input_schema(text_scores=source.values_are_text)
    offset = 0
    for batch in source.batches(schema):
        if limit is not None and offset >= limit:
            break
        if limit is not None and offset + batch.num_rows > limit:
            batch = batch.slice(0, limit - offset)
        if source.unit == "line":  # text files: the JSON / CSV parsers pass invalid UTF-8 through
            try:
                batch.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise FastPathUnavailable(str(exc)) from None
        mask, scores = screen(batch, plan)
        for j in np.flatnonzero(mask):
            _confirm(source, plan, offset + int(j))
        columns = convert_batch(batch, plan, scores)
        _update_stats(stats, columns, plan, offset, hash_rows)
        offset += batch.num_rows
        yield columns


def _confirm(source: Source, plan: Plan, index: int) -> None:
    """Check a flagged row with the reference row check (raises its located error); if that check passes the
    screening and the reference disagree, so the reference path takes over."""
    pos, row = source.locate(index)
    records = Records(source.path, [row], [pos], unit=source.unit)
    check_row(records, 0, plan.spec, plan.cols, plan.num_negatives)
    if plan.candidates_column is not None:
        _row_extras(records, plan)
    raise FastPathUnavailable(f"row {index} was flagged by the vectorised checks but passes the row check")


def _convert_reference(source: Source, plan: Plan, limit: int | None, hash_rows: bool,
                       stats: ConvertStats, start: int = 0) -> Iterator[dict[str, pa.Array]]:
    rows: list = []
    offset = start
    for i, (pos, row) in enumerate(source.rows(start=start), start=start):
        if limit is not None and i >= limit:
            break
        records = Records(source.path, [row], [pos], unit=source.unit)
        checked = check_row(records, 0, plan.spec, plan.cols, plan.num_negatives)
        if plan.candidates_column is not None:
            checked.extras = _row_extras(records, plan)
        rows.append(checked)
        if len(rows) == BATCH_ROWS:
            columns = _rows_to_columns(rows, plan)
            _update_stats(stats, columns, plan, offset, hash_rows)
            offset += len(rows)
            rows = []
            yield columns
    if rows:
        columns = _rows_to_columns(rows, plan)
        _update_stats(stats, columns, plan, offset, hash_rows)
        yield columns


def check_negatives_found(source: Source, plan: Plan, stats: ConvertStats) -> int | None:
    """The number of negative columns once every row is seen (``num_negatives`` or the shortest list);
    a row without negatives is a located error, as :func:`~embedtrain.io.formats.to_dataset` reports it."""
    if not plan.spec.list_role:
        return None
    if plan.num_negatives is not None:
        n = plan.num_negatives
    elif stats.min_negatives is not None:  # a negatives list (or the reference path): the shortest one
        n = stats.min_negatives
    else:  # numbered negative columns read by the Arrow readers
        n = len(plan.numbered)
    if n == 0:
        index = stats.first_without_negatives or 0
        pos, row = source.locate(index)
        records = Records(source.path, [row], [pos], unit=source.unit)
        raise records.error(0, plan.cols[plan.spec.list_role] or "negative_*", "row has no negatives")
    return n


def split_negatives(columns: dict[str, pa.Array], n: int) -> dict[str, pa.Array]:
    """Replace the ``__negatives`` list by ``negative_1 .. negative_n`` columns."""
    if NEGATIVES_LIST not in columns:
        return columns
    lists = columns.pop(NEGATIVES_LIST)
    for k in range(n):
        columns[f"negative_{k + 1}"] = pc.list_element(lists, k)
    return columns


#: Screening per role kind (:func:`screen` applies them to a format's text roles, list role and score role).
CHECKS: dict[str, Callable[..., Any]] = {"text": screen_text, "text_list": screen_text_list, "score": parse_scores}
