"""What a model folder is, read from its JSON files alone (no weights loaded): for checks at validate time.

:func:`model_shape` gives ``(transformer layers, embedding dim)`` of a sentence-transformers folder (or a bare
transformers folder, mean-pooled), following its modules: the transformer's hidden size, the pooling's
concatenated modes and ``Dense`` output sizes (the full width, before any ``truncate_dim``). It returns None when a module it
does not know changes the width; the check then happens when the model is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Config keys that hold the number of transformer layers / the hidden width, across architectures.
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
WIDTH_KEYS = ("hidden_size", "d_model", "n_embd", "dim")
POOLING_MODES = ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                 "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _first(config: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    text = config.get("text_config")
    return _first(text, keys) if isinstance(text, dict) else None


def model_shape(path: str | Path) -> tuple[int, int] | None:
    """``(layers, embedding dim)`` of the model folder at ``path``, or None when it cannot be told from files."""
    path = Path(path)
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        config = _json(path / "config.json")
        if config is None:
            return None
        layers, width = _first(config, LAYER_KEYS), _first(config, WIDTH_KEYS)
        return (layers, width) if layers and width else None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    layers: int | None = None
    dim: int | None = None
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = path / str(module.get("path", ""))
        if layers is None:  # the first module: the transformer
            config = _json(folder / "config.json")
            if config is None:
                return None
            layers, dim = _first(config, LAYER_KEYS), _first(config, WIDTH_KEYS)
            if layers is None or dim is None:
                return None
        elif kind == "Pooling":
            pooling = _json(folder / "config.json") or {}
            modes = sum(bool(pooling.get(m)) for m in POOLING_MODES) or 1
            dim = int(pooling.get("word_embedding_dimension", dim)) * modes
        elif kind == "Dense":
            dense = _json(folder / "config.json") or {}
            if not isinstance(dense.get("out_features"), int):
                return None
            dim = dense["out_features"]
        elif kind not in ("Normalize",):
            return None
    return (layers, dim) if layers and dim else None


def saved_max_seq_length(path: str | Path) -> int | None:
    """The length (tokens) a saved sentence-transformer encodes up to, from its files, without loading it.

    ``sentence_bert_config.json``'s ``max_seq_length`` (sentence-transformers < 6), else the tokenizer's
    ``model_max_length`` (where sentence-transformers 6 keeps it) in the folder or its first module folder.
    None when neither says (or the tokenizer's value is its "unlimited" sentinel).
    """
    path = Path(path)
    config = _json(path / "sentence_bert_config.json") or {}
    value = config.get("max_seq_length")
    if isinstance(value, int):
        return value
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        modules = None
    folders = [path] + ([path / str(m.get("path", "")) for m in modules[:1] if isinstance(m, dict)]
                        if isinstance(modules, list) else [])
    for folder in folders:
        value = (_json(folder / "tokenizer_config.json") or {}).get("model_max_length")
        if isinstance(value, int) and 0 < value < 1_000_000:
            return value
    return None
