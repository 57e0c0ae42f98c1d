"""MTEB results of a checkpoint, read back from the files the evaluation harness wrote, as model-index entries.

``embedtrain eval`` stores mteb ``TaskResult`` JSON files under ``<checkpoint>/eval/results/<model>/
<fingerprint>/<Task>.json``, where ``<fingerprint>`` hashes the checkpoint's weight files
(:func:`embedtrain.evaluation.results.weights_fingerprint`). Only results whose fingerprint matches the
weights being uploaded are used, so a card never reports scores of earlier weights; results of
truncated variants (``experiments/``) are left out. Scores are reported on MTEB's 0-100 scale.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)
#: mteb result folders are named by the weights fingerprint (embedtrain.evaluation.results).
_HEX12 = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True)
class ResultRow:
    """The main score of one MTEB task on one split/subset."""

    task: str
    task_type: str
    dataset: str | None
    revision: str | None
    split: str
    subset: str
    metric: str
    value: float  # 0-100
    #: A real MTEB benchmark (the name is an MTEB task and the data revision is MTEB's): only these go into
    #: a card's model-index. Local tasks (own data, or a local copy under another revision) do not.
    is_mteb: bool = False


def _task_metadata(name: str):
    try:
        import mteb

        return mteb.get_task(name).metadata
    except Exception:  # a local task unknown to mteb's registry
        return None


def _main_metric_name(entry: dict) -> str:
    """The name of the score a task without mteb metadata reports as its main score (the key holding it)."""
    from embedtrain.schema.evaluation import DEFAULT_MAIN_SCORE

    main = entry.get("main_score")
    same = [k for k, v in entry.items() if k != "main_score" and isinstance(v, (int, float)) and v == main]
    preferred = [k for k in same if k in DEFAULT_MAIN_SCORE.values()]  # what a local task declares by default
    return str((preferred or same or ["main_score"])[0])


def _read_result(path: Path) -> list[ResultRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    if not isinstance(data, dict) or "task_name" not in data or not isinstance(data.get("scores"), dict):
        return []
    name = str(data["task_name"])
    meta = _task_metadata(name)
    task_type = str(getattr(meta, "type", None) or "Unknown")
    dataset = (getattr(meta, "dataset", None) or {}).get("path") if meta is not None else None
    revision = (getattr(meta, "dataset", None) or {}).get("revision") if meta is not None else None
    is_mteb = meta is not None and revision is not None and str(revision) == str(data.get("dataset_revision"))
    metric = str(getattr(meta, "main_score", None) or "main_score")
    rows = []
    for split, entries in data["scores"].items():
        for entry in entries or []:
            if "main_score" not in entry:
                continue
            rows.append(ResultRow(name, task_type, dataset, data.get("dataset_revision"), str(split),
                                  str(entry.get("hf_subset", "default")),
                                  metric if meta is not None else _main_metric_name(entry),
                                  100.0 * float(entry["main_score"]), is_mteb))
    return rows


def find_results(checkpoint: str | Path, extra_dirs: list[str | Path] = ()) -> list[ResultRow]:
    """All MTEB main scores of exactly these weights found under ``checkpoint`` (and ``extra_dirs``)."""
    from embedtrain.evaluation.results import weights_fingerprint

    checkpoint = Path(checkpoint)
    try:
        fingerprint = weights_fingerprint(checkpoint)
    except Exception:
        fingerprint = None
    rows: dict[tuple, ResultRow] = {}
    stale = 0
    for root in [checkpoint, *map(Path, extra_dirs)]:
        for path in sorted(root.rglob("*.json")):
            rel = path.relative_to(root).parts
            if "experiments" in rel or "adapters" in rel:
                continue
            if fingerprint is not None and path.parent.name != fingerprint:
                # mteb results sit in a folder named by the weights fingerprint; anything else is either
                # another checkpoint's result or not a result at all (config.json, tokenizer.json...)
                stale += _HEX12.fullmatch(path.parent.name) is not None and bool(_read_result(path))
                continue
            found = _read_result(path)
            if not found:
                continue
            for row in found:
                rows[(row.task, row.split, row.subset)] = row
    if stale:
        logger.warning("left out %d result file(s) of other weights (fingerprint is not %s)", stale, fingerprint)
    return sorted(rows.values(), key=lambda r: (r.task_type, r.task, r.split, r.subset))


def eval_results(rows: list[ResultRow]) -> list:
    """``huggingface_hub.EvalResult`` entries (the card's ``model-index``) for ``rows`` (give only real MTEB
    tasks: :attr:`ResultRow.is_mteb`)."""
    from huggingface_hub import EvalResult

    return [EvalResult(task_type=r.task_type, dataset_type=r.dataset or f"mteb/{r.task}",
                       dataset_name=f"MTEB {r.task}" + (f" ({r.subset})" if r.subset != "default" else ""),
                       dataset_config=r.subset, dataset_split=r.split, dataset_revision=r.revision,
                       metric_type=r.metric, metric_value=round(r.value, 4))
            for r in rows]
