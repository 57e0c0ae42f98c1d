"""Seeing a run: per-step metrics from losses, miners and samplers in the training logs, and the run's record
(curves PNG + ``embedtrain_run.json``) written next to the final model.

Every stage gets this from the runner (:func:`embedtrain.train.runner.run`):

* **Sources** are objects with ``step_metrics() -> dict`` (values for the step just finished: the GIST losses'
  ``gist_masked_fraction``, dynamic mining's ``mining/<dataset>/refreshed``) and/or ``log_metrics() -> dict``
  (values at each logging step: the dataset mixture's ``mixture/<dataset>``). :func:`find_sources` collects
  them from the trainer's losses and callbacks.
* :class:`StepCollector` (the last callback) reads the sources after every step, after the other callbacks
  (a re-mining round runs in its callback's ``on_step_end``) and keeps a per-step series of each value.
* :class:`LogInjector` (the first callback) adds the means since the last log to each training log line, so
  the values reach ``trainer_state.json``'s log history, TensorBoard and every other ``report_to`` target.
* :func:`write_run_record` writes ``training_curves.png`` (:mod:`embedtrain.train.curves`) and
  ``embedtrain_run.json`` (training length, data provenance, mixture, evaluator scores, mining rounds, the log
  history) into the final folder; the model card (:mod:`embedtrain.hub.card`) is built from them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

RUN_FILE = "embedtrain_run.json"
CURVES_FILE = "training_curves.png"


def find_sources(trainer, extra: list | None = None) -> list:
    """Objects that report metrics: modules of the trainer's losses and callbacks with ``step_metrics`` or
    ``log_metrics``, plus ``extra`` (e.g. the mixture tracker)."""
    found: list = []
    losses = getattr(trainer, "loss", None)
    losses = list(losses.values()) if isinstance(losses, dict) else [losses] if losses is not None else []
    for loss in losses:
        modules = loss.modules() if hasattr(loss, "modules") else [loss]
        found += [m for m in modules if hasattr(m, "step_metrics")]
    found += [cb for cb in trainer.callback_handler.callbacks if hasattr(cb, "step_metrics")]
    found += [s for s in extra or [] if s is not None]
    unique: dict[int, Any] = {}
    for source in found:
        unique.setdefault(id(source), source)
    return list(unique.values())


class StepCollector(TrainerCallback):
    """Reads every source after each optimizer step; keeps ``{key: [(step, value), ...]}`` and what is pending
    for the next log line. Also notes the sequence length the model trains at."""

    def __init__(self, sources: list) -> None:
        self.sources = sources
        self.series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.pending: dict[str, list[float]] = defaultdict(list)
        self.train_max_seq_length: int | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        length = getattr(model, "max_seq_length", None)
        if isinstance(length, int):
            self.train_max_seq_length = length

    def on_step_end(self, args, state, control, **kwargs):
        for source in self.sources:
            if not hasattr(source, "step_metrics"):
                continue
            for key, value in source.step_metrics().items():
                if value is None or not math.isfinite(float(value)):
                    continue
                self.series[key].append((state.global_step, float(value)))
                self.pending[key].append(float(value))

    def take_pending(self) -> dict[str, float]:
        out = {k: round(sum(v) / len(v), 6) for k, v in self.pending.items() if v}
        self.pending.clear()
        return out


class LogInjector(TrainerCallback):
    """Adds the collected values to each training log line (``on_log`` of the first callback, so reporters such
    as TensorBoard see them) and to the matching ``state.log_history`` entry."""

    def __init__(self, collector: StepCollector) -> None:
        self.collector = collector

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        extra = self.collector.take_pending()
        for source in self.collector.sources:
            if hasattr(source, "log_metrics"):
                extra.update(source.log_metrics())
        if not extra:
            return
        logs.update(extra)
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step and "loss" in last:
            last.update(extra)


def attach(trainer, extra_sources: list | None = None) -> StepCollector:
    """Add the collector (last) and the log injector (first) to ``trainer``; return the collector."""
    collector = StepCollector(find_sources(trainer, extra_sources))
    trainer.add_callback(collector)
    trainer.callback_handler.callbacks.insert(0, LogInjector(collector))
    return collector


# ---------------------------------------------------------------------------------------------------------
# The run record
# ---------------------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str | None:
    """sha256 of a data file (None for folders or unreadable paths)."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _loss_name(loss) -> str:
    if loss is None:
        return "-"
    return f"{loss.name}({_loss_name(loss.inner)})" if getattr(loss, "inner", None) is not None else str(loss.name)


