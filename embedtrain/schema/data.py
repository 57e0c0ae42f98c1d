"""Dataset sections of recipes: training datasets, plain-text datasets (SMAE), in-training evaluators."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from embedtrain.schema.base import StrictModel
from embedtrain.schema.loss import LossConfig
from embedtrain.schema.mining import DatasetMiningConfig

DataFormat = Literal["pairs", "triplets", "hard_negatives", "scored_pairs", "scored_negatives", "text"]
#: Where a dataset's rows come from; ``hub`` is a dataset name on the Hugging Face hub (online users).
FileType = Literal["jsonl", "json", "parquet", "csv", "hf_disk", "hub"]
#: Data formats whose rows carry hard negatives (what dynamic re-mining replaces).
NEGATIVE_FORMATS: frozenset[str] = frozenset({"hard_negatives"})

NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"


class DatasetConfig(StrictModel):
    """One training dataset.

    ``columns`` maps a role of the format (``anchor``, ``positive``, ``negative``, ``negatives``,
    ``sentence1``, ``sentence2``, ``score``, ``positive_score``, ``scores``, ``text``) to the column name in
    the file; roles left out are found by their usual names (``query``, ``pos``, ``label``...).
    ``scored_negatives`` rows carry teacher scores (score distillation); ``text`` rows are one text each
    (embedding distillation on unlabeled text).
    """

    name: str = Field(pattern=NAME_PATTERN)
    path: str
    format: DataFormat
    file_type: FileType | None = None
    split: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    num_negatives: int | None = Field(default=None, gt=0)
    max_samples: int | None = Field(default=None, gt=0)
    query_prompt: str | None = None
    passage_prompt: str | None = None
    loss: LossConfig | None = None
    #: Hard-negative re-mining while training (embedtrain.mining), e.g. ``{dynamic: {every_steps: 100}}``.
    mining: DatasetMiningConfig | None = None


class TextDatasetConfig(StrictModel):
    """A plain-text dataset: one text per row, found in column ``text`` (or mapped with ``columns``)."""

    name: str = Field(pattern=NAME_PATTERN)
    path: str
    format: Literal["text"] = "text"
    file_type: FileType | None = None
    split: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    max_samples: int | None = Field(default=None, gt=0)


class PromptsConfig(StrictModel):
    """Model-level prompts saved into the checkpoint.

    ``query`` is saved as the checkpoint's ``query`` prompt and ``passage`` as its ``document`` prompt: the
    names sentence-transformers' ``encode_query`` / ``encode_document`` and mteb look up.
    """

    query: str | None = None
    passage: str | None = None


class EvaluatorConfig(StrictModel):
    """A quick STS check run before and after training (cosine Spearman x 100).

    ``path`` is a scored-pairs file (``sentence1``, ``sentence2``, ``score``, mappable by ``columns``).
    """

    name: str
    type: Literal["sts"] = "sts"
    path: str
    file_type: FileType | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    max_samples: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=64, gt=0)
