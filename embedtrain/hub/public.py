"""Making a checkpoint's text safe to publish: no local paths, no secrets, no unset fields.

* :func:`public_name` - a local path becomes its last component; Hub ids and short names stay.
* :func:`public_recipe` - a dumped recipe with every path-like field reduced to a name, secrets redacted and
  unset (``null``) fields left out: what the staged ``embedtrain_recipe.yaml`` and the card show.
* secrets: :func:`embedtrain.io.secrets.redact` masks the values of keys that name one (token, password...).
* :func:`scrub_paths` - absolute paths in free text (sentence-transformers' generated card) reduced to names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from embedtrain.io.secrets import redact

#: Recipe keys whose values are paths (anywhere in the recipe): reduced to their last component.
PATH_KEYS = frozenset({"path", "train_path", "data_dir", "task_config", "output", "output_dir", "name_or_path",
                       "guide", "teacher", "corpus", "beir_dir", "logging_dir", "resume_from_checkpoint",
                       "model", "ingredient"})
_ABSOLUTE = re.compile(r"^(?:/|~|[A-Za-z]:[\\/]|\\\\)")
#: An absolute POSIX path (or ~/...) in free text: not part of a URL or a word.
_PATH_IN_TEXT = re.compile(r"(?<![\w:/.<\-])(?:~/|/)[\w.@+\-]+(?:/[\w.@+\-]+)+/?")
#: Path keys whose value may also be a Hub id (``org/name``): kept when it is not a local path.
HUB_ID_KEYS = frozenset({"name_or_path", "guide", "teacher", "model", "ingredient"})


def _is_local(value: str) -> bool:
    p = Path(value).expanduser()
    return bool(_ABSOLUTE.match(value)) or value.startswith(".") or p.exists()


def public_name(value: str | None) -> str | None:
    """A path-free name: local paths become their last component; Hub ids and short names stay."""
    if value is None:
        return None
    if _is_local(value):
        return Path(value).expanduser().name or value
    return value


def drop_nulls(data: Any) -> Any:
    """A copy of ``data`` without ``None`` values in mappings (unset recipe fields)."""
    if isinstance(data, dict):
        return {k: drop_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [drop_nulls(v) for v in data]
    return data


def _path_value(value: str, *, hub_ok: bool) -> str:
    if hub_ok and value.count("/") == 1 and not _is_local(value):
        return value  # a Hub id (org/name)
    return Path(value).expanduser().name or value


def _paths_to_names(data: Any, key: str | None = None) -> Any:
    if isinstance(data, dict):
        # a data file path is a Hub id only for ``file_type: hub`` datasets
        out = {}
        for k, v in data.items():
            if k == "path" and isinstance(v, str):
                out[k] = _path_value(v, hub_ok=data.get("file_type") == "hub")
            else:
                out[k] = _paths_to_names(v, str(k))
        return out
    if isinstance(data, list):
        return [_paths_to_names(v, key) for v in data]
    if isinstance(data, str):
        if key in PATH_KEYS and ("/" in data or "\\" in data or _is_local(data)):
            return _path_value(data, hub_ok=key in HUB_ID_KEYS)
        if _ABSOLUTE.match(data):
            return Path(data).expanduser().name or data
    return data


def public_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """A copy of a dumped recipe fit to publish: paths reduced to names, secrets redacted, nulls left out."""
    data = json.loads(json.dumps(recipe, default=str))  # deep copy of plain data
    return drop_nulls(redact(_paths_to_names(data)))


def public_data(data: Any) -> Any:
    """Any other JSON-like record (soup.json, embedtrain_run.json): absolute paths to names, secrets redacted."""
    return redact(_paths_to_names(json.loads(json.dumps(data, default=str))))


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path (``/a/b/c`` or ``~/c``) replaced by its last component."""
    def name(match: re.Match) -> str:
        found = match.group(0).rstrip("/")
        return Path(found).name or found

    return _PATH_IN_TEXT.sub(name, text)
