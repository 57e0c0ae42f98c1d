"""Matryoshka / 2D-Matryoshka evaluation grid: main scores for every (layers, dims) truncation.

Each layer count is a real sub-network (:func:`embedtrain.models.truncate.truncated_copy`) encoded once;
each embedding width is then scored by slicing those embeddings (what ``truncate_dim`` does), through
:class:`~embedtrain.evaluation.encoder.CachingEncoder`. Every cell is an ordinary mteb run whose JSON is
saved under its own experiment folder. Outputs: ``grid.json``, ``grid.md`` (one table per task plus the
mean) and ``grid.png`` (heatmaps).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtrain.errors import CheckpointError

logger = logging.getLogger(__name__)

GRID_JSON, GRID_MD, GRID_PNG = "grid.json", "grid.md", "grid.png"
MEAN = "mean"


@dataclass(frozen=True)
class GridSpec:
    """Validated grid axes; ``full_layers`` / ``full_dim`` are the untruncated model's."""

    layers: list[int]
    dims: list[int]
    full_layers: int
    full_dim: int


@dataclass
class GridResult:
    """``scores[task][(layers, dim)]`` = main score x 100; ``MEAN`` holds the mean over tasks when there are
    several tasks that all report the same metric (scores of different metrics are never averaged)."""

    label: str
    layers: list[int]
    dims: list[int]
    tasks: list[str]
    metrics: dict[str, str]
    scores: dict[str, dict[tuple[int, int], float]] = field(default_factory=dict)

    @property
    def has_mean(self) -> bool:
        return len(self.tasks) > 1 and len(set(self.metrics.values())) == 1

    @property
    def panels(self) -> list[str]:
        """Every table / heatmap: one per task, plus the mean when there is one."""
        return [*self.tasks, MEAN] if self.has_mean else list(self.tasks)

    @property
    def summary_keys(self) -> list[str]:
        """What a short report shows: the mean when there is one, else every task."""
        return [MEAN] if self.has_mean else list(self.tasks)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "layers": self.layers, "dims": self.dims, "tasks": self.tasks,
                "metrics": self.metrics,
                "scores": {t: [{"layers": L, "dim": D, "score": v} for (L, D), v in cells.items()]
                           for t, cells in self.scores.items()}}


def check_grid(model, *, dims: Sequence[int] | None, layers: Sequence[int] | None) -> GridSpec:
    """Validate the axes against ``model`` (raises :class:`CheckpointError`); missing axes = full size."""
    from embedtrain.models.truncate import num_layers

    full_dim = model.get_embedding_dimension()
    full_layers = num_layers(model)
    dims_ = sorted(set(dims or [full_dim]))
    layers_ = sorted(set(layers or [full_layers]))
    bad_d = [d for d in dims_ if not 1 <= d <= full_dim]
    if bad_d:
        raise CheckpointError(f"--dims {bad_d} out of range: the model has {full_dim}-dim embeddings", field="dims")
    bad_l = [n for n in layers_ if not 1 <= n <= full_layers]
    if bad_l:
        raise CheckpointError(f"--layers {bad_l} out of range: the model has {full_layers} layers", field="layers")
    return GridSpec(layers_, dims_, full_layers, full_dim)


