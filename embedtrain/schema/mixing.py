"""Rules for mixing several training datasets: per-dataset ``weight``, ``sampling_temperature``, ``label_column``.

Checked when a recipe is loaded, so a mixture that cannot work is one located error before any data is read.
The sampler itself lives in :mod:`embedtrain.train.mixing`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from embedtrain.io.formats import FORMATS

#: Formats whose rows may carry a ``label_column`` (their loss reads no label of its own).
LABEL_FORMATS = frozenset(name for name, spec in FORMATS.items() if spec.score_role is None and name != "text")


def dataset_locations(recipe: Any) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """``(location, dataset config)`` of every training dataset of a contrastive or task recipe."""
    tasks = getattr(recipe, "tasks", None)
    if tasks is not None:
        for i, task in enumerate(tasks):
            for j, ds in enumerate(task.datasets):
                yield ("tasks", i, "datasets", j), ds
    else:
        for i, ds in enumerate(getattr(recipe, "datasets", [])):
            yield ("datasets", i), ds


def check_mixing(recipe: Any) -> None:
    """Weights on all datasets or none; weights, temperature and round-robin exclude each other; labels on
    formats that take them."""
    located = list(dataset_locations(recipe))
    weighted = [(loc, ds) for loc, ds in located if ds.weight is not None]
    temperature = getattr(recipe, "sampling_temperature", None)
    sampler = getattr(recipe, "multi_dataset_sampler", "proportional")
    if weighted and len(weighted) != len(located):
        loc, ds = next((loc, ds) for loc, ds in located if ds.weight is None)
        raise recipe.error(f"dataset '{ds.name}' has no weight but others do; give every dataset a weight (the "
                           "shares are weight / sum of weights)", *loc)
    if weighted and temperature is not None:
        raise recipe.error("give per-dataset weights or sampling_temperature, not both", "sampling_temperature")
    if (weighted or temperature is not None) and sampler == "round_robin":
        where = ("sampling_temperature",) if temperature is not None else (*weighted[0][0], "weight")
        raise recipe.error("weights and sampling_temperature replace the multi_dataset_sampler; remove "
                           "multi_dataset_sampler: round_robin", *where)
    for loc, ds in located:
        if ds.label_column is not None and ds.format not in LABEL_FORMATS:
            raise recipe.error(f"label_column applies to formats {sorted(LABEL_FORMATS)} (rows whose in-batch "
                               f"negatives must not share a label), not '{ds.format}'", *loc, "label_column")
        if ds.label_column is not None and ds.mining is not None and ds.mining.dynamic is not None:
            raise recipe.error("label_column cannot be combined with dynamic mining (the re-mined dataset view "
                               "does not carry labels)", *loc, "label_column")
