"""Typed settings for hard-negative mining.

* :class:`NegativeFilter` - which retrieved documents may become negatives: a rank window and the
  positive-aware false-negative thresholds of NV-Retriever (absolute / relative margin to the
  query-positive score), plus plain score bounds. Shared by offline mining and by dynamic
  re-mining with fresh retrieval.
* :class:`OfflineMiningConfig` - one ``embedtrain mine`` run.
* :class:`DynamicMiningConfig` / :class:`DatasetMiningConfig` - the ``mining:`` section of a
  training dataset in a recipe (Conan-embedding style re-mining while training).

These are pydantic models with ``extra="forbid"`` like the rest of the recipe schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from embedtrain.errors import RecipeError
from embedtrain.schema.base import StrictModel


class NegativeFilter(StrictModel):
    """Rank window and false-negative filters applied to a query's retrieved documents.

    Ranks count retrieved documents after removing the query's own positives (and the query text
    itself), starting at 0: ``range_min=10, range_max=100`` keeps ranks 10..99, skipping the ten
    nearest documents, which are the likeliest unlabeled positives.

    A candidate is dropped as a likely false negative when its score is too close to the
    positive's score ``p`` (the lowest one if a query has several positives):

    * ``absolute_margin=m``: dropped if ``score > p - m``;
    * ``relative_margin=r``: dropped if ``score > p - |p| * r`` (NV-Retriever's "TopK-PercPos"
      with ``r=0.05`` keeps negatives scoring below 95% of the positive);
    * ``max_score`` / ``min_score``: absolute bounds on the score.
    """

    range_min: int = Field(default=0, ge=0, description="Skip this many top-ranked non-positive documents.")
    range_max: int = Field(default=100, gt=0, description="Consider documents ranked below this.")
    absolute_margin: float | None = Field(default=None, description="Drop a candidate scoring above positive - margin.")
    relative_margin: float | None = Field(default=None, ge=0, description=(
        "Drop a candidate scoring above positive - |positive| * margin (e.g. 0.05)."))
    max_score: float | None = Field(default=None, description="Drop candidates scoring above this.")
    min_score: float | None = Field(default=None, description="Drop candidates scoring below this.")

    @model_validator(mode="after")
    def _window(self) -> NegativeFilter:
        if self.range_min >= self.range_max:
            raise ValueError(f"range_min ({self.range_min}) must be smaller than range_max ({self.range_max})")
        return self

    def filter_only(self) -> NegativeFilter:
        """A copy holding only the filter fields (drops subclass fields)."""
        return NegativeFilter(**{k: getattr(self, k) for k in NegativeFilter.model_fields})


def parse_column_map(items: list[str] | None) -> dict[str, str]:
    """``["anchor=question", "positive=answer"]`` (``--column`` options) -> ``{"anchor": "question", ...}``."""
    columns = {}
    for item in items or []:
        if "=" not in item:
            raise RecipeError(f"'{item}' must look like role=column", field="--column")
        role, name = item.split("=", 1)
        columns[role.strip()] = name.strip()
    return columns


class OfflineMiningConfig(NegativeFilter):
    """One offline mining run: encode a corpus, retrieve per query, filter, write negatives.

    ``input`` holds (anchor, positive) pairs (any file ``embedtrain`` reads; roles found by name or
    mapped with ``columns``). The corpus is ``corpus`` (a file with a ``corpus_column`` text column,
    or a ``.txt`` file with one document per line) plus all positives; without ``corpus`` the
    positives alone are the corpus.

    The output has one line per input pair: ``anchor``, ``positive``, ``positive_score``,
    ``negatives`` (``num_negatives`` entries ``{"text", "score"}``, best ranked first) and, with
    ``candidates > 0``, ``candidates``: the next ranked filtered documents, which dynamic re-mining
    draws from. It is read directly by the ``hard_negatives`` data format.
    """

    model: str = Field(description="Model that embeds queries and documents (folder or packaged name).")
    input: str = Field(description="File of (anchor, positive) pairs.")
    output: str = Field(description="Output file (.jsonl or .parquet).")
    corpus: str | None = Field(default=None, description=(
        "Documents to mine from (file with a text column, or .txt); default: the positives."))
    columns: dict[str, str] = Field(default_factory=dict, description="Map a role to a column: anchor=question.")
    corpus_column: str = Field(default="text", description="Text column of the corpus file.")
    num_negatives: int = Field(default=5, gt=0, description="Negatives per pair.")
    candidates: int = Field(default=0, ge=0, description="Extra ranked candidates to keep (for dynamic mining).")
    batch_size: int = Field(default=64, gt=0, description="Encoding batch size.")
    query_chunk_size: int = Field(default=1024, gt=0, description="Queries per search block.")
    corpus_chunk_size: int = Field(default=65536, gt=0, description="Documents per search block.")
    use_faiss: bool = Field(default=False, description="Search with a faiss flat index instead of torch.")
    cross_encoder: str | None = Field(default=None, description="CrossEncoder folder that rescores candidates.")
    query_prompt: str | None = Field(default=None, description="Text prepended to queries.")
    passage_prompt: str | None = Field(default=None, description="Text prepended to documents.")
    max_seq_length: int | None = Field(default=None, gt=0, description=(
        "Truncate texts to this many tokens (use the length the model will be trained at)."))
    device: str | None = Field(default=None, description="cpu, cuda, cuda:1 ...")
    exclude_query_text: bool = Field(default=True, description="Never use the query's own text as a negative.")
    keep_incomplete: bool = Field(default=False, description="Keep rows that found too few negatives.")
    max_samples: int | None = Field(default=None, gt=0, description="Only mine the first N pairs.")
    engine: Literal["embedtrain", "sentence-transformers"] = Field(default="embedtrain", description=(
        "embedtrain, or sentence-transformers' own mine_hard_negatives."))
    trust_remote_code: bool = Field(default=False, description="Allow the model folders to run their own code.")

    @model_validator(mode="after")
    def _enough_room(self) -> OfflineMiningConfig:
        wanted = self.num_negatives + self.candidates
        if wanted > self.range_max - self.range_min:
            raise ValueError(
                f"num_negatives + candidates ({wanted}) does not fit in the rank window "
                f"[{self.range_min}, {self.range_max}); raise range_max")
        return self


class DynamicMiningConfig(NegativeFilter):
    """Conan-embedding dynamic hard-negative re-mining for one ``hard_negatives`` dataset.

    Every ``every_steps`` optimizer steps the current model re-scores examples (``scope``: the
    ones read since the last round, or ``all``). An example's negatives count as *easy* when the
    mean query-negative cosine ``current`` satisfies ``current < initial / easy_ratio`` and
    ``|current| < easy_abs``, where ``initial`` is that mean when those negatives were first put
    in place. Easy negatives are replaced by the next ``num_negatives`` entries of the row's
    ranked list (``source: candidates``: the row's extra negatives, then its
    ``candidates_column``, as written by ``embedtrain mine --candidates``), or by a fresh retrieval
    with the current model over ``corpus`` (``source: retrieve``; filtered with this section's
    rank window and margins).

    Conan's window (the defaults): the top ``range_min`` (10) non-positive documents are never used, they
    are the likeliest unlabeled positives. With ``source: retrieve`` and ``window: conan`` a row's ``i``-th
    set of negatives (the mined ones are set 1) comes from ranks ``[(i-1)*n + range_min, i*n + range_min)``
    of the fresh retrieval (``n = num_negatives``), up to ``range_max``; a negative once found easy is never
    picked again for that row (in either window mode). ``window: fixed`` takes the best ``n`` candidates of
    ``[range_min, range_max)`` every time. With ``source: candidates`` the row walks down its mined ranked
    list, so mine it with the same window (``embedtrain mine --range-min 10``).

    ``initial_from: file`` takes each row's ``initial`` score from the mined file (the mean of the
    ``score`` of its first ``num_negatives`` negatives, as ``embedtrain mine`` writes them) instead of
    re-encoding every row with the model when training starts. That pass costs as much as mining the
    queries again, so skip it on large data; it is only right when training starts from the model
    (and prompts) the file was mined with, and not after ``--cross-encoder`` rescoring (the file's
    scores are then cross-encoder scores, not cosines).
    """

    range_min: int = Field(default=10, ge=0, description=(
        "Skip this many top-ranked non-positive documents (Conan: 10)."))
    window: Literal["conan", "fixed"] = Field(default="conan", description=(
        "source retrieve: the i-th refresh takes ranks [(i-1)n+range_min, in+range_min) (conan) or the best "
        "of [range_min, range_max) (fixed)."))
    every_steps: int = Field(default=100, gt=0)
    easy_ratio: float = Field(default=1.15, gt=0)
    easy_abs: float = Field(default=0.8, gt=0)
    source: Literal["candidates", "retrieve"] = "candidates"
    scope: Literal["seen", "all"] = "seen"
    max_rescore: int | None = Field(default=None, gt=0)
    initial_from: Literal["model", "file"] = "model"
    candidates_column: str = "candidates"
    corpus: str | None = None
    corpus_column: str = "text"
    batch_size: int = Field(default=64, gt=0)


class DatasetMiningConfig(StrictModel):
    """The ``mining:`` section of a training dataset."""

    dynamic: DynamicMiningConfig | None = None
