"""Dataset sections of recipes: training datasets, plain-text datasets (SMAE), in-training evaluators."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator

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
    #: Prompt of the passage side, saved as ``<dataset>-document`` (``document_prompt`` is accepted too).
    passage_prompt: str | None = Field(default=None, validation_alias=AliasChoices("passage_prompt", "document_prompt"))
    #: A task instruction (e5-mistral style): formatted by the recipe's ``instructions.template`` into the
    #: query prompt; the passage side gets none unless ``symmetric`` (then both sides get it).
    instruction: str | None = None
    symmetric: bool = False
    loss: LossConfig | None = None
    #: Hard-negative re-mining while training (embedtrain.mining), e.g. ``{dynamic: {every_steps: 100}}``.
    mining: DatasetMiningConfig | None = None
    #: Share of batches drawn from this dataset, relative to the other datasets' weights (all or none set).
    weight: float | None = Field(default=None, gt=0)
    #: A column of the file whose equal values mark rows that must not be in-batch negatives of each other
    #: (e.g. the class of classification data turned into pairs): no batch then holds two rows of one label.
    label_column: str | None = None
    #: Read the file while training instead of preparing a cached Arrow copy first (data larger than the disk
    #: cache). Needs ``training.max_steps``; no duplicate-free batches, no shuffling, one dataset per recipe,
    #: no dynamic mining; rows are checked as they are read (docs/scale.md).
    streaming: bool = False


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
    names sentence-transformers' ``encode_query`` / ``encode_document`` and mteb look up (``document`` is
    accepted as the key here too).
    """

    query: str | None = None
    passage: str | None = Field(default=None, validation_alias=AliasChoices("passage", "document"))


EvaluatorKind = Literal["sts", "retrieval", "classification"]


class EvaluatorConfig(StrictModel):
    """A sentence-transformers evaluator run before and after training, and every ``eval_steps`` when
    ``training.eval_strategy`` is ``steps`` (embedtrain.evaluation.evaluators).

    The data is either a file / folder (``path``) or a local evaluation task by name (``task``: a bundled task
    found in ``data_dir``, or one defined in ``task_config``):

    * ``sts``: scored pairs (``sentence1``, ``sentence2``, ``score``); cosine Spearman.
    * ``retrieval``: a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``); nDCG@10.
    * ``classification``: labelled texts (``text``, ``label``); ``path`` is scored, ``train_path`` fits the
      logistic-regression classifier; accuracy.

    ``columns`` maps roles to file columns; ``max_samples`` caps the rows (retrieval: the queries).
    """

    name: str = Field(pattern=NAME_PATTERN)
    type: EvaluatorKind = "sts"
    path: str | None = None
    train_path: str | None = None
    task: str | None = None
    task_config: str | None = None
    data_dir: str | None = None
    split: str | None = None
    file_type: FileType | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    max_samples: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=64, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> EvaluatorConfig:
        if (self.path is None) == (self.task is None):
            raise ValueError("give either 'path' (a file, or a BEIR folder for retrieval) or 'task' (a local "
                             "evaluation task by name), not both")
        if self.task is None and (self.task_config is not None or self.data_dir is not None):
            raise ValueError("'task_config' and 'data_dir' only apply with 'task'")
        if self.path is not None and self.type == "classification" and self.train_path is None:
            raise ValueError("a classification evaluator needs 'train_path' (the labelled texts the classifier is "
                             "fitted on) besides 'path' (the texts it is scored on)")
        if self.train_path is not None and (self.type != "classification" or self.path is None):
            raise ValueError("'train_path' only applies to a classification evaluator given by 'path'")
        return self
