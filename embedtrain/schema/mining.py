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

    Under ``accelerate launch -m embedtrain mine ...`` the corpus and query encoding, the search, the rescoring
    and the writing are split across the processes (docs/scale.md); the result is the same file.
    """

    model: str = Field(description="Model that embeds queries and documents (folder, hub id or packaged name).")
    input: str = Field(description=(
        "File of (anchor, positive) pairs, or a BEIR folder (pairs from qrels/<split>.tsv, title + text)."))
    output: str = Field(description="Output file (.jsonl or .parquet).")
    corpus: str | None = Field(default=None, description=(
        "Documents to mine from (file with a text column, .txt, or a BEIR folder: title + text); default: "
        "the BEIR input's corpus, else the positives."))
    split: str = Field(default="train", description="qrels split of a BEIR folder given as input.")
    columns: dict[str, str] = Field(default_factory=dict, description="Map a role to a column: anchor=question.")
    corpus_column: str = Field(default="text", description="Text column of the corpus file.")
    num_negatives: int = Field(default=5, gt=0, description="Negatives per pair.")
    candidates: int = Field(default=0, ge=0, description="Extra ranked candidates to keep (for dynamic mining).")
    batch_size: int = Field(default=64, gt=0, description="Encoding batch size.")
    query_chunk_size: int = Field(default=1024, gt=0, description="Queries per search block.")
    corpus_chunk_size: int = Field(default=16384, gt=0, description=(
        "Documents per search block: exact search holds query_chunk_size x corpus_chunk_size scores at a time "
        "(64 MB by default), whatever the corpus size."))
    use_faiss: bool = Field(default=False, description="Exact search with a faiss flat index instead of torch.")
    index: Literal["exact", "ivf", "hnsw"] = Field(default="exact", description=(
        "exact (default), or approximate faiss search: ivf (IVFFlat) or hnsw; recall@k against exact search "
        "is measured on recall_sample queries and reported."))
    ivf_lists: int | None = Field(default=None, gt=0, description="IVF cells (default 4 * sqrt(corpus size)).")
    ivf_probe: int = Field(default=32, gt=0, description="IVF cells searched per query.")
    hnsw_m: int = Field(default=32, gt=1, description="HNSW links per node.")
    hnsw_ef_search: int = Field(default=128, gt=0, description="HNSW search breadth (efSearch).")
    recall_sample: int = Field(default=1000, ge=0, description=(
        "Queries on which approximate search is compared with exact search (0: skip)."))
    embeddings_dir: str | None = Field(default=None, description=(
        "Folder for the memory-mapped embeddings (reused by later runs with the same model and texts); "
        "default: $EMBEDTRAIN_CACHE_DIR/mining or the datasets cache."))
    cross_encoder: str | None = Field(default=None, description=(
        "CrossEncoder (folder or hub id) that rescores candidates."))
    query_prompt: str | None = Field(default=None, description="Text prepended to queries.")
    passage_prompt: str | None = Field(default=None, description="Text prepended to documents.")
    max_seq_length: int | None = Field(default=None, gt=0, description=(
        "Truncate texts to this many tokens (use the length the model will be trained at)."))
    device: str | None = Field(default=None, description="cpu, cuda, cuda:1 ...")
    exclude_query_text: bool = Field(default=True, description="Never use the query's own text as a negative.")
    exclude_positive_copies: bool = Field(default=True, description=(
        "Never use a copy of a positive as its negative: equal up to case and spaces, or containing it (or "
        "contained in it) with at least half the longer text, e.g. a title + text corpus entry of a text-only "
        "positive."))
    keep_incomplete: bool = Field(default=False, description=(
        "Keep rows that found too few negatives (with the negatives they got) in the output (the "
        "hard_negatives format then trains every row with the fewest negatives of any row)."))
    keep_dropped: bool = Field(default=False, description=(
        "Write the rows dropped for too few negatives to <output>.dropped.jsonl, with the negatives they got "
        "and why (train on them with format: pairs)."))
    max_samples: int | None = Field(default=None, gt=0, description="Only mine the first N pairs.")
    engine: Literal["embedtrain", "sentence-transformers"] = Field(default="embedtrain", description=(
        "embedtrain, or sentence-transformers' own mine_hard_negatives."))
    trust_remote_code: bool = Field(default=False, description="Allow the model folders to run their own code.")
    share_query_vectors: bool = Field(default=True, description=(
        "A query whose text is also a corpus document takes the document's vector instead of being encoded "
        "again, when queries and documents embed alike (same prompt; checked on the longest shared texts)."))
    precision: Literal["fp32", "bf16", "auto"] = Field(default="fp32", description=(
        "Encode in fp32 (exact), bf16, or auto (bf16 autocast where the hardware has native bf16; faster)."))

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
    scores are then cross-encoder scores, not cosines). ``initial_from: first_use`` costs nothing: a row's
    ``initial`` is the score the loss computes the first time it trains on the row.

    ``reuse_similarities`` (default on): a round takes the score of every row trained on since the last
    round from the loss's own forward pass (training mode, the run's precision, before that step's update)
    instead of re-encoding it, and negatives put in place by a refresh take their ``initial`` from the next
    forward pass that trains on them. Rows the loss did not report (trained before a resume, or a loss
    that embeds its columns differently) are re-encoded. Dropout makes training-mode cosines lower than
    the eval-mode ones ``initial_from: model/file`` start from (all-MiniLM-L6-v2 on STSb pairs: 0.687 vs
    0.740), which alone would flag ~9% of rows as easy; so each round re-encodes ``reuse_calibration_rows``
    of the reported rows and maps the loss's scores onto the eval-mode scale with a least-squares line.
    With ``initial_from: first_use`` every score is the loss's, and no mapping is needed.
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
    initial_from: Literal["model", "file", "first_use"] = "model"
    candidates_column: str = "candidates"
    corpus: str | None = None
    corpus_column: str = "text"
    batch_size: int = Field(default=64, gt=0)
    #: Take each trained row's score from the loss's own forward pass instead of re-encoding it
    #: (embedtrain.mining.reuse); rows the loss could not report are re-encoded.
    reuse_similarities: bool = True
    #: Rows re-encoded per round to map the loss's scores (training mode: dropout lowers cosines) onto the
    #: scale of ``initial`` when that comes from the model or the file (a least-squares line); 0: no mapping.
    reuse_calibration_rows: int = Field(default=64, ge=0)

    @model_validator(mode="after")
    def _first_use_needs_reuse(self) -> DynamicMiningConfig:
        if self.initial_from == "first_use" and not self.reuse_similarities:
            raise ValueError("initial_from: first_use takes each row's first score from the loss; it needs "
                             "reuse_similarities: true")
        return self


class DatasetMiningConfig(StrictModel):
    """The ``mining:`` section of a training dataset."""

    dynamic: DynamicMiningConfig | None = None