def run_grid(model, tasks: Sequence, spec: GridSpec, *, label: str, fingerprint: str, output_dir: Path,
             batch_size: int = 64, show_progress: bool = True, reuse: bool = False,
             full_cache: dict | None = None, full_scores: dict[str, float] | None = None) -> GridResult:
    """Evaluate every (layers, dim) cell of ``spec`` on ``tasks``.

    ``full_cache`` is the embedding cache of the untruncated model's run, so its row costs no encoding;
    ``full_scores`` (task -> main score x 100) are that run's scores, used as the untruncated cell as they
    are (re-reading them from the saved JSON would round them).
    """
    from embedtrain.evaluation.encoder import make_encoder
    from embedtrain.evaluation.harness import run_mteb
    from embedtrain.models.truncate import first_layers

    names = [t.metadata.name for t in tasks]
    grid = GridResult(label, spec.layers, spec.dims, names, {t.metadata.name: t.metadata.main_score for t in tasks},
                      {n: {} for n in names})
    if grid.has_mean:
        grid.scores[MEAN] = {}
    for n_layers in spec.layers:
        full_depth = n_layers == spec.full_layers
        cache = full_cache if (full_depth and full_cache is not None) else {}
        with first_layers(model, n_layers):  # cut in place (restored on exit): no model copy per layer count
            for dim in spec.dims:
                full = full_depth and dim == spec.full_dim
                if full and full_scores is not None and all(n in full_scores for n in names):
                    by_name = {n: full_scores[n] for n in names}
                else:
                    encoder = make_encoder(model, label=label, fingerprint=fingerprint, cache=cache,
                                           layers=None if full else n_layers, dim=None if full else dim)
                    logger.info("grid cell: %d layers, %d dims", n_layers, dim)
                    results = run_mteb(encoder, tasks, output_dir=output_dir, batch_size=batch_size,
                                       show_progress=show_progress, reuse=reuse or full)
                    by_name = {r.task_name: 100.0 * float(r.get_score()) for r in results}
                for name in names:
                    grid.scores[name][(n_layers, dim)] = by_name[name]
                if grid.has_mean:
                    grid.scores[MEAN][(n_layers, dim)] = sum(by_name[n] for n in names) / len(names)
    return grid


def grid_markdown(grid: GridResult) -> str:
    """One table per task (rows: layers, columns: dims) and one for the mean."""
    parts = [f"# Truncation grid of {grid.label}", "",
             "Main score x 100; rows = transformer layers kept, columns = embedding dimensions kept.", ""]
    for task in grid.panels:
        title = f"mean over {len(grid.tasks)} tasks" if task == MEAN else f"{task} ({grid.metrics[task]})"
        parts += [f"## {title}", "", "| layers \\ dims | " + " | ".join(str(d) for d in grid.dims) + " |",
                  "|---|" + "---:|" * len(grid.dims)]
        for n_layers in grid.layers:
            cells = " | ".join(f"{grid.scores[task][(n_layers, d)]:.2f}" for d in grid.dims)
            parts.append(f"| {n_layers} | {cells} |")
        parts.append("")
    return "\n".join(parts)


def plot_grid(grid: GridResult, path: Path) -> Path:
    """Heatmaps (layers x dims) of each task and of the mean, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = grid.panels
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 + 0.9 * len(grid.dims) * cols, 0.6 + 0.7 * len(grid.layers) * rows
                                                  + 0.6 * rows), squeeze=False)
    for ax, task in zip(axes.flat, panels):
        values = np.array([[grid.scores[task][(n, d)] for d in grid.dims] for n in grid.layers])
        image = ax.imshow(values, cmap="viridis", aspect="auto", origin="lower")
        ax.set_xticks(range(len(grid.dims)), [str(d) for d in grid.dims])
        ax.set_yticks(range(len(grid.layers)), [str(n) for n in grid.layers])
        ax.set_xlabel("embedding dims")
        ax.set_ylabel("layers")
        ax.set_title("mean" if task == MEAN else task, fontsize=10)
        mid = (values.max() + values.min()) / 2
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="black" if values[i, j] > mid else "white")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{grid.label}: main score x 100 by truncation", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_grid(grid: GridResult, output_dir: Path) -> list[Path]:
    """Write ``grid.json``, ``grid.md`` and ``grid.png`` into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / GRID_JSON
    json_path.write_text(json.dumps(grid.to_json(), indent=2) + "\n", encoding="utf-8")
    md_path = output_dir / GRID_MD
    md_path.write_text(grid_markdown(grid), encoding="utf-8")
    return [json_path, md_path, plot_grid(grid, output_dir / GRID_PNG)]
