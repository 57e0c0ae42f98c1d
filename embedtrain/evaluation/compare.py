"""Side-by-side comparison of evaluated checkpoints, with deltas against the first one (the baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedtrain.evaluation.results import EvalSummary


@dataclass
class ComparisonRow:
    """One task: the score of each model (None where it was not evaluated) and deltas vs the baseline."""

    task: str
    metric: str
    values: list[float | None]
    #: Whether the compared runs trained on this task (None: not said; see ``compare(trained_on=...)``).
    trained: bool | None = None

    @property
    def deltas(self) -> list[float | None]:
        base = self.values[0]
        return [None if base is None or v is None else v - base for v in self.values]

    def cells(self) -> list[str]:
        """The row's values as display text: the baseline plain, the others with their delta."""
        return [format_cell(v, d, i) for i, (v, d) in enumerate(zip(self.values, self.deltas))]


@dataclass
class Comparison:
    labels: list[str]
    rows: list[ComparisonRow]
    #: One mean per metric (``cosine_spearman``, ``ndcg_at_10``...) over the tasks every model has, for metrics
    #: with at least two such tasks: scores of different metrics are never averaged together.
    means: list[ComparisonRow]
    #: Encoding settings that differ between the models (max_seq_length, prompts, pooling...): deltas then
    #: mix the effect of training with the effect of the setting.
    warnings: list[str] = field(default_factory=list)
    #: Not-trained-on tasks that dropped more than the threshold against the first model.
    drops: list[str] = field(default_factory=list)

    @property
    def mean(self) -> ComparisonRow | None:
        """The mean row when all shared tasks use one metric (None otherwise)."""
        return self.means[0] if len(self.means) == 1 else None

    def markdown(self) -> str:
        head = ["task", self.labels[0]] + [f"{label} (Δ)" for label in self.labels[1:]]
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for row in self.rows:
            name = row.task + {True: " (trained on)", False: " (not trained on)", None: ""}[row.trained]
            lines.append("| " + " | ".join([name, *row.cells()]) + " |")
        for row in self.means:
            lines.append("| " + " | ".join([f"**{row.task}**", *row.cells()]) + " |")
        lines += [f"\n> **Not comparable as is:** {w}" for w in self.warnings]
        lines += [f"\n> **Regression:** {w}" for w in self.drops]
        return "\n".join(lines) + "\n"


def format_cell(value: float | None, delta: float | None, index: int) -> str:
    """``82.03`` for the baseline, ``83.10 (+1.07)`` for the others, ``-`` when missing."""
    if value is None:
        return "-"
    if index == 0 or delta is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({delta:+.2f})"


def compare(summaries: list[EvalSummary], *, trained_on: list[str] | None = None,
            threshold: float = 0.5) -> Comparison:
    """Rows for every task any model has (in first-seen order) plus a mean per metric over the shared tasks.

    With ``trained_on`` (the tasks the later models were trained for), rows are marked trained / not trained
    and every not-trained task that lost more than ``threshold`` points against the first model is listed in
    :attr:`Comparison.drops`.
    """
    labels = _unique_labels([s.label for s in summaries])
    tasks: dict[str, str] = {}
    for summary in summaries:
        for score in summary.scores.values():
            tasks.setdefault(score.task, score.metric)
    rows = [ComparisonRow(task, metric, [s.scores[task].value if task in s.scores else None for s in summaries],
                          None if trained_on is None else task in trained_on)
            for task, metric in tasks.items()]
    shared = [r for r in rows if all(v is not None for v in r.values)]
    means = []
    for metric in dict.fromkeys(r.metric for r in shared):
        group = [r for r in shared if r.metric == metric]
        if len(group) > 1:
            means.append(ComparisonRow(f"mean {metric} ({len(group)} tasks)", metric,
                                       [sum(r.values[i] for r in group) / len(group) for i in range(len(summaries))]))
    drops = [f"{row.task} (not trained on) dropped {delta:+.2f} in {label}"
             for row in rows if row.trained is False
             for label, delta in zip(labels[1:], row.deltas[1:]) if delta is not None and delta < -threshold]
    return Comparison(labels, rows, means, setting_differences(labels, summaries), drops)


def setting_differences(labels: list[str], summaries: list[EvalSummary]) -> list[str]:
    """One line per encoding setting that differs between the evaluated models (settings unknown: skipped)."""
    known = [(label, s.settings) for label, s in zip(labels, summaries) if s.settings]
    found = []
    for key in dict.fromkeys(k for _, settings in known for k in settings):
        values = {label: settings.get(key) for label, settings in known}
        if len({repr(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{label}: {value}" for label, value in values.items())
            found.append(f"{key} differs ({shown})")
    return found


def _unique_labels(labels: list[str]) -> list[str]:
    """Disambiguate equal labels (two checkpoints both called ``final``) with a #n suffix."""
    out = []
    for i, label in enumerate(labels):
        out.append(f"{label}#{i + 1}" if labels.count(label) > 1 else label)
    return out
