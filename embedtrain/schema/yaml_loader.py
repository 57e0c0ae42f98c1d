"""Load YAML while remembering the line of every key, so config errors can point at the right line.

Two deviations from PyYAML's defaults, both towards what people write in configs:

* Numbers follow YAML 1.2: ``1e-5`` and ``5E+3`` are floats (PyYAML's YAML 1.1 rules read them as the
  *strings* ``"1e-5"``, which then fail deep inside a trainer, far from the recipe line).
* Files must be UTF-8 (a leading byte-order mark is accepted); anything else is one error naming the file
  and the byte offset of the first undecodable byte.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from embedtrain.errors import RecipeError
from embedtrain.io.text import read_text_utf8

#: Maps a path of keys/indices (as in pydantic error ``loc`` tuples) to a 1-based line number.
LineIndex = dict[tuple[Any, ...], int]

#: YAML 1.2 core-schema floats (plus PyYAML's 1.1 forms with a dot, which it already handles).
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
                           |[-+]?\.(?:inf|Inf|INF)
                           |\.(?:nan|NaN|NAN))$""", re.X)


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads YAML 1.2 floats (``1e-5``) as floats."""


# Replace the float resolver (PyYAML keeps resolvers per first character, in a class-level dict).
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def _float_or_int(loader: ConfigLoader, node: yaml.ScalarNode) -> Any:
    """Plain integers that the float pattern also matches (``10``) stay ints."""
    text = loader.construct_scalar(node)
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    return loader.construct_yaml_float(node)


ConfigLoader.add_constructor("tag:yaml.org,2002:float", _float_or_int)


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


def parse_yaml(text: str) -> Any:
    """Parse one YAML value with the config rules (YAML 1.2 floats); used for ``--set`` values too."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader


def load_yaml_with_lines(path: str | Path, *, what: str = "recipe") -> tuple[Any, LineIndex]:
    """Parse ``path`` and return ``(data, line_index)``.

    Raises :class:`RecipeError` naming the file and line for a missing file, bytes that are not UTF-8
    or a YAML syntax error.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{what} file not found" if not path.is_dir() else f"{what} path is a folder, not a file",
                          file=path)
    text = read_text_utf8(path, error=RecipeError)
    try:
        data = parse_yaml(text)
        node = yaml.compose(text, Loader=ConfigLoader)  # noqa: S506
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