def data_provenance(recipe, prepared: list | None) -> list[dict[str, Any]]:
    """One entry per training dataset: its source (file name or hub id, never a local path), rows used, the
    file's sha256, format, loss and mixing settings; for a mined file, how ``embedtrain mine`` made it."""
    by_name = {p.config.name: p for p in prepared or []}
    out = []
    for cfg in recipe.datasets_for_training:
        p = by_name.get(cfg.name)
        entry: dict[str, Any] = {"name": cfg.name, "format": cfg.format}
        if cfg.file_type == "hub":
            entry.update(source="hub", dataset=cfg.path, split=cfg.split)
        else:
            path = recipe.resolve_path(cfg.path)
            entry.update(source="file", file=path.name, sha256=file_sha256(path))
            if cfg.split:
                entry["split"] = cfg.split
            if cfg.format == "hard_negatives":
                from embedtrain.mining.provenance import read_mining_record

                mined = read_mining_record(path)  # <file>.stats.json written by embedtrain mine
                if mined is not None:
                    entry["mined"] = mined
        if p is not None:
            entry["rows"] = len(p.dataset)
            entry["loss"] = _loss_name(p.loss)
        if getattr(cfg, "max_samples", None):
            entry["max_samples"] = cfg.max_samples
        for key in ("weight", "label_column"):
            if getattr(cfg, key, None) is not None:
                entry[key] = getattr(cfg, key)
        out.append(entry)
    return out


def write_run_record(folder: str | Path, *, recipe, trainer, collector: StepCollector | None, prepared: list | None,
                     mixture=None, evaluators: dict[str, Any] | None = None, mining_rounds: list | None = None,
                     main_metrics: list[str] | None = None, extras: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``training_curves.png`` and ``embedtrain_run.json`` into ``folder`` (the final model's folder)."""
    from embedtrain.hub.public import public_name
    from embedtrain.models.inspect import saved_max_seq_length
    from embedtrain.train.curves import plot_training_curves

    folder = Path(folder)
    history = [dict(entry) for entry in trainer.state.log_history]
    series = dict(collector.series) if collector is not None else {}
    evaluators = evaluators or {}
    curves = plot_training_curves(history, folder / CURVES_FILE, series=series, main_metrics=main_metrics,
                                  before=evaluators.get("before_points"), title=Path(recipe.output_dir).name)
    record: dict[str, Any] = {
        "stage": recipe.stage,
        "base_model": public_name(recipe.model.name_or_path),
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "max_seq_length": {"training": (collector.train_max_seq_length if collector else None)
                           or recipe.model.max_seq_length, "saved": saved_max_seq_length(folder)},
        "seed": recipe.seed,
        "datasets": data_provenance(recipe, prepared),
        "curves": CURVES_FILE if curves else None,
    }
    if mixture is not None:
        record["mixture"] = mixture.summary()
        logger.info("achieved dataset mixture: %s", mixture.describe())
    if evaluators:
        record["evaluators"] = evaluators
    if mining_rounds:
        record["mining_rounds"] = mining_rounds
    if series:
        record["series"] = {k: [[s, v] for s, v in points] for k, points in series.items()}
    record.update(extras or {})
    record["log_history"] = history
    (folder / RUN_FILE).write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    return record
