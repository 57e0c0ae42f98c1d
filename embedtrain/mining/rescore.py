"""Optional second-stage rescoring of mined candidates (usually a cross-encoder).

A :data:`Rescorer` maps aligned lists of queries and documents to one relevance score per pair.
When a mining run has one, the retrieved candidates and the positives are rescored with it, the
candidates are re-ranked by the new scores, and the rank window and margins apply to those scores
(so margins are then in the cross-encoder's units, e.g. logits, not cosine).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from embedtrain.models.resolve import resolve_model_path

Rescorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def load_cross_encoder(name_or_path: str | Path, *, device: str | None = None, base_dir: Path | None = None,
                       trust_remote_code: bool = False):
    """A local sentence-transformers ``CrossEncoder`` (errors name the ``cross_encoder`` field)."""
    from sentence_transformers import CrossEncoder

    from embedtrain.models.trust import check_model_code

    path = resolve_model_path(name_or_path, base_dir=base_dir, field="cross_encoder")
    check_model_code(path, trust_remote_code=trust_remote_code)
    return CrossEncoder(str(path), device=device, local_files_only=True, trust_remote_code=trust_remote_code)


def cross_encoder_rescorer(name_or_path: str | Path, *, batch_size: int = 32, device: str | None = None,
                           base_dir: Path | None = None, trust_remote_code: bool = False) -> Rescorer:
    """A :data:`Rescorer` backed by a local sentence-transformers ``CrossEncoder`` folder."""
    model = load_cross_encoder(name_or_path, device=device, base_dir=base_dir, trust_remote_code=trust_remote_code)

    def rescore(queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        if len(queries) == 0:
            return np.zeros(0, dtype=np.float32)
        scores = model.predict(list(zip(queries, documents)), batch_size=batch_size, show_progress_bar=False,
                               convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(queries), -1)[:, 0]

    return rescore
