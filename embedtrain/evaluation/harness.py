"""Running mteb itself: ``mteb.evaluate`` with results cached in an evaluation folder, never going online by
accident. Used by the checkpoint evaluation (:mod:`.runner`), the truncation grid (:mod:`.grid`) and soup metrics.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path


def offline_env(online: bool) -> None:
    """Make any accidental hub access fail fast instead of hanging (local tasks never need it)."""
    if not online:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(var, "1")


def run_mteb(encoder, tasks: Sequence, *, output_dir: Path, batch_size: int = 64, show_progress: bool = True,
             reuse: bool = False) -> list:
    """Evaluate ``encoder`` on ``tasks`` with ``mteb.evaluate``; returns the ``TaskResult`` list.

    Results are cached in ``output_dir`` (mteb's layout) under the encoder's model meta; with
    ``reuse=False`` every task is recomputed.
    """
    import mteb

    cache = mteb.ResultCache(cache_path=output_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        result = mteb.evaluate(
            encoder, list(tasks), cache=cache, co2_tracker=False, raise_error=True,
            overwrite_strategy="only-missing" if reuse else "always",
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress},
            show_progress_bar=show_progress,
        )
    return list(result.task_results)


def result_paths(output_dir: Path, encoder, tasks: Sequence) -> list[Path]:
    """Where mteb stored the JSON of each task for ``encoder``."""
    import mteb

    cache = mteb.ResultCache(cache_path=output_dir)
    return [cache.get_task_result_path(t.metadata.name, encoder.mteb_model_meta) for t in tasks]
