"""Where evaluation results go, what they are named, and the markdown summary.

Layout of an evaluation output folder (default ``<checkpoint>/eval``)::

    results/embedtrain__<label>/<fingerprint>/<Task>.json           mteb TaskResult JSON (mteb's cache layout)
    results/embedtrain__<label>/<fingerprint>/experiments/<L,D>/...  truncated variants (--dims / --layers)
    scores.json                                                      main scores of this run (read by --compare)
    summary.md                                                       markdown table of the main scores

``<fingerprint>`` is a hash of the checkpoint's weight files, used as the mteb model *revision*: results
of two different checkpoints (or of one folder before and after retraining) can never be mistaken for
each other, even when they are written to the same folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedtrain.errors import CheckpointError

SCORES_FILE = "scores.json"
SUMMARY_FILE = "summary.md"
DEFAULT_SUBDIR = "eval"
#: Used when the checkpoint folder cannot be written to (e.g. a model shipped inside a Python package).
FALLBACK_ROOT = Path("eval_results")



#: JSON files of a checkpoint that say nothing about its embeddings (bookkeeping, not configuration).
_NOT_CONFIG = ("embedtrain_complete.json", "embedtrain_export.json", "soup.json", "trainer_state.json")


def weights_fingerprint(model_dir: str | Path) -> str:
    """A 12-hex-digit hash of what decides a checkpoint's embeddings: its weight files and its configuration
    (JSON: max_seq_length, prompts, pooling, tokenizer...), by relative path, size and bytes.

    The same weights saved with another ``max_seq_length`` or other prompts are another model and get another
    fingerprint. Evaluation results written anywhere inside the checkpoint (``embedtrain eval CKPT -o
    CKPT/eval_full``), other models saved inside it, and trainer state in a ``checkpoint-N`` folder (optimizer,
    scheduler, RNG states) are not hashed, so scoring a model never changes its fingerprint.
    """
    from embedtrain.io.checkpoints import WEIGHT_SUFFIXES, is_trainer_state

    model_dir = Path(model_dir)
    candidates = [p for p in _model_files(model_dir) if not is_trainer_state(p.name)]
    weights = [p for p in candidates if p.suffix in WEIGHT_SUFFIXES]
    if not weights:
        raise CheckpointError("no weight files (*.safetensors, *.bin) found", file=model_dir)
    files = sorted(weights + [p for p in candidates if p.suffix == ".json" and p.name not in _NOT_CONFIG])
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(model_dir)).encode())
        digest.update(str(path.stat().st_size).encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]


def _model_files(model_dir: Path) -> list[Path]:
    """Every file of the checkpoint except what is not the model: evaluation outputs (a folder with
    ``results/`` or ``scores.json``, also while an evaluation is still writing it, and the default ``eval``)
    and other models saved inside it (a subfolder with its own ``modules.json``). Adapter folders, module
    folders and tokenizer files all count."""
    files: list[Path] = []
    for root, dirs, names in os.walk(model_dir):
        here = Path(root)
        if here != model_dir:
            if (here / "results").is_dir() or (here / "scores.json").is_file() or (here / "modules.json").is_file():
                dirs[:] = []
                continue
        else:
            dirs[:] = [d for d in dirs if d != DEFAULT_SUBDIR]
        files += [here / n for n in names]
    return [p for p in files if p.is_file()]


def model_label(checkpoint: str | Path, model_dir: Path) -> str:
    """A short readable name for a checkpoint: the folder name, with its parent for ``final`` / ``checkpoint-N``."""
    text = str(checkpoint)
    if not Path(text).expanduser().exists():  # a packaged short name such as all-MiniLM-L6-v2
        name = text.rsplit("/", 1)[-1]
    else:
        name = model_dir.name
        if name == "final" or re.fullmatch(r"checkpoint-\d+", name):
            name = f"{model_dir.parent.name}-{name}"
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", name).strip("-") or "model"


def default_output_dir(model_dir: Path, label: str) -> Path:
    """``<checkpoint>/eval`` when the checkpoint folder is writable, else ``./eval_results/<label>``."""
    if os.access(model_dir, os.W_OK) and "site-packages" not in model_dir.parts:
        return model_dir / DEFAULT_SUBDIR
    return FALLBACK_ROOT / label


@dataclass
class TaskScore:
    """The main score of one task, x 100 (MTEB's reporting scale)."""

    task: str
    metric: str
    value: float


@dataclass
class EvalSummary:
    """Main scores of one model (or one truncated variant of it) on a set of tasks."""

    label: str
    checkpoint: str
    fingerprint: str
    scores: dict[str, TaskScore] = field(default_factory=dict)
    variant: dict[str, int] | None = None
    #: How the model encoded: max_seq_length, pooling, normalisation, prompts (see :func:`encoding_settings`).
    #: Scores are only comparable between models evaluated with the same settings.
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data; a score that is not a finite number (NaN) is written as null."""
        data = asdict(self)
        data["scores"] = {k: {"metric": v.metric, "value": v.value if math.isfinite(v.value) else None}
                          for k, v in self.scores.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalSummary:
        scores = {k: TaskScore(k, v["metric"], float("nan") if v["value"] is None else float(v["value"]))
                  for k, v in data.get("scores", {}).items()}
        return cls(data["label"], data["checkpoint"], data["fingerprint"], scores, data.get("variant"),
                   data.get("settings") or {})

    def means(self) -> dict[str, float]:
        """Mean score per metric over the tasks of that metric (never across metrics)."""
        by_metric: dict[str, list[float]] = {}
        for s in self.scores.values():
            by_metric.setdefault(s.metric, []).append(s.value)
        return {metric: sum(values) / len(values) for metric, values in by_metric.items()}

    def mean(self) -> float | None:
        """The mean score when every task uses the same metric (None for mixed metrics or no scores)."""
        means = self.means()
        return next(iter(means.values())) if len(means) == 1 else None


def encoding_settings(model) -> dict[str, Any]:
    """What decides how a loaded sentence-transformer encodes besides its weights: the settings a fair
    comparison must hold equal (max_seq_length, pooling, normalisation, truncation, prompts)."""
    pooling = next((m for m in model.children() if type(m).__name__ == "Pooling"), None)
    return {
        "max_seq_length": model.max_seq_length,
        "pooling": getattr(pooling, "pooling_mode", None) or (pooling.get_config_dict().get("pooling_mode")
                                                               if pooling is not None else None),
        "normalize": any(type(m).__name__ == "Normalize" for m in model.children()),
        "truncate_dim": model.truncate_dim,
        "prompts": {k: v for k, v in sorted((model.prompts or {}).items()) if v},
    }


def summary_from_results(label: str, checkpoint: str, fingerprint: str, task_results, tasks,
                         variant: dict[str, int] | None = None, settings: dict[str, Any] | None = None) -> EvalSummary:
    """Build an :class:`EvalSummary` from mteb ``TaskResult`` objects (main score averaged over splits)."""
    metric = {t.metadata.name: t.metadata.main_score for t in tasks}
    scores = {}
    for result in task_results:
        name = result.task_name
        scores[name] = TaskScore(name, metric.get(name, "main_score"), 100.0 * float(result.get_score()))
    ordered = {t.metadata.name: scores[t.metadata.name] for t in tasks if t.metadata.name in scores}
    return EvalSummary(label, checkpoint, fingerprint, ordered, variant, dict(settings or {}))


def markdown_table(summary: EvalSummary) -> str:
    """``| task | metric | score |`` with a mean row, scores on MTEB's 0-100 scale."""
    settings = ", ".join(f"{k} {v}" for k, v in summary.settings.items() if k != "prompts" and v is not None)
    lines = [f"# Evaluation of {summary.label}", "",
             f"checkpoint: `{summary.checkpoint}`, weights fingerprint `{summary.fingerprint}`", "",
             *([f"encoding: {settings}", ""] if settings else []),
             "| task | metric | score |", "|---|---|---:|"]
    for s in summary.scores.values():
        lines.append(f"| {s.task} | {s.metric} | {s.value:.2f} |")
    counts = {m: sum(1 for s in summary.scores.values() if s.metric == m) for m in summary.means()}
    for metric, value in summary.means().items():
        if counts[metric] > 1:
            lines.append(f"| **mean ({counts[metric]} tasks)** | {metric} | **{value:.2f}** |")
    return "\n".join(lines) + "\n"


def write_summary(summary: EvalSummary, output_dir: Path) -> tuple[Path, Path]:
    """Write ``scores.json`` and ``summary.md`` into ``output_dir``; returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    scores_path = output_dir / SCORES_FILE
    scores_path.write_text(json.dumps(summary.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path = output_dir / SUMMARY_FILE
    md_path.write_text(markdown_table(summary), encoding="utf-8")
    return scores_path, md_path


def find_scores_file(path: str | Path) -> Path:
    """The ``scores.json`` for a checkpoint folder, an evaluation folder, or the file itself."""
    path = Path(path).expanduser()
    for candidate in (path, path / SCORES_FILE, path / DEFAULT_SUBDIR / SCORES_FILE):
        if candidate.is_file():
            return candidate
    if not path.exists():
        fallback = FALLBACK_ROOT / str(path).rsplit("/", 1)[-1] / SCORES_FILE
        if fallback.is_file():  # a packaged model evaluated into ./eval_results/<name>
            return fallback
        raise CheckpointError("no such checkpoint or evaluation folder", file=path)
    raise CheckpointError(f"no {SCORES_FILE} here or in {DEFAULT_SUBDIR}/; run `embedtrain eval` on it first",
                          file=path)


def load_summary(path: str | Path) -> EvalSummary:
    """Read the summary of a previous evaluation (see :func:`find_scores_file` for what ``path`` may be)."""
    scores_path = find_scores_file(path)
    try:
        return EvalSummary.from_json(json.loads(scores_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"unreadable evaluation summary: {exc}", file=scores_path) from None
