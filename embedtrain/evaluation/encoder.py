"""The mteb view of a sentence-transformer: a name/revision per checkpoint and reusable embeddings.

mteb names a local SentenceTransformer ``no_model_name/available`` (or after its base model), so two
different checkpoints would share one results cache entry. :func:`make_encoder` gives the wrapper a
:class:`mteb.ModelMeta` named after the checkpoint, with the weights fingerprint as its revision and
the truncation (``layers``/``dim``) as experiment parameters.

:class:`CachingEncoder` encodes each distinct text once and remembers the full-width embeddings of
every text list, so a Matryoshka grid encodes each layer count once and scores every dimension by
slicing -- exactly what sentence-transformers' ``truncate_dim`` does after the forward pass.

mteb never tells ``model.encode`` which task it encodes for, so for task-adapter checkpoints
(:mod:`embedtrain.adapters`) every encode runs inside :func:`~embedtrain.adapters.mteb_map.mteb_task_scope`:
the MTEB task type picks the adapter (STS -> ``text-matching``, retrieval queries -> ``retrieval.query``...).
For plain checkpoints that scope does nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from typing import Any

from mteb.models import SentenceTransformerEncoderWrapper

from embedtrain.adapters.mteb_map import mteb_task_scope
from embedtrain.models.precision import Precision


def _texts_key(texts: list[str]) -> str:
    digest = hashlib.sha1()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return f"{len(texts)}:{digest.hexdigest()}"


class CachingEncoder(SentenceTransformerEncoderWrapper):
    """mteb encoder wrapper that encodes each distinct text once and can slice embeddings to ``dim``.

    * Duplicate texts within one encode call (STS sets repeat many sentences; SICK-R 19.9k texts hold
      6.1k distinct ones) are encoded once and copied, which changes no score.
    * With a ``cache`` dict, full-width embeddings are remembered across calls, keyed by the task name,
      the prompt type and the exact list of texts (so per-task / query-vs-document prompts are respected).
    * ``dim`` slices the embeddings like sentence-transformers' ``truncate_dim`` (after the forward pass);
      the wrapped model itself must not truncate.
    """

    def __init__(self, model, *, dim: int | None = None, cache: dict[tuple, Any] | None = None,
                 precision: Precision | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            super().__init__(model)
        self.dim = dim
        self.cache = cache
        self.precision = precision

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None, **kwargs):
        call = {"task_metadata": task_metadata, "hf_split": hf_split, "hf_subset": hf_subset,
                "prompt_type": prompt_type, **kwargs}
        features = getattr(inputs.dataset, "features", None) or {}
        autocast = self.precision.context() if self.precision is not None else contextlib.nullcontext()
        with mteb_task_scope(self.model, task_metadata), autocast:  # task adapters: the adapter of this task type
            if set(features) & {"image", "audio", "video"}:
                embeddings = super().encode(inputs, **call)
            else:
                texts = [text for batch in inputs for text in batch["text"]]
                key = (task_metadata.name, getattr(prompt_type, "value", prompt_type), _texts_key(texts))
                embeddings = self.cache.get(key) if self.cache is not None else None
                if embeddings is None:
                    embeddings = self._encode_distinct(texts, inputs, call)
                    if self.cache is not None:
                        self.cache[key] = embeddings
        if self.precision is not None and self.precision.autocast:
            embeddings = _as_float32(embeddings)
        return embeddings[:, : self.dim] if self.dim is not None else embeddings

    def _encode_distinct(self, texts: list[str], inputs, call: dict[str, Any]):
        distinct = list(dict.fromkeys(texts))
        if len(distinct) == len(texts):
            return super().encode(inputs, **call)
        from datasets import Dataset
        from torch.utils.data import DataLoader

        loader = DataLoader(Dataset.from_dict({"text": distinct}), batch_size=inputs.batch_size or 32)
        position = {text: i for i, text in enumerate(distinct)}
        return super().encode(loader, **call)[[position[t] for t in texts]]


def _as_float32(embeddings):
    import numpy as np

    if hasattr(embeddings, "float") and not isinstance(embeddings, np.ndarray):  # a torch tensor
        return embeddings.float()
    return np.asarray(embeddings, dtype=np.float32)


def make_encoder(model, *, label: str, fingerprint: str, layers: int | None = None, dim: int | None = None,
                 cache: dict[tuple, Any] | None = None, precision: Precision | None = None) -> CachingEncoder:
    """Wrap ``model`` for mteb under the name ``embedtrain/<label>``, revision ``fingerprint``.

    ``layers``/``dim`` describe a truncated variant (``model`` must already have ``layers`` layers; the
    embeddings are sliced to ``dim``); they become mteb experiment parameters, so each variant's results
    get their own folder. A bf16 ``precision`` (fast, approximate encoding) is one too, so its results
    never stand in for the exact float32 ones.
    """
    full_dim = model.get_embedding_dimension()
    precision = precision if precision is not None and precision.autocast else None
    encoder = CachingEncoder(model, dim=dim if dim is not None and dim != full_dim else None, cache=cache,
                             precision=precision)
    experiment = {k: v for k, v in (("layers", layers), ("dim", dim)) if v is not None}
    if precision is not None:
        experiment["precision"] = precision.name
    experiment = experiment or None
    encoder.mteb_model_meta = encoder.mteb_model_meta.model_copy(update={
        "name": f"embedtrain/{label}",
        "revision": fingerprint,
        "embed_dim": dim or full_dim,
        "experiment_kwargs": experiment,
    })
    return encoder
