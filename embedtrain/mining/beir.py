"""Mine a BEIR folder directly: its qrels become (query, positive) pairs and its corpus the documents.

A BEIR folder (``corpus.jsonl`` with ``_id``, ``title``, ``text``; ``queries.jsonl``; ``qrels/<split>.tsv``) given
as ``input`` (or ``corpus``) of :class:`~embedtrain.schema.mining.OfflineMiningConfig` is turned into the files
offline mining reads:

* the corpus: one document per corpus row, its text being
  :func:`embedtrain.evaluation.local_data.document_text` (``title + " " + text``, as mteb embeds it), so the
  negatives are the documents the trained model is later evaluated against;
* the pairs (``input`` only): one row per qrels line of ``split`` with a score above 0 (mteb's notion of
  relevant), the query's text and the relevant document's text built by the same function. A positive is
  therefore exactly its corpus entry, and is never mined as its own negative.

``input`` a BEIR folder and ``corpus`` unset: the corpus is that folder's corpus. The converted files are
written once per folder content (size and modification time of its files) into the mining cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embedtrain.mining.collective import main_process_first
from embedtrain.schema.mining import OfflineMiningConfig


def is_beir_folder(path: str | Path | None) -> bool:
    """True for a folder holding ``corpus.jsonl`` (the BEIR layout)."""
    return path is not None and Path(path).is_dir() and (Path(path) / "corpus.jsonl").is_file()


def _cache_file(folder: Path, what: str, work_dir: Path | None) -> Path:
    from embedtrain.io.dataset_cache import cache_root
    from embedtrain.io.sources import fingerprint_path
    from embedtrain.mining.embeddings import fingerprint

    key = fingerprint(json.dumps(fingerprint_path(folder), sort_keys=True), what,
                      hashes=np.zeros((0, 2), np.uint64))
    root = (work_dir or cache_root("mining")) / "beir"
    root.mkdir(parents=True, exist_ok=True)
    return root / f"{folder.name[:40]}-{what}-{key}.jsonl"


def _write_jsonl(path: Path, rows) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def beir_corpus_file(folder: str | Path, work_dir: Path | None = None) -> Path:
    """A jsonl file (``text``) of the folder's documents, title and text joined as mteb does."""
    from embedtrain.evaluation.local_data import read_beir_corpus

    folder = Path(folder)
    out = _cache_file(folder, "corpus", work_dir)
    with main_process_first():
        if not out.is_file():
            _, texts = read_beir_corpus(folder)
            _write_jsonl(out, ({"text": t} for t in texts))
    return out


def beir_pairs_file(folder: str | Path, split: str, work_dir: Path | None = None) -> Path:
    """A jsonl file (``anchor``, ``positive``) of the relevant (score > 0) qrels of ``split``, in file order."""
    from embedtrain.errors import DataError
    from embedtrain.evaluation.local_data import document_text, read_beir

    folder = Path(folder)
    if not (folder / "qrels" / f"{split}.tsv").is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise DataError(f"no qrels/{split}.tsv in this BEIR folder (splits here: {have or 'none'}); pick one "
                        "with --split", file=folder, field="split")
    out = _cache_file(folder, f"pairs-{split}", work_dir)
    with main_process_first():
        if not out.is_file():
            data = read_beir(folder, split, {})
            corpus = data["corpus"]
            docs = {i: document_text(t, x) for i, t, x in zip(corpus["id"], corpus["title"], corpus["text"])}
            queries = dict(zip(data["queries"]["id"], data["queries"]["text"]))
            rows = [{"anchor": queries[q], "positive": docs[d]}
                    for q, judged in data["relevant_docs"].items() for d, score in judged.items() if score > 0]
            if not rows:
                raise DataError(f"qrels/{split}.tsv has no relevant (score > 0) pair", file=folder)
            _write_jsonl(out, rows)
    return out


def resolve_beir(config: OfflineMiningConfig) -> OfflineMiningConfig:
    """``config`` with BEIR folders in ``input`` / ``corpus`` replaced by the converted files (else unchanged)."""
    work = Path(config.embeddings_dir) if config.embeddings_dir else None
    update: dict = {}
    if is_beir_folder(config.input):
        update.update(input=str(beir_pairs_file(config.input, config.split, work)), columns={})
        if config.corpus is None:
            update.update(corpus=str(beir_corpus_file(config.input, work)), corpus_column="text")
    if is_beir_folder(config.corpus):
        update.update(corpus=str(beir_corpus_file(config.corpus, work)), corpus_column="text")
    return config.model_copy(update=update) if update else config
