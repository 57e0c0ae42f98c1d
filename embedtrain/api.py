"""embedtrain's public operations, one function per command: what the CLI calls, and what scripts call.

Every function takes plain values (paths, names, numbers), does the whole job through the feature packages,
and returns a result object; user mistakes raise :class:`~embedtrain.errors.EmbedtrainError` subclasses whose
message names the file, line and field. Nothing here prints: :mod:`embedtrain.cli` parses arguments, calls
one of these and prints what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtrain.errors import CheckpointError, DataError
from embedtrain.schema import OfflineMiningConfig, Recipe, load_recipe

if TYPE_CHECKING:
    from embedtrain.evaluation.compare import Comparison
    from embedtrain.evaluation.runner import EvalReport
    from embedtrain.export.small_model import ExportResult
    from embedtrain.export.speed import EncodeSpeed
    from embedtrain.hub.push import PushResult
    from embedtrain.losses import LossSpec
    from embedtrain.mining.offline import MiningResult
    from embedtrain.soup.api import SoupResult
    from embedtrain.train.runner import TrainResult


# -- recipes ----------------------------------------------------------------------------------------------
@dataclass
class ValidationReport:
    """What ``validate`` checked: the recipe and one line per prepared dataset."""

    recipe: Recipe
    lines: list[str] = field(default_factory=list)


def _recipe(recipe: str | Path | Recipe, overrides: list[str] | None) -> Recipe:
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, overrides)
    if overrides:
        raise ValueError("overrides apply to a recipe file, not to a loaded recipe")
    return recipe


def validate(recipe: str | Path | Recipe, overrides: list[str] | None = None) -> ValidationReport:
    """Check a recipe and everything it names without training: every data row, losses (names, parameter types,
    formats, sizes against the model), the start and guide models' folders, training arguments and the
    ``eval:`` section. Exactly what ``train`` checks before it loads a model."""
    from embedtrain.train.runner import prepare

    loaded = _recipe(recipe, overrides)
    mode = prepare(loaded)
    return ValidationReport(loaded, mode.describe())


def train(recipe: str | Path | Recipe, overrides: list[str] | None = None, *, resume: bool = False,
          overwrite: bool = False, callbacks: list | None = None, progress: bool = False) -> TrainResult:
    """Train a recipe (any stage) and return where the final model went.

    ``progress`` replaces transformers' tqdm bar by a rich bar in a terminal, or plain log lines (loss,
    learning rate, speed, ETA) every ``logging_steps`` when output goes to a file.
    """
    from embedtrain.train.progress import progress_callback
    from embedtrain.train.runner import run

    return run(_recipe(recipe, overrides), resume=resume, overwrite=overwrite, callbacks=callbacks,
               progress=progress_callback if progress else None)


def losses() -> dict[str, LossSpec]:
    """The losses recipes can name."""
    from embedtrain.losses import available_losses

    return available_losses()


# -- evaluation -------------------------------------------------------------------------------------------
def evaluate(checkpoint: str | Path, *, tasks: Sequence[str] | None = None, data_dir: str | Path | None = None,
             task_configs: Sequence[str | Path] = (), output: str | Path | None = None, batch_size: int = 64,
             dims: Sequence[int] | None = None, layers: Sequence[int] | None = None, online: bool = False,
             reuse: bool = False, show_progress: bool = True, device: str | None = None,
             trust_remote_code: bool = False, precision: str = "fp32") -> EvalReport:
    """Offline MTEB evaluation of a checkpoint (see :func:`embedtrain.evaluation.runner.evaluate_checkpoint`).

    ``precision="auto"`` or ``"bf16"`` encodes in bf16 autocast (faster; labelled and stored apart from the
    exact fp32 scores, which stay the default)."""
    from embedtrain.evaluation.runner import evaluate_checkpoint
    from embedtrain.evaluation.tasks import split_task_names

    return evaluate_checkpoint(checkpoint, tasks=split_task_names(tasks) or None, data_dir=data_dir,
                               task_configs=task_configs, output=output, batch_size=batch_size, dims=dims,
                               layers=layers, online=online, reuse=reuse, show_progress=show_progress, device=device,
                               trust_remote_code=trust_remote_code, precision=precision)


def compare(paths: Sequence[str | Path], *, trained_on: Sequence[str] | None = None,
            threshold: float = 0.5) -> Comparison:
    """Side-by-side main scores of evaluated checkpoints (or evaluation folders), deltas against the first.

    ``trained_on`` names the tasks the later models trained for: the others are flagged when they dropped more
    than ``threshold`` points (the generalization view of a comparison).
    """
    from embedtrain.evaluation.compare import compare as compare_summaries
    from embedtrain.evaluation.results import load_summary

    if len(paths) < 2:
        raise CheckpointError("--compare needs at least two checkpoints or evaluation folders")
    return compare_summaries([load_summary(p) for p in paths],
                             trained_on=list(trained_on) if trained_on is not None else None, threshold=threshold)


def eval_tasks(task_configs: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The local evaluation tasks by name: the bundled ones and those in ``task_configs``."""
    from embedtrain.evaluation.tasks import load_definitions

    return load_definitions(task_configs)


