"""Checkpoint folder conventions: which files a checkpoint holds, where the final model goes, how folders are
written safely (atomically) and never over a user's files by accident, and which checkpoint a run resumes from."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from transformers.trainer_utils import get_last_checkpoint

from embedtrain.errors import CheckpointError, RecipeError

if TYPE_CHECKING:
    from embedtrain.schema.base import LocatedModel

logger = logging.getLogger(__name__)

FINAL_DIR = "final"
#: The validated recipe, saved beside every final model (what produced it, re-runnable).
RECIPE_FILE = "embedtrain_recipe.yaml"
#: Suffixes of model weight files (sentence-transformers / transformers / peft save formats).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx")
#: What the HF trainer writes into ``checkpoint-N`` besides the model: needed to resume, not model weights.
TRAINER_STATE_FILES = frozenset({"optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin",
                                 "scaler.pt"})


def is_trainer_state(name: str) -> bool:
    """Whether a file in a checkpoint folder is trainer state (optimizer, scheduler, RNG...), not the model."""
    return name in TRAINER_STATE_FILES or (name.startswith("rng_state") and name.endswith(".pth"))


def check_new_dir(path: str | Path, *, overwrite: bool = False, what: str = "output folder",
                  protect: tuple[str | Path, ...] | list = ()) -> Path:
    """Check that ``path`` may be written as a new folder: absent, empty, or replaceable (``overwrite``).

    Nothing is deleted here: write the new folder with :func:`atomic_save`, which replaces an old one only
    once the new one is complete. A file at ``path`` is always an error. ``protect`` lists folders that must
    survive (the inputs of a soup or export): ``path`` may not be one of them or hold one, whatever
    ``overwrite`` says.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{what} is a file, not a folder", file=path)
    resolved = path.resolve()
    for keep in protect:
        keep_resolved = Path(keep).resolve()
        if resolved == keep_resolved or resolved in keep_resolved.parents:
            raise CheckpointError(f"{what} would replace the input {keep}; choose another folder", file=path)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise CheckpointError(f"{what} exists and is not empty (pass --overwrite to replace it)", file=path)
    return path


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` folder in ``output_dir`` (None if there is none)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = get_last_checkpoint(str(output_dir))
    return Path(found) if found else None


def check_output_dir(recipe: LocatedModel, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from, after refusing to silently train over an earlier run.

    ``recipe`` is any recipe with an ``output_dir``. With ``resume`` the newest checkpoint is returned (None,
    with a warning, if there is none); otherwise existing checkpoints are an error unless ``overwrite``.
    """
    output_dir = recipe.output_dir  # type: ignore[attr-defined]
    ckpt = last_checkpoint(output_dir)
    if resume:
        if ckpt is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", output_dir)
        return ckpt
    if ckpt is not None and not overwrite:
        raise RecipeError(
            f"output_dir already holds {ckpt.name}; pass --resume to continue that run or --overwrite to "
            "start over (existing checkpoints are then replaced as the new run saves)",
            file=recipe.source, line=recipe.line_of("output_dir"), field="output_dir")
    return None


def atomic_save(save_fn, target: str | Path) -> Path:
    """Write a model with ``save_fn(tmp_dir)`` then swap it into ``target``.

    A crash while saving leaves any earlier ``target`` untouched; the previous folder is removed only
    after the new one is complete.
    """
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_fn(str(tmp))
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def save_with_recipe(model, recipe: LocatedModel, folder: str | Path) -> None:
    """Save a sentence-transformer to ``folder`` with the validated recipe beside it (:data:`RECIPE_FILE`)."""
    model.save(str(folder))
    dump = recipe.model_dump(mode="json", exclude_defaults=False)
    Path(folder, RECIPE_FILE).write_text(yaml.safe_dump(dump, sort_keys=False), encoding="utf-8")
