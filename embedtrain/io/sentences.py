"""Unlabeled sentences from a file: the general text of ``merge_with_start`` and of general-pair mixing.

A ``.txt`` file holds one sentence per line (blank lines are skipped); any other file the readers know
(jsonl, json, csv, parquet) holds rows with a text column (``text``, ``sentence``, ``content``... see
:data:`embedtrain.io.formats.ALIASES`). Duplicates are dropped, order is kept.
"""

from __future__ import annotations

from pathlib import Path

from embedtrain.errors import DataError
from embedtrain.io.text import read_text_utf8
from embedtrain.resources import resource_path

#: The bundled general sentences (see embedtrain/resources/README.md).
GENERAL_SENTENCES = "general_sentences.txt"


def default_general_text() -> Path:
    """The bundled general sentences shipped with embedtrain."""
    return resource_path(GENERAL_SENTENCES)


def read_sentences(path: str | Path, *, minimum: int = 3) -> list[str]:
    """The distinct non-empty sentences of ``path``; fewer than ``minimum`` is a located error."""
    path = Path(path)
    if not path.exists():
        raise DataError("sentence file not found", file=path)
    if path.suffix.lower() == ".txt":
        lines = read_text_utf8(path).splitlines()
    else:
        from embedtrain.io.formats import to_dataset
        from embedtrain.io.readers import read_records

        lines = list(to_dataset(read_records(path), "text", {})["text"])
    sentences = list(dict.fromkeys(line.strip() for line in lines if line and line.strip()))
    if len(sentences) < minimum:
        raise DataError(f"found {len(sentences)} distinct sentence(s); need at least {minimum}", file=path)
    return sentences
