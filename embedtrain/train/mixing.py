"""Mixing several training datasets: weighted / temperature sampling of whole batches, and same-label batches.

sentence-transformers draws each batch from one dataset (its multi-dataset batch sampler), either in proportion
to the datasets' sizes or round-robin. :class:`WeightedBatchSampler` is such a sampler with explicit shares:

* per-dataset ``weight`` in the recipe: dataset i gives ``w_i / sum(w)`` of the batches;
* ``sampling_temperature: T``: ``p_i ∝ n_i^(1/T)`` for ``n_i`` rows (T = 1 is proportional, large T uniform),
  the usual way to up-sample small datasets in multi-task training.

An epoch keeps the length of the proportional sampler (the total number of batches of all datasets); a dataset
drawn more often than its size allows starts a new pass (reshuffled), one drawn less often is not seen whole.
The draws are seeded by the training seed and the epoch, so a resumed run replays the same sequence.
:class:`MixtureTracker` counts the batches drawn per dataset; the run logs the achieved shares
(``mixture/<dataset>`` in the training logs and TensorBoard) and writes them beside the final model.

``label_column`` datasets (classification data turned into pairs: many rows share a class) get
:class:`NoSameLabelBatchSampler`: no batch holds two rows with the same label, so no in-batch negative is
secretly a positive of the same class.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any

import numpy as np
from sentence_transformers.base.sampler import (
    BatchSamplers,
    DefaultBatchSampler,
    GroupByLabelBatchSampler,
    MultiDatasetDefaultBatchSampler,
    NoDuplicatesBatchSampler,
)

logger = logging.getLogger(__name__)

#: The dataset column that carries a ``label_column``'s values (as integer ids) through the trainer.
LABEL_COLUMN = "label"
_GROUP_COLUMN = "__embedtrain_same_label__"


def mixture_probabilities(sizes: Sequence[int], *, weights: Sequence[float] | None = None,
                          temperature: float | None = None) -> np.ndarray:
    """Share of batches per dataset: ``weights`` normalised, else ``n_i^(1/T)`` normalised, else proportional."""
    if weights is not None:
        p = np.asarray(weights, dtype=np.float64)
    else:
        p = np.asarray(sizes, dtype=np.float64) ** (1.0 / (temperature or 1.0))
    if p.sum() <= 0 or not np.all(np.isfinite(p)):
        raise ValueError(f"invalid mixture weights {list(p)}")
    return p / p.sum()


class MixtureTracker:
    """Counts the batches drawn from each dataset and reports target and achieved shares."""

    def __init__(self, names: Sequence[str], target: Sequence[float]) -> None:
        self.names = list(names)
        self.target = [float(x) for x in target]
        self.counts = np.zeros(len(self.names), dtype=np.int64)

    def record(self, index: int) -> None:
        self.counts[index] += 1

    def achieved(self) -> dict[str, float]:
        total = int(self.counts.sum())
        return {n: (float(c) / total if total else 0.0) for n, c in zip(self.names, self.counts)}

    def log_metrics(self) -> dict[str, float]:
        """The achieved shares so far, as training-log values (``mixture/<dataset>``)."""
        return {f"mixture/{n}": round(v, 4) for n, v in self.achieved().items()} if self.counts.sum() else {}

    def summary(self) -> dict[str, Any]:
        return {"target": dict(zip(self.names, (round(t, 6) for t in self.target))),
                "achieved": {n: round(v, 6) for n, v in self.achieved().items()},
                "batches": dict(zip(self.names, (int(c) for c in self.counts)))}

    def describe(self) -> str:
        achieved = self.achieved()
        return ", ".join(f"{n} {achieved[n]:.3f} (target {t:.3f})" for n, t in zip(self.names, self.target))


class WeightedBatchSampler(MultiDatasetDefaultBatchSampler):
    """Each batch from one dataset, the dataset drawn with fixed probabilities (a sentence-transformers
    multi-dataset batch sampler; pass it with ``functools.partial`` as ``multi_dataset_batch_sampler``).

    Args:
        dataset: the concatenation of the training datasets (given by the trainer).
        batch_samplers: one batch sampler per dataset (given by the trainer).
        generator / seed: as for every sentence-transformers sampler; the draws use ``seed`` and the epoch.
        probabilities: share of batches per dataset (sums to 1).
        tracker: a :class:`MixtureTracker` that counts the batches drawn.
    """

    def __init__(self, dataset, batch_samplers, generator=None, seed: int = 0, *,
                 probabilities: Sequence[float], tracker: MixtureTracker | None = None) -> None:
        super().__init__(dataset, batch_samplers, generator=generator, seed=seed)
        if len(probabilities) != len(batch_samplers):
            raise ValueError(f"{len(probabilities)} probabilities for {len(batch_samplers)} datasets")
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self.tracker = tracker

    def __len__(self) -> int:
        return sum(len(sampler) for sampler in self.batch_samplers)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([int(self.seed or 0), int(self.epoch)])
        offsets = [0, *accumulate(len(d) for d in self.dataset.datasets)]
        passes = [0] * len(self.batch_samplers)
        iterators = [iter(s) for s in self.batch_samplers]
        usable = [len(d) > 0 for d in self.dataset.datasets]
        p = np.where(usable, self.probabilities, 0.0)
        if p.sum() == 0:
            return
        p = p / p.sum()
        for choice in rng.choice(len(p), size=len(self), p=p):
            batch = next(iterators[choice], None)
            if batch is None:  # this dataset is used up: start another (reshuffled) pass over it
                passes[choice] += 1
                sampler = self.batch_samplers[choice]
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(self.epoch * 1_000_003 + passes[choice])
                iterators[choice] = iter(sampler)
                batch = next(iterators[choice], None)
                if batch is None:
                    continue
            if self.tracker is not None:
                self.tracker.record(int(choice))
            yield [i + offsets[choice] for i in batch]


class NoSameLabelBatchSampler(NoDuplicatesBatchSampler):
    """sentence-transformers' no-duplicates batches, where rows with the same ``label`` also count as duplicates.

    The dataset's ``label`` column (integer ids of a ``label_column``) is read once; a batch never holds two rows
    of one label, so no in-batch negative shares the anchor's label. Batches are at most as large as the number
    of labels.
    """

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                 seed: int = 0, precompute_hashes: bool = False) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed,
                         precompute_hashes=precompute_hashes)
        groups = [f"\x00label\x00{v}" for v in dataset[LABEL_COLUMN]]
        self.dataset = self.dataset.add_column(_GROUP_COLUMN, groups)


def label_aware_batch_sampler(dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                              seed: int = 0, *, default: str = BatchSamplers.NO_DUPLICATES):
    """The batch sampler of one dataset: :class:`NoSameLabelBatchSampler` for datasets with a ``label`` column,
    else the sampler ``default`` names (sentence-transformers' ``batch_sampler`` values)."""
    kwargs = {"batch_size": batch_size, "drop_last": drop_last, "valid_label_columns": valid_label_columns,
              "generator": generator, "seed": seed}
    if LABEL_COLUMN in dataset.column_names:
        return NoSameLabelBatchSampler(dataset, **kwargs)
    default = BatchSamplers(default)
    if default == BatchSamplers.NO_DUPLICATES:
        return NoDuplicatesBatchSampler(dataset, **kwargs)
    if default == BatchSamplers.NO_DUPLICATES_HASHED:
        return NoDuplicatesBatchSampler(dataset, precompute_hashes=True, **kwargs)
    if default == BatchSamplers.GROUP_BY_LABEL:
        return GroupByLabelBatchSampler(dataset, **kwargs)
    from torch.utils.data import RandomSampler

    return DefaultBatchSampler(RandomSampler(dataset, generator=generator), **kwargs)


def mixing_extras(recipe, prepared: list, batch_sampler_default: str) -> tuple[dict[str, Any], MixtureTracker | None]:
    """Training-argument values for the recipe's mixture (``multi_dataset_batch_sampler``, ``batch_sampler``)
    and the tracker of the achieved mixture (None when sentence-transformers' own sampler is used)."""
    extras: dict[str, Any] = {}
    if any(p.config.label_column for p in prepared):
        if "batch_sampler" in recipe.training:
            loc = next(p.loc for p in prepared if p.config.label_column)
            raise recipe.error("label_column sets the batch sampler; remove training.batch_sampler", *loc,
                               "label_column")
        extras["batch_sampler"] = functools.partial(label_aware_batch_sampler, default=batch_sampler_default)
        for p in prepared:
            if p.config.label_column:
                n_labels = len(set(p.dataset[LABEL_COLUMN]))
                batch = int(recipe.training.get("per_device_train_batch_size", 32))
                if n_labels < batch:
                    logger.warning("dataset '%s': %d labels, so its batches hold at most %d rows (batch size %d)",
                                   p.config.name, n_labels, n_labels, batch)
    weights = [p.config.weight for p in prepared]
    temperature = getattr(recipe, "sampling_temperature", None)
    if len(prepared) < 2 or (weights[0] is None and temperature is None):
        if len(prepared) == 1 and (weights[0] is not None or temperature is not None):
            logger.warning("one training dataset: weight / sampling_temperature have no effect")
        return extras, None
    if "multi_dataset_batch_sampler" in recipe.training:
        raise recipe.error("weights / sampling_temperature set the multi-dataset sampler; remove "
                           "training.multi_dataset_batch_sampler", "training", "multi_dataset_batch_sampler")
    names = [p.config.name for p in prepared]
    probabilities = mixture_probabilities([len(p.dataset) for p in prepared],
                                          weights=None if weights[0] is None else weights, temperature=temperature)
    tracker = MixtureTracker(names, probabilities)
    extras["multi_dataset_batch_sampler"] = functools.partial(WeightedBatchSampler, probabilities=list(probabilities),
                                                              tracker=tracker)
    logger.info("dataset mixture (share of batches): %s",
                ", ".join(f"{n} {p:.3f}" for n, p in zip(names, probabilities)))
    return extras, tracker


def read_labels(records, column: str) -> list[int]:
    """Integer ids (in order of first appearance) of the values in ``column`` of every row; a missing or
    non-scalar value is a located error."""
    ids: dict[Any, int] = {}
    out = []
    for i, row in enumerate(records.rows):
        if column not in row:
            raise records.error(i, column, f"missing label column '{column}' (columns here: {sorted(row)})")
        value = row[column]
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise records.error(i, column, f"label must be a non-empty string or an integer, got {value!r}")
        out.append(ids.setdefault(value, len(ids)))
    return out
