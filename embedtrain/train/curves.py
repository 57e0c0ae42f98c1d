"""The picture of a run: loss, learning rate, evaluator scores and the per-step extras against the step.

:func:`plot_training_curves` reads the trainer's log history (``trainer_state.json``'s ``log_history``) and the
per-step series the run collected (:mod:`embedtrain.train.observe`), and draws one panel per quantity:

* training loss (and ``eval_loss`` when the trainer computed one);
* learning rate;
* evaluator scores (each evaluator's main metric, or every ``eval_*`` metric when the main ones are unknown),
  with the score before training at step 0;
* GIST runs: the share of in-batch candidates the guide masked, per step;
* dynamic mining: rows refreshed per re-mining round, per dataset;
* weighted mixtures: the achieved share of batches per dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: ``eval_*`` keys that are timings or bookkeeping, not scores.
_NOT_SCORES = ("runtime", "samples_per_second", "steps_per_second", "epoch", "loss")


def _points(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for entry in history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "step" in entry:
            xs.append(int(entry["step"]))
            ys.append(float(value))
    return xs, ys


def evaluator_keys(history: list[dict], main_metrics: list[str] | None = None) -> list[str]:
    """The ``eval_*`` score keys to plot: the main metrics when given (and logged), else every score key."""
    logged = {k for entry in history for k in entry if k.startswith("eval_")}
    if main_metrics:
        wanted = [f"eval_{m}" for m in main_metrics if f"eval_{m}" in logged]
        if wanted:
            return wanted
    return sorted(k for k in logged if not k.removeprefix("eval_").endswith(_NOT_SCORES) and k != "eval_loss")


def plot_training_curves(history: list[dict], out: str | Path, *, series: dict[str, list] | None = None,
                         main_metrics: list[str] | None = None, before: dict[str, float] | None = None,
                         title: str | None = None) -> Path | None:
    """Draw the run's curves into ``out`` (PNG); None (and nothing written) when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = series or {}
    panels: list[tuple[str, list[tuple[str, list[int], list[float], str]]]] = []
    loss = [("train loss", *_points(history, "loss"), "line")]
    if any("eval_loss" in e for e in history):
        loss.append(("eval loss", *_points(history, "eval_loss"), "line"))
    if loss[0][1]:
        panels.append(("loss", loss))
    lr = _points(history, "learning_rate")
    if lr[0]:
        panels.append(("learning rate", [("learning rate", *lr, "line")]))
    scores = []
    for key in evaluator_keys(history, main_metrics):
        xs, ys = _points(history, key)
        name = key.removeprefix("eval_")
        start = (before or {}).get(name)
        if start is not None and (not xs or xs[0] > 0):
            xs, ys = [0, *xs], [start, *ys]
        scores.append((name, xs, ys, "marker"))
    if scores:
        panels.append(("evaluators", scores))
    if "gist_masked_fraction" in series:
        steps, values = zip(*series["gist_masked_fraction"])
        panels.append(("GIST: masked share of in-batch candidates", [("per step", list(steps), list(values), "line")]))
    mining = sorted(k for k in series if k.startswith("mining/"))
    if mining:
        panels.append(("dynamic mining: rows refreshed per round",
                       [(k.split("/")[1], [s for s, _ in series[k]], [v for _, v in series[k]], "bar")
                        for k in mining]))
    mixture = sorted({k for e in history for k in e if k.startswith("mixture/")})
    if mixture:
        panels.append(("achieved dataset mixture (share of batches)",
                       [(k.split("/", 1)[1], *_points(history, k), "line") for k in mixture]))
    if not panels:
        logger.info("no training logs to plot")
        return None

    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, lines) in zip(axes.flat, panels):
        bars = [line for line in lines if line[3] == "bar"]
        width = _bar_width(bars)
        for i, (label, xs, ys, kind) in enumerate(lines):
            if kind == "bar":
                ax.bar([x + (i - (len(bars) - 1) / 2) * width for x in xs], ys, width=width, label=label)
            elif kind == "marker":
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
            else:
                ax.plot(xs, ys, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        if len(lines) > 1 or name == "evaluators":
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _bar_width(bars: list) -> float:
    steps = sorted({x for _, xs, _, _ in bars for x in xs})
    gaps = [b - a for a, b in zip(steps, steps[1:])] or [1]
    return 0.8 * min(gaps) / max(len(bars), 1)

