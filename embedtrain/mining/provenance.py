"""What ``embedtrain mine`` recorded about a mined file, for the run record, the model card and sanity checks.

``embedtrain mine`` writes ``<output>.stats.json`` next to its output (the config and the run's statistics).
A training run on that file reads it back (:func:`read_mining_record`) to

* record how the negatives were mined (model, length, prompts, filters, rows dropped and why) in
  ``embedtrain_run.json``, so the model card can say it (not only that "hard negatives were mined");
* warn when ``initial_from: file`` takes the file's scores as the starting point of dynamic re-mining although
  the file was mined by another model, at another length, with other prompts or with a cross-encoder
  (:func:`initial_score_mismatches`): the scores then do not measure what the training model computes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The mining settings kept in the run record (from the stats file's ``config``).
RECORDED_SETTINGS = ("model", "max_seq_length", "query_prompt", "passage_prompt", "cross_encoder", "num_negatives",
                     "candidates", "range_min", "range_max", "absolute_margin", "relative_margin", "max_score",
                     "min_score", "exclude_positive_copies", "keep_incomplete")
#: The statistics kept (rows read / written / dropped and why).
RECORDED_STATS = ("rows", "written_rows", "incomplete_rows", "dropped_rows", "incomplete_by_reason")


def stats_path(data_path: str | Path) -> Path:
    return Path(f"{data_path}.stats.json")


def read_mining_record(data_path: str | Path) -> dict[str, Any] | None:
    """The mining settings and row counts recorded next to ``data_path`` (None when there is no readable
    ``<file>.stats.json``: the file was not written by ``embedtrain mine``, or was moved without it)."""
    path = stats_path(data_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("could not read the mining record %s; mining settings not recorded", path)
        return None
    config = data.get("config") or {}
    record = {k: config[k] for k in RECORDED_SETTINGS if config.get(k) is not None}
    record.update({k: data[k] for k in RECORDED_STATS if data.get(k) is not None})
    return record or None


def initial_score_mismatches(record: dict[str, Any] | None, *, model: str, max_seq_length: int | None,
                             prompts: dict[str, str] | None = None) -> list[str]:
    """Why a mined file's scores are not the training model's starting scores (empty: they are, as far as the
    record tells). Compares the mining model with the recipe's start model, the mining length with the training
    length (None: the model's own length), the query / document prompts, and cross-encoder rescoring."""
    if record is None:
        return []
    out = []
    if record.get("model") is not None and Path(str(record["model"])).name != Path(str(model)).name:
        out.append(f"mined with {record['model']!r}, training starts from {model!r}")
    mined_len = record.get("max_seq_length")
    if mined_len != max_seq_length:
        def say(n):
            return "the model's own length" if n is None else f"max_seq_length {n}"

        out.append(f"mined at {say(mined_len)}, trained at {say(max_seq_length)}")
    if prompts is not None:
        for key, role in (("query_prompt", "query"), ("passage_prompt", "document")):
            if record.get(key) != prompts.get(role):
                out.append(f"mined with {key} {record.get(key)!r}, trained with {role} prompt {prompts.get(role)!r}")
    if record.get("cross_encoder"):
        out.append("mined scores are cross-encoder scores, not cosines")
    return out


def describe(record: dict[str, Any], *, model_name=None) -> str:
    """One sentence for the model card: how the file was mined and how many rows it kept."""
    name = model_name(record.get("model")) if model_name else record.get("model")
    parts = [f"mined with `{name}`" if name else "mined"]
    parts.append("at the model's own length" if record.get("max_seq_length") is None
                 else f"at max_seq_length {record['max_seq_length']}")
    filters = [f"{record['num_negatives']} negatives per pair"] if record.get("num_negatives") else []
    if record.get("range_min") or record.get("range_max"):
        filters.append(f"ranks {record.get('range_min', 0)}..{record.get('range_max', 100) - 1}")
    for key, label in (("absolute_margin", "absolute margin"), ("relative_margin", "relative margin"),
                       ("max_score", "max score"), ("min_score", "min score")):
        if record.get(key) is not None:
            filters.append(f"{label} {record[key]}")
    if record.get("cross_encoder"):
        filters.append("rescored by a cross-encoder")
    text = " ".join(parts) + (f" ({', '.join(filters)})" if filters else "")
    if record.get("rows") is not None:
        dropped = record.get("dropped_rows") or 0
        reasons = ", ".join(f"{k}: {v}" for k, v in (record.get("incomplete_by_reason") or {}).items())
        text += f"; {record.get('written_rows', '?')} of {record['rows']} pairs written"
        if dropped:
            text += f", {dropped} dropped for too few negatives" + (f" ({reasons})" if reasons else "")
        elif record.get("incomplete_rows"):
            text += f", {record['incomplete_rows']} kept with fewer negatives"
    return text
