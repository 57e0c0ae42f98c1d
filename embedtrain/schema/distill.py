"""The ``distill:`` section of a ``stage: distill`` recipe: teachers, the pair scorer, where their outputs are kept.

::

    distill:
      teachers:                                   # embedding teachers (embed_distill & co.)
        - {name: big, model: path/to/teacher, weight: 1.0, query_prompt: "query: "}
        - {name: other, model: path/to/second, weight: 0.5}      # several: weighted concatenation
      scorer: {kind: bi_encoder, model: all-mpnet-base-v2}      # scores rows that carry none (margin_mse...)
      cache_dir: .embedtrain_cache                 # relative to the recipe; reused by later runs
      dtype: float16                               # storage of the teacher vectors
      append_projection: false                     # see below

Teacher embeddings are computed once, before training, into a memory-mapped store under ``cache_dir``
(one folder per set of teachers and settings, named by their fingerprint); later runs with the same teachers
only encode texts the store does not hold yet. Pair scores are cached there too (one SQLite file per scorer).

``append_projection``: when the student's width differs from the teachers' (concatenated) width, the
``embed_distill`` cosine term trains a linear projection student -> teacher space. By default the saved model
is the student at its own width and the projection is written beside it (``final/distill_projection/``, a
sentence-transformers ``Dense`` module folder); ``true`` appends it to the saved model instead, so the model
outputs vectors in the teachers' space and width (Jasper style).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from embedtrain.schema.base import StrictModel
from embedtrain.schema.data import NAME_PATTERN


class TeacherConfig(StrictModel):
    """One embedding teacher: a local (or packaged) sentence-transformers model and how it encodes.

    ``weight`` is the teacher's share of the combined similarity when there are several teachers; the prompts
    are the teacher's own (query-side columns such as ``anchor`` get ``query_prompt``, the others
    ``document_prompt``), independent of the student's prompts.
    """

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    model: str
    weight: float = Field(default=1.0, gt=0)
    query_prompt: str | None = None
    document_prompt: str | None = None
    max_seq_length: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=64, gt=0)
    trust_remote_code: bool = False


class ScorerConfig(StrictModel):
    """The teacher that scores (query, document) pairs of ``scored_negatives`` rows without scores.

    ``kind: cross_encoder`` uses ``CrossEncoder.predict`` (the units ``embedtrain mine --cross-encoder``
    writes: a probability for one-label rerankers); ``kind: bi_encoder`` uses the cosine (or dot) similarity of
    a sentence-transformer, with its own prompts. ``rescore: true`` ignores the scores already in the data
    files and scores every pair with this teacher (e.g. rows mined by a small model, scored by a large one).
    """

    kind: Literal["cross_encoder", "bi_encoder"]
    model: str
    query_prompt: str | None = None
    document_prompt: str | None = None
    similarity: Literal["cosine", "dot"] = "cosine"
    batch_size: int = Field(default=64, gt=0)
    rescore: bool = False
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _prompts_for_bi_encoders(self) -> ScorerConfig:
        if self.kind == "cross_encoder" and (self.query_prompt or self.document_prompt or self.similarity != "cosine"):
            raise ValueError("query_prompt, document_prompt and similarity apply to kind: bi_encoder only")
        return self


class DistillConfig(StrictModel):
    """Teachers, the pair scorer and the cache of a distillation recipe (see the module docstring)."""

    teachers: list[TeacherConfig] = Field(default_factory=list)
    scorer: ScorerConfig | None = None
    cache_dir: str = ".embedtrain_cache"
    #: An explicit folder for the teacher embedding store (default: ``<cache_dir>/teachers-<fingerprint>``).
    store: str | None = None
    dtype: Literal["float32", "float16"] = "float32"
    append_projection: bool = False

    @model_validator(mode="after")
    def _names(self) -> DistillConfig:
        if not self.teachers and self.scorer is None:
            raise ValueError("name at least one teacher (teachers: [...]) or a scorer")
        names = self.teacher_names()
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"teacher name '{duplicate}' is used twice; names must be unique")
        return self

    def teacher_names(self) -> list[str]:
        """Each teacher's name (``teacher<i>`` when the recipe gives none)."""
        return [t.name or f"teacher{i}" for i, t in enumerate(self.teachers)]
