"""The ``merge_with_start:`` section of a contrastive recipe: WiSE-FT after training (docs/generalization.md).

::

    merge_with_start:
      alpha: auto                      # or a weight of the trained model in (0, 1]
      dev: ../examples/data/stsb/dev.jsonl   # the target's dev split (scored pairs); never a test split
      general_text: null               # unlabeled sentences (.txt one per line, or rows with a text column);
                                       # null: the bundled embedtrain/resources/general_sentences.txt
      grid: [0.3, 0.4, 0.5, 0.7, 1.0]
      keep: 0.9

The selection rule and the merge are in :mod:`embedtrain.soup.merge_start`. Paths are relative to the recipe.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from embedtrain.schema.base import StrictModel

#: File-name words that mark a test split (a selection split must never be one).
TEST_SPLIT_WORDS = frozenset({"test", "tests", "testset", "testing"})


def looks_like_test_split(path: str) -> bool:
    """True when the file name (or its folder's name) says it is a test split: ``test.jsonl``, ``stsb_test.json``,
    ``sts-test.csv``, ``test/pairs.jsonl``. Words are split at every non-alphanumeric character."""
    p = PurePath(path)
    words = set(re.split(r"[^a-z0-9]+", p.name.lower()))
    return bool(words & TEST_SPLIT_WORDS) or p.parent.name.lower() in TEST_SPLIT_WORDS


class MergeWithStartConfig(StrictModel):
    """Merge the trained weights with the start model's after training; ``alpha`` is the trained model's weight.

    ``alpha: auto`` picks it from ``grid``: among the candidates that keep at least ``keep`` of the best gain on
    ``dev`` (the target's dev split, scored pairs: cosine Spearman), the one whose cosine similarities on
    ``general_text`` pairs agree most with the start model's. ``num_pairs`` random pairs of those sentences are
    scored. ``max_dev_pairs`` keeps the first dev rows only (faster). With a fixed alpha, ``dev`` is optional and
    only reported.
    """

    alpha: Literal["auto"] | float = "auto"
    dev: str | None = None
    dev_columns: dict[str, str] = Field(default_factory=dict)
    general_text: str | None = None
    grid: list[float] = Field(default_factory=lambda: [0.3, 0.4, 0.5, 0.7, 1.0], min_length=1)
    keep: float = Field(default=0.9, gt=0, le=1)
    num_pairs: int = Field(default=2000, gt=0)
    max_dev_pairs: int | None = Field(default=None, gt=2)
    batch_size: int = Field(default=64, gt=0)

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, alpha: float | str) -> float | str:
        if alpha != "auto" and not 0 < float(alpha) <= 1:
            raise ValueError(f"alpha must be in (0, 1] (the weight of the trained model; 1 = no merge) or 'auto', "
                             f"got {alpha}")
        return alpha

    @field_validator("grid")
    @classmethod
    def _grid_range(cls, grid: list[float]) -> list[float]:
        bad = [a for a in grid if not 0 < a <= 1]
        if bad:
            raise ValueError(f"every grid weight must be in (0, 1], got {bad}")
        return grid

    @field_validator("dev", "general_text")
    @classmethod
    def _not_a_test_split(cls, path: str | None) -> str | None:
        if path is not None and looks_like_test_split(path):
            raise ValueError(f"'{path}' looks like a test split; the merge weight is chosen on dev data only (a "
                             "test split would make the scores you report on it biased). Use the dev split")
        return path

    @model_validator(mode="after")
    def _auto_needs_dev(self) -> MergeWithStartConfig:
        if self.alpha == "auto" and self.dev is None:
            raise ValueError("alpha: auto chooses the weight on dev data: set 'dev' to the target's dev split "
                             "(scored pairs: sentence1, sentence2, score), or give a fixed alpha")
        return self


def check_merge_section(recipe) -> None:
    """Rules between ``merge_with_start`` and the rest of a recipe (located errors; no file is read)."""
    merge = recipe.merge_with_start
    if recipe.model.lora is not None:
        raise recipe.error("merge_with_start does not apply to a model.lora run (a merge with the start model "
                           "only scales the adapter's update); train without model.lora or drop merge_with_start",
                           "merge_with_start")
    if merge.dev is not None:
        dev = recipe.resolve_path(merge.dev).resolve()
        for i, ds in enumerate(recipe.datasets):
            if ds.path is not None and recipe.resolve_path(ds.path).resolve() == dev:
                raise recipe.error(f"the dev file is training dataset '{ds.name}'; choose the merge weight on a "
                                   "split the run does not train on", "merge_with_start", "dev")
