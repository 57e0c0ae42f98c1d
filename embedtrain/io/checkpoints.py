"""Checkpoint folder conventions: which files a checkpoint holds, where the final model goes, how folders are
written safely (atomically) and never over a user's files by accident, and which checkpoint a run resumes from."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from embedtrain.errors import CheckpointError
from embedtrain.io.secrets import redact

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


#: Written last into every checkpoint-N and final folder: the files of the folder and their sizes. A folder
#: without it (or whose files no longer match it) was interrupted while being written and is never resumed from.
MANIFEST = "embedtrain_complete.json"
CHECKPOINT_PREFIX = "checkpoint-"


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def seal(folder: str | Path) -> Path:
    """Mark ``folder`` complete: flush its files to disk, then atomically write :data:`MANIFEST` listing them."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        _fsync(path)
        files[path.relative_to(folder).as_posix()] = path.stat().st_size
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, folder / MANIFEST)
    _fsync(folder)
    return folder / MANIFEST


def incomplete_reason(folder: str | Path) -> str | None:
    """None when ``folder`` was sealed and still holds every sealed file at its size; else why not."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "no completeness marker (the save was interrupted)"
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable completeness marker"
    for rel, size in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != size:
            return f"{rel} has {path.stat().st_size} bytes, {size} were written"
    return None


def checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-N`` folder in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        step = path.name[len(CHECKPOINT_PREFIX):]
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and step.isdigit():
            found.append((int(step), path))
    return sorted(found)


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest *complete* ``checkpoint-N`` folder in ``output_dir`` (None if there is none)."""
    complete = [path for _, path in checkpoints(output_dir) if incomplete_reason(path) is None]
    return complete[-1] if complete else None


def rotate_checkpoints(output_dir: str | Path, keep: int | None, protect: Path | None = None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond the newest ``keep`` (never an incomplete one, never
    ``protect``, e.g. the best checkpoint); returns what was deleted."""
    if keep is None or keep <= 0:
        return []
    complete = [path for _, path in checkpoints(output_dir) if incomplete_reason(path) is None]
    doomed = [p for p in complete[:-keep] if protect is None or p.resolve() != Path(protect).resolve()]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def recover_interrupted_swap(target: str | Path) -> None:
    """Finish or undo an :func:`atomic_save` that was killed between its renames.

    ``<target>.tmp`` complete and ``target`` missing: the swap was interrupted after the old folder moved
    aside; the new one is moved into place. Leftover ``.tmp`` (incomplete) and ``.old`` folders are removed.
    """
    target = Path(target)
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    if not target.exists() and tmp.is_dir() and incomplete_reason(tmp) is None:
        os.replace(tmp, target)
        logger.info("completed the interrupted save of %s", target)
    elif not target.exists() and old.is_dir():
        os.replace(old, target)
        logger.info("restored %s from its copy kept during an interrupted save", target)
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
            logger.info("removed %s, left by an interrupted save", leftover)


@dataclass
class OutputPlan:
    """What a run does with its ``output_dir``: resume from ``resume_from`` (None: start), or nothing at all
    because the run already finished (``finished``)."""

    resume_from: Path | None = None
    finished: bool = False
    global_step: int = 0


def _finished_step(output_dir: Path, last: Path | None, max_steps: int | None,
                   num_train_epochs: float | None) -> int | None:
    """The step a finished run ended at (None if it has more to do): ``final`` is complete and the last
    checkpoint (if any) reached the end this run asks for (``max_steps``, else the same number of epochs)."""
    final = output_dir / FINAL_DIR
    if not final.is_dir() or incomplete_reason(final) is not None:
        return None
    if last is None:
        return 0
    try:
        state = json.loads((last / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    step = int(state.get("global_step", 0))
    if max_steps is not None and max_steps > 0:
        target = max_steps
    elif num_train_epochs is not None and float(state.get("num_train_epochs", -1)) != float(num_train_epochs):
        return None  # a different length than the saved run: it has more to do
    else:
        target = int(state.get("max_steps", 0) or 0)
    return step if target and step >= target else None


def plan_output_dir(recipe: LocatedModel, resume: bool, overwrite: bool, *, max_steps: int | None = None,
                    num_train_epochs: float | None = None) -> OutputPlan:
    """Decide what a run does with ``recipe.output_dir`` before it trains; never trains over an earlier run silently.

    * ``--overwrite``: the previous run's checkpoints and ``final`` are removed (logged) and a new run starts.
    * ``--resume``: the newest *complete* checkpoint is the resume point; incomplete ones (a save killed half-way)
      are reported and moved aside as ``checkpoint-N.incomplete``; a finished run (complete ``final``, last
      checkpoint at the last step this run asks for: ``max_steps``, or the same ``num_train_epochs``) is
      reported and not trained again. Asking for more steps continues it.
    * neither: an ``output_dir`` holding checkpoints or a ``final`` model is an error naming both options.
    """
    output_dir = Path(recipe.output_dir)  # type: ignore[attr-defined]
    if output_dir.exists() and not output_dir.is_dir():
        raise recipe.error("output_dir is a file, not a folder", "output_dir")
    recover_interrupted_swap(output_dir / FINAL_DIR)
    found = checkpoints(output_dir)
    has_final = (output_dir / FINAL_DIR).exists()
    if overwrite:
        for _, path in found:
            shutil.rmtree(path)
        if has_final:
            shutil.rmtree(output_dir / FINAL_DIR)
        if found or has_final:
            logger.warning("--overwrite: removed %d checkpoint(s)%s of the previous run in %s", len(found),
                           " and final/" if has_final else "", output_dir)
        return OutputPlan()
    if not resume:
        if found or has_final:
            what = found[-1][1].name if found else f"a trained model ({FINAL_DIR}/)"
            raise recipe.error(f"output_dir already holds {what}; pass --resume to continue that run or --overwrite "
                               "to start a new one (the old checkpoints and final model are then removed)",
                               "output_dir")
        return OutputPlan()
    complete = []
    for step, path in found:
        reason = incomplete_reason(path)
        if reason is None:
            complete.append(path)
            continue
        aside = path.with_name(f"{path.name}.incomplete")
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.incomplete{n}")
        os.replace(path, aside)
        logger.warning("--resume: %s is incomplete (%s); skipped and kept as %s", path.name, reason, aside.name)
    last = complete[-1] if complete else None
    finished = _finished_step(output_dir, last, max_steps, num_train_epochs)
    if finished is not None:
        return OutputPlan(last, finished=True, global_step=finished)
    if last is None:
        logger.warning("--resume: no complete checkpoint in %s, starting from scratch", output_dir)
    return OutputPlan(last)


def atomic_save(save_fn, target: str | Path) -> Path:
    """Write a folder with ``save_fn(tmp_dir)``, seal it (:func:`seal`), then swap it into ``target``.

    A kill while saving leaves any earlier ``target`` untouched (or, between the two renames of the swap, both
    folders intact, which :func:`recover_interrupted_swap` resolves); the previous folder is removed only after
    the new one is in place.
    """
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    recover_interrupted_swap(target)
    save_fn(str(tmp))
    seal(tmp)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def save_with_recipe(model, recipe: LocatedModel, folder: str | Path) -> None:
    """Save a sentence-transformer to ``folder`` with the validated recipe beside it (:data:`RECIPE_FILE`),
    secrets redacted (:mod:`embedtrain.io.secrets`)."""
    model.save(str(folder))
    dump = redact(recipe.model_dump(mode="json", exclude_defaults=False))
    Path(folder, RECIPE_FILE).write_text(yaml.safe_dump(dump, sort_keys=False), encoding="utf-8")