# -- mining -----------------------------------------------------------------------------------------------
def mine(config: OfflineMiningConfig, *, progress=None) -> MiningResult:
    """Offline hard-negative mining into a ``hard_negatives`` file (``config.output``)."""
    from embedtrain.mining.offline import run_mining

    return run_mining(config, progress=progress)


# -- soups, exports, the Hub ------------------------------------------------------------------------------
def merge_start(trained: str | Path, start: str | Path, output: str | Path, *, alpha: float | str = "auto",
                dev: str | Path | None = None, general_text: str | Path | None = None,
                grid: Sequence[float] | None = None, keep: float = 0.9, num_pairs: int = 2000,
                max_dev_pairs: int | None = None, overwrite: bool = False, trust_remote_code: bool = False):
    """Merge a trained checkpoint with its start model (WiSE-FT) into ``output``; ``alpha="auto"`` chooses the
    weight on ``dev`` (scored pairs, never a test split) and agreement on ``general_text`` (see
    :mod:`embedtrain.soup.merge_start`). Returns the :class:`~embedtrain.soup.merge_start.MergeSelection`."""
    from embedtrain.soup.merge_start import DEFAULT_GRID, merge_checkpoints

    return merge_checkpoints(trained, start, output, alpha=alpha, dev=dev, general_text=general_text,
                             grid=grid or DEFAULT_GRID, keep=keep, num_pairs=num_pairs, max_dev_pairs=max_dev_pairs,
                             overwrite=overwrite, trust_remote_code=trust_remote_code)


def soup(checkpoints: Sequence[str | Path], output: str | Path, *, method: str = "uniform",
         weights: Sequence[float] | None = None, held_out: str | Path | None = None, mteb_task: str | None = None,
         data_dir: str | Path | None = None, task_configs: Sequence[str | Path] = (), task: str | None = None,
         max_samples: int | None = None, eval_held_out: str | Path | None = None,
         eval_mteb_tasks: Sequence[str] = (), overwrite: bool = False, trust_remote_code: bool = False) -> SoupResult:
    """Average checkpoints into ``output``: uniform, weighted, or greedy on a held-out metric.

    The metric is cosine Spearman on a scored-pairs file (``held_out``) or the main score of an offline MTEB
    task (``mteb_task``: bundled, or defined in ``task_configs``); with ``method`` other than greedy it is only
    reported. ``eval_held_out`` (a scored-pairs file) and ``eval_mteb_tasks`` are *report* metrics: every
    ingredient and the soup are scored on them too, and they must differ from the selection metric.
    """
    from embedtrain.soup import make_soup
    from embedtrain.soup.metrics import held_out_sts, mteb_metric

    if len(checkpoints) < 2:
        raise CheckpointError("give at least two checkpoints and the output folder: soup CKPT CKPT... OUT")
    if held_out is not None and mteb_task is not None:
        raise CheckpointError("use either a held-out file or an MTEB task as the metric, not both",
                              field="--held-out/--mteb-task")
    metric, metric_name = None, None
    if held_out is not None:
        metric, metric_name = held_out_sts(held_out, task=task, max_samples=max_samples), Path(held_out).name
    elif mteb_task is not None:
        metric, metric_name = mteb_metric(mteb_task, data_dir, task=task, task_configs=list(task_configs)), mteb_task
    report: dict = {}
    if eval_held_out is not None:
        if held_out is not None and Path(eval_held_out).resolve() == Path(held_out).resolve():
            raise CheckpointError("--eval-held-out is the selection file --held-out; report on a separate split",
                                  field="--eval-held-out")
        report[Path(eval_held_out).name] = held_out_sts(eval_held_out, task=task)
    for name in eval_mteb_tasks:
        if name == mteb_task:
            raise CheckpointError(f"--eval-mteb-task {name} is the selection task --mteb-task; report on another "
                                  "task", field="--eval-mteb-task")
        report[name] = mteb_metric(name, data_dir, task=task, task_configs=list(task_configs))
    return make_soup(checkpoints, output, method=method, weights=weights, metric=metric,  # type: ignore[arg-type]
                     metric_name=metric_name, report_metrics=report, overwrite=overwrite,
                     trust_remote_code=trust_remote_code)


