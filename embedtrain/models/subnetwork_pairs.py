"""(layer, dim) sub-network lists for 2D-Matryoshka / Starbucks training, and their defaults.

A *sub-network* ``(L, D)`` of a sentence-transformer is its first ``L`` transformer layers with the
embedding cut to its first ``D`` dimensions (what :func:`embedtrain.models.truncate.truncated_copy`
builds and ``embedtrain export`` saves).

Default list (scaling rule)
---------------------------
The Starbucks paper trains BERT-base (12 layers, 768 dims) on
``(2,32) (4,64) (6,128) (8,256) (10,512) (12,768)``. For a model with ``N`` layers and width ``H``
each reference pair ``(l, d)`` becomes ``(max(1, round(l * N / 12)), max(1, round(d * H / 768)))``:
layers scale with depth, dims with width, so the list keeps its shape (the last pair is always the
full model). Pairs that collapse onto the same (layer, dim) after rounding are kept once.
all-MiniLM-L6-v2 (6 layers, 384 dims) gets ``(1,16) (2,32) (3,64) (4,128) (5,256) (6,384)``.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The Starbucks paper's list for a 12-layer, 768-dim model.
REFERENCE_PAIRS: tuple[tuple[int, int], ...] = ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))
REFERENCE_LAYERS = 12
REFERENCE_DIM = 768

Pair = tuple[int, int]


def _round_half_up(x: float) -> int:
    """Round .5 up (Python's ``round`` rounds half to even, which makes the rule harder to state)."""
    return int(x + 0.5)


def default_pairs(num_layers: int, dim: int) -> list[Pair]:
    """The reference Starbucks pairs scaled to a model of ``num_layers`` layers and width ``dim``."""
    if num_layers < 1 or dim < 1:
        raise ValueError(f"model must have >= 1 layer and >= 1 dim, got {num_layers} layers, {dim} dims")
    pairs: list[Pair] = []
    for ref_layer, ref_dim in REFERENCE_PAIRS:
        pair = (max(1, _round_half_up(ref_layer * num_layers / REFERENCE_LAYERS)),
                max(1, _round_half_up(ref_dim * dim / REFERENCE_DIM)))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def default_layers(num_layers: int) -> list[int]:
    """Layer choices of the default pairs (for 2DMSE sampling)."""
    return sorted({layer for layer, _ in default_pairs(num_layers, REFERENCE_DIM)})


def default_dims(dim: int) -> list[int]:
    """Dim choices of the default pairs (for 2DMSE sampling)."""
    return sorted({d for _, d in default_pairs(REFERENCE_LAYERS, dim)})


def validate_pairs(pairs: Sequence[Sequence[int]], num_layers: int, dim: int) -> list[Pair]:
    """Check a user-given pair list against a model; return it as a list of ``(layer, dim)`` tuples.

    Rules: each item is two integers ``[layer, dim]`` with ``1 <= layer <= num_layers`` and
    ``1 <= dim <= dim``; the list runs from small to large (layers and dims never decrease) and has
    no duplicates. Raises :class:`ValueError` naming the offending item.
    """
    if not pairs:
        raise ValueError("the pair list is empty")
    out: list[Pair] = []
    for i, item in enumerate(pairs):
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise ValueError(f"pairs[{i}] must be [layer, dim] (two integers), got {item!r}")
        layer, d = int(item[0]), int(item[1])
        if not 1 <= layer <= num_layers:
            raise ValueError(f"pairs[{i}] = [{layer}, {d}]: layer {layer} is outside 1..{num_layers} "
                             f"(the model has {num_layers} layers)")
        if not 1 <= d <= dim:
            raise ValueError(f"pairs[{i}] = [{layer}, {d}]: dim {d} is outside 1..{dim} "
                             f"(the model's embeddings have {dim} dims)")
        if out:
            prev_layer, prev_dim = out[-1]
            if (layer, d) == (prev_layer, prev_dim) or (layer, d) in out:
                raise ValueError(f"pairs[{i}] = [{layer}, {d}] is listed twice")
            if layer < prev_layer or d < prev_dim:
                raise ValueError(f"pairs must go from small to large: pairs[{i}] = [{layer}, {d}] comes after "
                                 f"[{prev_layer}, {prev_dim}] (layers and dims may not decrease)")
        out.append((layer, d))
    return out


def validate_choices(values: Sequence[int], upper: int, what: str) -> list[int]:
    """Check a list of layer counts or dims (each in ``1..upper``); return it sorted and de-duplicated."""
    if not values:
        raise ValueError(f"the list of {what} is empty")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{what} must be integers, got {v!r}")
        if not 1 <= v <= upper:
            raise ValueError(f"{what} value {v} is outside 1..{upper}")
    return sorted(set(values))
