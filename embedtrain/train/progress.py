"""Training progress for people: a rich progress bar in a terminal, plain log lines in a log file.

transformers' tqdm bar does not draw when output is redirected, and its ``logging_steps`` logs print nothing
through embedtrain's logging, so a run written to a file would be silent until it ends.
:func:`progress_callback` picks the right display: :class:`RichProgressCallback` for a terminal,
:class:`LogProgressCallback` (one line per ``logging_steps`` with loss, learning rate, speed and ETA)
otherwise. Only the main process reports.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

logger = logging.getLogger("embedtrain.train")


def _loss_info(logs: dict) -> str:
    info = f"loss {float(logs['loss']):.4f}"
    if "learning_rate" in logs:
        info += f" lr {float(logs['learning_rate']):.2e}"
    return info


class RichProgressCallback(TrainerCallback):
    """Step progress with the latest loss and learning rate."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is not None and logs and "loss" in logs:
            self.progress.update(self.task, info=_loss_info(logs))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


class LogProgressCallback(TrainerCallback):
    """A plain log line every ``logging_steps``: step, loss, learning rate, steps/s and ETA."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.perf_counter(), state.global_step
        if state.is_world_process_zero:
            logger.info("training: %d steps (from step %d)", state.max_steps, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs or self.start is None:
            return
        done = state.global_step - self.start_step
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (state.max_steps - state.global_step) / rate if rate else float("nan")
        logger.info("step %d/%d  %s  %.2f steps/s  eta %s", state.global_step, state.max_steps, _loss_info(logs),
                    rate, _clock(eta))

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.start is not None:
            logger.info("training done: %d steps in %s", state.global_step, _clock(time.perf_counter() - self.start))


def _clock(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_callback(console: Console | None = None) -> TrainerCallback:
    """A rich bar when ``console`` is a terminal, else plain log lines."""
    console = console or Console(stderr=True)
    return RichProgressCallback(console) if console.is_terminal else LogProgressCallback()
