"""Hugging Face hub model ids (``BAAI/bge-small-en-v1.5``) as local folders, through ``huggingface_hub``'s cache.

:func:`resolve_hub_model` looks in the hub cache first (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``: the layout ``models--org--name/snapshots/<commit>/`` with ``refs/<branch>``
that ``huggingface_hub`` writes) and downloads the snapshot only when it is missing and downloads are allowed.
Offline (``HF_HUB_OFFLINE=1``) or without a network, a missing model is one line that says so. The folder
returned is an ordinary snapshot folder, so the remote-code guard (:mod:`embedtrain.models.trust`) reads
it like any other and loading happens with ``local_files_only``.

A revision can follow the id: ``BAAI/bge-small-en-v1.5@<branch, tag or commit>``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from embedtrain.errors import CheckpointError, first_line

logger = logging.getLogger(__name__)

#: ``org/name`` or ``org/name@revision`` (a bare name has no org: those are local paths or packaged names).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*(@[A-Za-z0-9_.\-/]+)?$")
#: Files a sentence-transformers / transformers model never needs in PyTorch.
IGNORE_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*", "rust_model*", "onnx/*", "*.onnx",
                   "openvino/*", "coreml/*", "*.mlmodel", "*.tflite"]
_TRUE = {"1", "true", "yes", "on"}


def looks_like_hub_id(name: str) -> bool:
    """True for ``org/name`` (optionally ``@revision``) that is not written as a path (``./x``, ``/x``, ``~/x``)."""
    return bool(HUB_ID.match(name)) and not name.startswith((".", "/", "~")) and ".." not in name


def hub_offline() -> bool:
    """Downloads are off: ``HF_HUB_OFFLINE`` (read now, not when ``huggingface_hub`` was imported)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The hub cache folder: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_hub_model(name: str, *, tried: str = "", file: str | Path | None = None, line: int | None = None,
                      field: str | None = None) -> Path:
    """The snapshot folder of hub model ``name`` (``org/name[@revision]``): cached, else downloaded.

    ``tried`` lists the local paths already looked at (for the message when the model is found nowhere).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, _, revision = name.partition("@")
    cache = hub_cache_dir()
    where = f"not a local folder (tried {tried}) and " if tried else ""
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, cache_dir=str(cache),
                                      local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if hub_offline():
        raise CheckpointError(f"model '{name}' is {where}not in the Hugging Face cache ({cache}), and downloads are "
                              f"off (HF_HUB_OFFLINE=1): download it once online (`hf download {repo_id}`) or give a "
                              "local folder", file=file, line=line, field=field)
    logger.info("downloading %s from the Hugging Face hub into %s", name, cache)
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, cache_dir=str(cache),
                                      ignore_patterns=IGNORE_PATTERNS))
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise CheckpointError(f"model '{name}' is {where}not a model the Hugging Face hub gives access to "
                              f"({type(exc).__name__}; log in with `hf auth login` for private or gated models)",
                              file=file, line=line, field=field) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"model '{name}': revision '{revision}' not found on the Hugging Face hub",
                              file=file, line=line, field=field) from None
    except Exception as exc:  # noqa: BLE001 - no network, proxy, timeout...: one line, not a traceback
        raise CheckpointError(f"model '{name}' is {where}not in the Hugging Face cache ({cache}) and cannot be "
                              f"downloaded: {first_line(exc)[:300]} (offline? set HF_HUB_OFFLINE=1 and download it "
                              "where there is a network)", file=file, line=line, field=field) from None
