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
from embedtrain.io.checkpoints import atomic_save, check_new_dir
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
    small = truncated_copy(model, layers=layers, dim=dim)
    result = ExportResult(str(checkpoint), output_dir, layers, dim, num_layers(model), embedding_dim(model),
                          _count(model), _count(small))

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
