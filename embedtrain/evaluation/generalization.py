"""Did training help what it trained on *without* hurting the rest? The generalization report.

After a training run (and from ``embedtrain eval --compare --trained-on ...``), every local evaluation task whose
data is available is scored on the start model and on the trained model, and split into the tasks the run
trained on and the ones it did not. A not-trained task that drops by more than ``threshold`` points is a
warning: fine-tuning that raises the target while lowering everything else is a regression, not a win.

The start model's scores are computed once and reused (the evaluation cache is keyed by the weights'
fingerprint), so the report costs one evaluation of the trained model per run. By default only the STS tasks
run (about 85 s for the five bundled ones on 2 CPU cores); ``tasks: all`` adds retrieval and classification.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: MTEB task types of each ``tasks:`` choice.
KINDS = {"sts": {"STS"}, "all": {"STS", "Classification", "Retrieval"}}


@dataclass
class TaskChange:
    """One task's main score (x 100) before and after training."""

    task: str
    metric: str
    before: float
    after: float
    trained: bool

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass
class GeneralizationReport:
    """Before/after of every available task, split into trained on / not trained on."""

    changes: list[TaskChange]
    threshold: float
    #: Tasks that could not run, with why (no data in the data directory...).
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def trained(self) -> list[TaskChange]:
        return [c for c in self.changes if c.trained]

    @property
    def not_trained(self) -> list[TaskChange]:
        return [c for c in self.changes if not c.trained]

    def mean_delta(self, trained: bool) -> float | None:
        """Mean change over the (not) trained-on tasks of each metric, averaged over metrics; None if none."""
        group = self.trained if trained else self.not_trained
        if not group:
            return None
        by_metric: dict[str, list[float]] = {}
        for change in group:
            by_metric.setdefault(change.metric, []).append(change.delta)
        return sum(sum(v) / len(v) for v in by_metric.values()) / len(by_metric)

    @property
    def warnings(self) -> list[str]:
        return [f"{c.task} was not trained on and dropped {c.delta:+.2f} ({c.before:.2f} -> {c.after:.2f}), more "
                f"than the {self.threshold:g}-point threshold" for c in self.not_trained if c.delta < -self.threshold]

    def markdown(self) -> str:
        lines = ["| task | metric | trained on | before | after | Δ |", "|---|---|---|---:|---:|---:|"]
        for change in [*self.trained, *self.not_trained]:
            mark = " ⚠" if not change.trained and change.delta < -self.threshold else ""
            lines.append(f"| {change.task} | {change.metric} | {'yes' if change.trained else 'no'} | "
                         f"{change.before:.2f} | {change.after:.2f} | {change.delta:+.2f}{mark} |")
        for trained in (True, False):
            mean = self.mean_delta(trained)
            if mean is not None:
                lines.append(f"| **mean Δ, {'trained on' if trained else 'not trained on'}** | | | | | "
                             f"**{mean:+.2f}** |")
        lines += [f"\n{w}" for w in self.warnings]
        lines += [f"\nnot run: {task} ({why})" for task, why in self.missing.items()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "missing": self.missing, "warnings": self.warnings,
                "mean_delta_trained": self.mean_delta(True), "mean_delta_not_trained": self.mean_delta(False),
                "tasks": [{**vars(c), "delta": c.delta} for c in self.changes]}


def task_kind(definition) -> str | None:
    """The MTEB type (``STS``, ``Retrieval``, ``Classification``) of a local task definition."""
    spec = definition.spec
    if spec.type is not None:
        return {"sts": "STS", "retrieval": "Retrieval", "classification": "Classification"}[spec.type]
    import mteb

    try:
        return str(mteb.get_task(spec.mteb_task).metadata.type)
    except Exception:  # noqa: BLE001 - an unknown mteb name is reported when the task is built
        return None


def available_tasks(kinds: set[str], data_dir: Path | None, task_configs=()) -> tuple[list[str], dict[str, str]]:
    """Names of the local tasks of ``kinds`` whose data files exist, and the others with the reason."""
    from embedtrain.evaluation.tasks import load_definitions

    found, missing = [], {}
    for name, definition in load_definitions(task_configs).items():
        if task_kind(definition) not in kinds:
            continue
        base = definition.data_dir or data_dir
        spec = definition.spec
        wanted = [spec.beir_dir] if spec.beir_dir else list(spec.files.values())
        if base is None and not all(Path(w).is_absolute() for w in wanted):
            missing[name] = "no data directory (eval.data_dir, generalization.data_dir or $EMBEDTRAIN_DATA_DIR)"
            continue
        absent = [w for w in wanted if not (Path(w) if Path(w).is_absolute() else base / w).exists()]
        if absent:
            missing[name] = f"{absent[0]} not found in {base}"
            continue
        found.append(name)
    return found, missing


def generalization_report(start: str | Path, trained: str | Path, *, trained_on: list[str], kinds: set[str],
                          data_dir: Path | None, task_configs=(), names: list[str] | None = None,
                          threshold: float = 0.5, batch_size: int = 64, trust_remote_code: bool = False,
                          output: Path | None = None, start_output: Path | None = None) -> GeneralizationReport:
    """Score ``start`` and ``trained`` on every available task of ``kinds`` (or on ``names``).

    The start model's results are reused from ``start_output`` when they are there for the same weights.
    """
    from embedtrain.evaluation.runner import evaluate_checkpoint

    if names is not None:
        names, missing = list(names), {}
    else:
        names, missing = available_tasks(kinds, data_dir, task_configs)
    for name in trained_on:  # the target is always part of the report when its data exists
        if name not in names and name not in missing:
            names.insert(0, name)
    if not names:
        return GeneralizationReport([], threshold, missing)
    kwargs = {"tasks": names, "data_dir": data_dir, "task_configs": task_configs, "batch_size": batch_size,
              "show_progress": False, "trust_remote_code": trust_remote_code}
    before = evaluate_checkpoint(start, reuse=True, output=start_output, **kwargs).summary
    after = evaluate_checkpoint(trained, output=output, **kwargs).summary
    changes = [TaskChange(name, after.scores[name].metric, before.scores[name].value, after.scores[name].value,
                          name in trained_on) for name in names if name in before.scores and name in after.scores]
    return GeneralizationReport(changes, threshold, missing)
