"""Export a (layers, dim) sub-network of a checkpoint as a standalone sentence-transformers model.

The transformer layers beyond ``layers`` are removed from the Hugging Face model itself (smaller
weights file, proportionally faster encoding), and the output is cut to ``dim`` dims through
sentence-transformers' ``truncate_dim``, which is saved in ``config_sentence_transformers.json``, so
``SentenceTransformer(OUT)`` returns exactly the embeddings of
:func:`embedtrain.models.truncate.truncated_copy` without any embedtrain code. The folder is written
atomically (a crash leaves no half-written model) with an ``embedtrain_export.json`` describing where
it came from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from embedtrain.errors import CheckpointError
from embedtrain.io.checkpoints import RECIPE_FILE, atomic_save, check_new_dir
from embedtrain.models.resolve import load_model, resolve_model_path
from embedtrain.models.truncate import embedding_dim, num_layers, truncated_copy

logger = logging.getLogger(__name__)

EXPORT_INFO = "embedtrain_export.json"


@dataclass
class ExportResult:
    """What was exported: sizes before and after."""

    source: str
    output_dir: Path
    layers: int
    dim: int
    full_layers: int
    full_dim: int
    params_full: int
    params_exported: int
    #: Set when the model was not trained with a Matryoshka-family loss (see :func:`truncation_warning`).
    warning: str | None = None


#: Losses that train the first layers / dims of a model to embed well on their own.
TRUNCATION_LOSSES = frozenset({"matryoshka", "matryoshka2d", "starbucks"})


def _loss_names(loss: dict | None) -> set[str]:
    names: set[str] = set()
    while isinstance(loss, dict):
        names.add(str(loss.get("name")))
        loss = loss.get("inner")
    return names


def truncation_training(checkpoint: str | Path) -> bool | None:
    """Whether the checkpoint's recipe trained it with a Matryoshka-family loss (None: no recipe beside it)."""
    import yaml

    path = Path(checkpoint) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    names = _loss_names(recipe.get("loss"))
    for section in [recipe, *(recipe.get("tasks") or [])]:
        names |= _loss_names(section.get("loss"))
        for ds in section.get("datasets") or []:
            names |= _loss_names(ds.get("loss")) if isinstance(ds, dict) else set()
    return bool(names & TRUNCATION_LOSSES)


def truncation_warning(checkpoint: str | Path, *, cuts: bool) -> str | None:
    """A warning when a model is cut that was not trained to be cut (None when it was, or nothing is cut)."""
    if not cuts:
        return None
    trained = truncation_training(checkpoint)
    if trained:
        return None
    why = ("its recipe uses no Matryoshka-family loss (matryoshka, matryoshka2d, starbucks)" if trained is False
           else "it has no embedtrain recipe, so whether it was trained for this is unknown")
    return (f"{checkpoint} was not trained to be cut ({why}): expect a large quality drop; evaluate the export "
            "(embedtrain eval) before using it")


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_size(model, layers: int | None, dim: int | None, *, source: str | Path | None = None) -> tuple[int, int]:
    """Resolve ``None`` to the full size and reject sizes the model does not have."""
    depth, width = num_layers(model), embedding_dim(model)
    layers = depth if layers is None else layers
    dim = width if dim is None else dim
    if not 1 <= layers <= depth:
        raise CheckpointError(f"--layers {layers} is outside 1..{depth} (the model has {depth} layers)",
                              file=source, field="--layers")
    if not 1 <= dim <= width:
        raise CheckpointError(f"--dim {dim} is outside 1..{width} (the model's embeddings have {width} dims)",
                              file=source, field="--dim")
    return layers, dim


def export_small_model(checkpoint: str | Path, output_dir: str | Path, *, layers: int | None = None,
                       dim: int | None = None, overwrite: bool = False, model=None,
                       trust_remote_code: bool = False) -> ExportResult:
    """Save the first ``layers`` layers / first ``dim`` dims of ``checkpoint`` to ``output_dir``.

    ``model`` may be passed when the checkpoint is already loaded (it is not modified).
    """
    output_dir = check_new_dir(output_dir, overwrite=overwrite, protect=(resolve_model_path(checkpoint),))
    if model is None:
        model = load_model(checkpoint, device="cpu", trust_remote_code=trust_remote_code)
    layers, dim = check_size(model, layers, dim, source=checkpoint)
    warning = truncation_warning(checkpoint, cuts=(layers, dim) != (num_layers(model), embedding_dim(model)))
    if warning:
        logger.warning("%s", warning)
    small = truncated_copy(model, layers=layers, dim=dim)
    result = ExportResult(str(checkpoint), output_dir, layers, dim, num_layers(model), embedding_dim(model),
                          _count(model), _count(small), warning)

    def save(folder: str) -> None:
        small.save(folder)
        info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
        Path(folder, EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(save, output_dir)
    logger.info("exported %d/%d layers, %d/%d dims (%.1fM -> %.1fM parameters) to %s", layers,
                result.full_layers, dim, result.full_dim, result.params_full / 1e6, result.params_exported / 1e6,
                output_dir)
    return result
