"""Read local evaluation files into the dataset structures mteb 2.x tasks evaluate.

* STS: rows with ``sentence1``, ``sentence2``, ``score`` -> ``datasets.Dataset`` with those columns.
* Classification: rows with ``text``, ``label`` -> ``datasets.Dataset`` with those columns.
* Retrieval (BEIR layout): ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
  ``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``) -> mteb's
  ``RetrievalSplitData`` (corpus / queries datasets with ``id``, ``title``, ``text`` and a qrels dict).

Every row is checked, and the first bad one raises :class:`~embedtrain.errors.DataError` naming the
file, line and column, so a broken file fails before any model is run.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embedtrain.errors import DataError
from embedtrain.io.formats import ALIASES, row_score, row_text
from embedtrain.io.readers import Records, read_records


def _column(records: Records, role: str, columns: Mapping[str, str], default: str) -> str:
    """The column that holds ``role`` in ``records`` (mapped, default, or an alias seen in row 0)."""
    if role in columns:
        return columns[role]
    first = records.rows[0] if records.rows else {}
    for name in (default, *(ALIASES.get(role, ()) if role in ("id", "label") else ())):
        if name in first:
            return name
    return default


def _read(path: Path, file_type: str | None) -> Records:
    records = read_records(path, file_type)
    if not records.rows:
        raise DataError("file has no rows", file=path)
    return records


def read_sts(path: Path, columns: Mapping[str, str], file_type: str | None = None):
    """Scored sentence pairs -> ``Dataset(sentence1, sentence2, score)``."""
    from datasets import Dataset

    records = _read(path, file_type)
    c1 = _column(records, "sentence1", columns, "sentence1")
    c2 = _column(records, "sentence2", columns, "sentence2")
    cs = _column(records, "score", columns, "score")
    s1, s2, scores = [], [], []
    for i in range(len(records)):
        s1.append(row_text(records, i, c1))
        s2.append(row_text(records, i, c2))
        scores.append(row_score(records, i, cs))
    if len(scores) < 2:
        raise DataError(f"an STS task needs at least 2 scored pairs to correlate, this file has {len(scores)}",
                        file=path)
    if len(set(scores)) == 1:
        raise DataError(f"all {len(scores)} gold scores are equal ({scores[0]}), so a rank correlation with them is "
                        "undefined", file=path, field=cs)
    return Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": scores})


def read_classification(path: Path, columns: Mapping[str, str], file_type: str | None = None):
    """Labelled texts -> ``Dataset(text, label)``; labels are strings or integers, one type per file."""
    from datasets import Dataset

    records = _read(path, file_type)
    ct = _column(records, "text", columns, "text")
    cl = _column(records, "label", columns, "label")
    texts, labels = [], []
    label_type: type | None = None
    for i, row in enumerate(records.rows):
        texts.append(row_text(records, i, ct))
        if cl not in row:
            raise records.error(i, cl, f"missing column '{cl}' (columns here: {sorted(row)})")
        label = row[cl]
        if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
            raise records.error(i, cl, f"label must be a non-empty string or an integer, got {label!r}")
        if label_type is None:
            label_type = type(label)
        elif type(label) is not label_type:
            raise records.error(i, cl, f"label {label!r} is a {type(label).__name__} but earlier labels are "
                                       f"{label_type.__name__}s; use one type per file")
        labels.append(label)
    if len(set(labels)) < 2:
        raise DataError(f"a classification file needs at least 2 different labels, this one has only {labels[0]!r}",
                        file=path, field=cl)
    return Dataset.from_dict({"text": texts, "label": labels})


def _read_docs(path: Path, columns: Mapping[str, str], *, with_title: bool) -> tuple[dict[str, list], Records]:
    records = _read(path, "jsonl" if path.suffix in (".jsonl", ".ndjson") else None)
    cid = _column(records, "id", columns, "_id")
    ctext = _column(records, "text", columns, "text")
    ctitle = _column(records, "title", columns, "title")
    out: dict[str, list] = {"id": [], "text": []}
    if with_title:
        out["title"] = []
    seen: set[str] = set()
    for i, row in enumerate(records.rows):
        if cid not in row:
            raise records.error(i, cid, f"missing column '{cid}' (columns here: {sorted(row)})")
        doc_id = row[cid]
        if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or doc_id == "":
            raise records.error(i, cid, f"id must be a non-empty string or integer, got {doc_id!r}")
        doc_id = str(doc_id)
        if doc_id in seen:
            raise records.error(i, cid, f"duplicate id '{doc_id}'")
        seen.add(doc_id)
        out["id"].append(doc_id)
        # A document may have an empty text if it has a title (BEIR corpora contain a few such rows).
        has_title = with_title and isinstance(row.get(ctitle), str) and row[ctitle].strip()
        out["text"].append(row_text(records, i, ctext, allow_empty=bool(has_title)))
        if with_title:
            title = row.get(ctitle, "")
            if title is None:
                title = ""
            if not isinstance(title, str):
                raise records.error(i, ctitle, f"title must be text, got {type(title).__name__}")
            out["title"].append(title)
    return out, records


def document_text(title: str | None, text: str) -> str:
    """A retrieval document as mteb embeds it: ``title + " " + text``, or the text alone without a title.

    The one place the project joins a BEIR title and text: the MTEB harness (mteb does the same join), the
    retrieval evaluator and offline mining of a BEIR folder (:mod:`embedtrain.mining.beir`) must agree, or a
    positive mined from a text-only copy of a document would differ from the document the model is scored on.
    """
    return f"{title} {text}".strip() if title else text.strip()


def read_beir_corpus(folder: Path, columns: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """The ids and texts (:func:`document_text`) of a BEIR folder's ``corpus.jsonl``, rows checked."""
    path = Path(folder) / "corpus.jsonl"
    if not path.is_file():
        raise DataError("BEIR corpus not found (expected corpus.jsonl in the folder)", file=folder)
    docs, _ = _read_docs(path, columns or {}, with_title=True)
    return docs["id"], [document_text(t, x) for t, x in zip(docs["title"], docs["text"])]