@dataclass
class ExportReport:
    """An export and, when measured, the encode speed of the full and the exported model."""

    result: ExportResult
    full_speed: EncodeSpeed | None = None
    exported_speed: EncodeSpeed | None = None


def export(checkpoint: str | Path, output: str | Path, *, layers: int | None = None, dim: int | None = None,
           overwrite: bool = False, speed: bool = True, sentences: str | Path | None = None,
           num_sentences: int = 512, batch_size: int = 32, trust_remote_code: bool = False) -> ExportReport:
    """Cut the first ``layers`` layers / ``dim`` dims of a checkpoint into a standalone model; time both."""
    from embedtrain.export import export_small_model, load_speed_sentences, measure_encode_speed
    from embedtrain.export.speed import default_speed_file
    from embedtrain.models.resolve import load_model, resolve_model_path

    model = load_model(checkpoint, device="cpu", trust_remote_code=trust_remote_code)
    result = export_small_model(resolve_model_path(checkpoint), output, layers=layers, dim=dim, overwrite=overwrite,
                                model=model)
    report = ExportReport(result)
    if speed:
        texts = load_speed_sentences(sentences or default_speed_file(), num_sentences)
        exported = load_model(result.output_dir, device="cpu")
        report.full_speed = measure_encode_speed(model, texts, batch_size=batch_size)
        report.exported_speed = measure_encode_speed(exported, texts, batch_size=batch_size)
    return report


def export_task(checkpoint: str | Path, output: str | Path, *, task: str, overwrite: bool = False,
                trust_remote_code: bool = False) -> Path:
    """Merge one task's LoRA adapter of a task checkpoint into a plain sentence-transformers model."""
    from embedtrain.adapters.export import export_task as run_export

    return run_export(checkpoint, task, output, overwrite=overwrite, trust_remote_code=trust_remote_code)


@dataclass
class TaskRow:
    """One task of a task-adapter checkpoint."""

    task: str
    adapter: str | None
    rank: int | None
    prompt: str | None
    aliases: list[str]
    mteb_types: list[str]


def tasks(checkpoint: str | Path, *, trust_remote_code: bool = False) -> list[TaskRow]:
    """The tasks, adapters, prompts and MTEB mapping of a task-adapter checkpoint."""
    from embedtrain.adapters.module import require_task_module
    from embedtrain.models.resolve import load_model

    module = require_task_module(load_model(checkpoint, device="cpu", trust_remote_code=trust_remote_code),
                                 checkpoint)
    return [TaskRow(name, route.adapter, module.model.peft_config[route.adapter].r if route.adapter else None,
                    route.prompt, [a for a, t in module.aliases.items() if t == name],
                    [k for k, t in module.mteb_map.items() if t == name])
            for name, route in module.routes.items()]


def push(checkpoint: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
         dry_run: str | Path | None = None, results: Sequence[str | Path] = (),
         commit_message: str | None = None) -> PushResult:
    """Upload a checkpoint with a generated model card (or, with ``dry_run``, write exactly what would upload)."""
    from embedtrain.hub import push as run_push

    if not Path(checkpoint).is_dir():
        raise CheckpointError("checkpoint folder not found", file=checkpoint)
    for folder in results:
        if not Path(folder).is_dir():
            raise DataError("results folder not found", file=folder)
    return run_push(checkpoint, repo_id, token=token, private=private, dry_run=dry_run, commit_message=commit_message,
                    results_dirs=list(results))


def environment():
    """Installed versions of the core libraries, the tested combination and known clashes."""
    from embedtrain.env import environment as read_environment

    return read_environment()


def end_processes() -> None:
    """After the work of an ``accelerate launch`` / ``torchrun`` process: wait for every rank, then end the
    process group (no-op for a single process). A process that exits with its group still open can abort at
    interpreter exit after a good run; the CLI calls this after every successful command."""
    from embedtrain.train.distributed import close_collective

    close_collective()
