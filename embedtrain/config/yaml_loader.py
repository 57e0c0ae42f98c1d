"""Load YAML while remembering the line of every key, so config errors can point at the right line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from embedtrain.errors import RecipeError

#: Maps a path of keys/indices (as in pydantic error ``loc`` tuples) to a 1-based line number.
LineIndex = dict[tuple[Any, ...], int]


def _index_node(node: yaml.Node, path: tuple[Any, ...], index: LineIndex) -> None:
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            index[path + (key,)] = key_node.start_mark.line + 1
            _index_node(value_node, path + (key,), index)
            index[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_node(item, path + (i,), index)


def load_yaml_with_lines(path: str | Path) -> tuple[Any, LineIndex]:
    """Parse ``path`` and return ``(data, line_index)``.

    Raises :class:`RecipeError` naming the file and line for a missing file or a YAML syntax error.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError("recipe file not found", file=path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RecipeError(f"malformed YAML: {exc.problem or exc}", file=path, line=line) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"malformed YAML: {exc}", file=path) from None
    index: LineIndex = {}
    if node is not None:
        _index_node(node, (), index)
    return data, index


def line_for(index: LineIndex, loc: tuple[Any, ...]) -> int | None:
    """Best line for a (possibly deeper than indexed) location: walk up until a key is known."""
    loc = tuple(loc)
    while loc:
        if loc in index:
            return index[loc]
        loc = loc[:-1]
    return index.get(())
