"""Run mteb on a checkpoint: resolve tasks, evaluate, save mteb JSON + summary, optionally a grid.

:func:`evaluate_checkpoint` is what ``embedtrain eval`` and a recipe's ``eval:`` section call. Results
go through an mteb ``ResultCache`` rooted in the evaluation folder (default ``<checkpoint>/eval``) under
a model name and revision derived from the checkpoint (see :mod:`embedtrain.evaluation.results`);
tasks are re-run every time unless ``reuse=True``, and reuse only ever finds results of the same
weights.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtrain.evaluation.harness import offline_env, result_paths, run_mteb
from embedtrain.evaluation.results import (
    EvalSummary,
    default_output_dir,
    encoding_settings,
    model_label,
    summary_from_results,
    weights_fingerprint,
    write_summary,
)

logger = logging.getLogger(__name__)


@dataclass
class EvalReport:
    """What an evaluation produced."""

    summary: EvalSummary
    output_dir: Path
    result_files: list[Path] = field(default_factory=list)
    summary_files: list[Path] = field(default_factory=list)
    grid: Any = None  # embedtrain.evaluation.grid.GridResult when dims/layers were given
    grid_files: list[Path] = field(default_factory=list)


def evaluate_checkpoint(checkpoint: str | Path, *, tasks: Sequence[str] | None = None,
                        data_dir: str | Path | None = None, task_configs: Sequence[str | Path] = (),
                        output: str | Path | None = None, batch_size: int = 64,
                        dims: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                        online: bool = False, reuse: bool = False, show_progress: bool = True,
                        device: str | None = None, resolved_tasks: Sequence | None = None,
                        trust_remote_code: bool = False, precision: str = "fp32") -> EvalReport:
    """Evaluate ``checkpoint`` (a local folder or packaged short name) and write its results.

    ``tasks`` are names (default: the five STS tasks); ``resolved_tasks`` may instead pass task objects
    already built by :func:`~embedtrain.evaluation.tasks.resolve_tasks`. ``dims``/``layers`` add a
    Matryoshka grid of truncated variants (table, JSON and heatmap PNG next to the summary).
    ``precision`` is ``fp32`` (exact, the default: published scores reproduce), ``bf16`` or ``auto`` (bf16
    autocast where the hardware has it: faster encoding, scores within a few hundredths; docs/throughput.md).
    """
    offline_env(online)
    from embedtrain.evaluation.tasks import resolve_tasks
    from embedtrain.models.resolve import load_model, resolve_model_path

    task_objs = list(resolved_tasks) if resolved_tasks is not None else resolve_tasks(
        tasks, data_dir=data_dir, task_configs=task_configs, online=online)
    model_dir = resolve_model_path(checkpoint)
    fingerprint = weights_fingerprint(model_dir)
    from embedtrain.models.precision import choose_precision

    fast = choose_precision(precision, device)  # type: ignore[arg-type]
    label = model_label(checkpoint, model_dir)
    output_dir = Path(output).expanduser() if output is not None else default_output_dir(model_dir, label)
    if fast.autocast and (dims or layers):
        from embedtrain.errors import EmbedtrainError

        raise EmbedtrainError("--dims/--layers grids are evaluated in exact fp32 only; drop --precision")
    if fast.autocast:  # approximate scores: their own label and folder, never mistaken for the exact ones
        label = f"{label}-{fast.name}"
        output_dir = output_dir if output is not None else output_dir.with_name(f"{output_dir.name}-{fast.name}")
    grid_spec = None
    for task in task_objs:  # read (and so check) every task's data before any result is written
        task.load_data()
    model = load_model(model_dir, device=device, trust_remote_code=trust_remote_code)
    if dims or layers:
        from embedtrain.evaluation.grid import check_grid

        grid_spec = check_grid(model, dims=dims, layers=layers)  # fail before the long run starts

    from embedtrain.evaluation.encoder import make_encoder

    cache: dict[tuple, Any] = {}
    encoder = make_encoder(model, label=label, fingerprint=fingerprint, cache=cache, precision=fast)
    logger.info("evaluating %s (weights %s) on %s -> %s", label, fingerprint,
                ", ".join(t.metadata.name for t in task_objs), output_dir)
    created = not output_dir.exists()
    try:
        results = run_mteb(encoder, task_objs, output_dir=output_dir, batch_size=batch_size,
                           show_progress=show_progress, reuse=reuse)
    except BaseException:
        if created and output_dir.is_dir() and not any(p.is_file() for p in output_dir.rglob("*")):
            shutil.rmtree(output_dir)  # no empty results folder left behind
        raise
    summary = summary_from_results(label, str(checkpoint), fingerprint, results, task_objs,
                                   settings=encoding_settings(model))
    report = EvalReport(summary, output_dir, result_paths(output_dir, encoder, task_objs),
                        list(write_summary(summary, output_dir)))
    if grid_spec is not None:
        from embedtrain.evaluation.grid import run_grid, write_grid

        report.grid = run_grid(model, task_objs, grid_spec, label=label, fingerprint=fingerprint,
                               output_dir=output_dir, batch_size=batch_size, show_progress=show_progress,
                               reuse=reuse, full_cache=cache,
                               full_scores={n: s.value for n, s in summary.scores.items()})
        report.grid_files = write_grid(report.grid, output_dir)
    return report