def read_qrels(path: Path) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], int]]:
    """A BEIR qrels TSV (``query-id  corpus-id  score``, optional header) -> ``({qid: {docid: score}}, lines)``.

    The second value maps each ``(query-id, corpus-id)`` pair to its line, for later error messages.
    """
    if not path.is_file():
        raise DataError("qrels file not found", file=path)
    qrels: dict[str, dict[str, int]] = {}
    lines: dict[tuple[str, str], int] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise DataError(f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(row)}",
                                file=path, line=lineno)
            qid, did, raw = (x.strip() for x in row)
            try:
                score = int(float(raw))
            except ValueError:
                if lineno == 1:  # header row
                    continue
                raise DataError(f"relevance score must be an integer, got {raw!r}", file=path, line=lineno,
                                field="score") from None
            if not qid or not did:
                raise DataError("empty query-id or corpus-id", file=path, line=lineno)
            qrels.setdefault(qid, {})[did] = score
            lines.setdefault((qid, did), lineno)
    if not qrels:
        raise DataError("qrels file has no rows", file=path)
    return qrels, lines


def read_beir(folder: Path, split: str, columns: Mapping[str, str]) -> dict[str, Any]:
    """A BEIR folder -> mteb ``RetrievalSplitData`` for ``split`` (queries without qrels are dropped)."""
    from datasets import Dataset

    if not folder.is_dir():
        raise DataError("BEIR folder not found (expected corpus.jsonl, queries.jsonl, qrels/<split>.tsv)",
                        file=folder)
    corpus, _ = _read_docs(folder / "corpus.jsonl", columns, with_title=True)
    queries, query_records = _read_docs(folder / "queries.jsonl", columns, with_title=False)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels, qrel_lines = read_qrels(qrels_path)
    doc_ids = set(corpus["id"])
    query_ids = set(queries["id"])
    for (qid, did), lineno in qrel_lines.items():  # in file order: the first bad line is reported
        if qid not in query_ids:
            raise DataError(f"query-id '{qid}' is not in {query_records.path}", file=qrels_path, line=lineno,
                            field="query-id")
        if did not in doc_ids:
            raise DataError(f"corpus-id '{did}' is not in {folder / 'corpus.jsonl'}", file=qrels_path,
                            line=lineno, field="corpus-id")
    keep = [i for i, q in enumerate(queries["id"]) if q in qrels]
    queries = {k: [v[i] for i in keep] for k, v in queries.items()}
    return {
        "corpus": Dataset.from_dict(corpus),
        "queries": Dataset.from_dict(queries),
        "relevant_docs": qrels,
        "top_ranked": None,
    }
