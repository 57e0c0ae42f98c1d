"""Dataset mixing: weights and temperature sampling of whole batches, the achieved mixture, same-label batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from helpers import pair_rows, write_recipe, write_rows
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
from torch.utils.data import ConcatDataset

from embedtrain.errors import RecipeError
from embedtrain.schema import load_recipe
from embedtrain.train.mixing import (
    MixtureTracker,
    NoSameLabelBatchSampler,
    WeightedBatchSampler,
    mixture_probabilities,
)


def _datasets(sizes):
    return [Dataset.from_dict({"anchor": [f"d{k} q{i}" for i in range(n)], "positive": [f"d{k} p{i}" for i in range(n)]})
            for k, n in enumerate(sizes)]


def _sampler(datasets, probabilities, batch_size=4, seed=7):
    generator = torch.Generator()
    samplers = [NoDuplicatesBatchSampler(d, batch_size=batch_size, drop_last=False, generator=generator, seed=seed)
                for d in datasets]
    tracker = MixtureTracker([f"d{k}" for k in range(len(datasets))], probabilities)
    return WeightedBatchSampler(ConcatDataset(datasets), samplers, generator=generator, seed=seed,
                                probabilities=probabilities, tracker=tracker), tracker


def test_temperature_and_weights_give_the_shares():
    sizes = [900, 90, 10]
    assert mixture_probabilities(sizes) == pytest.approx([0.9, 0.09, 0.01])  # T = 1: proportional
    p2 = mixture_probabilities(sizes, temperature=2.0)
    assert p2 == pytest.approx(np.sqrt(sizes) / np.sqrt(sizes).sum())
    assert mixture_probabilities(sizes, temperature=1e6) == pytest.approx([1 / 3] * 3, abs=1e-4)  # ~uniform
    assert mixture_probabilities(sizes, weights=[1, 1, 2]) == pytest.approx([0.25, 0.25, 0.5])


def test_sampled_mixture_matches_the_weights_within_sampling_error():
    datasets = _datasets([200, 40, 12])
    target = [0.5, 0.3, 0.2]  # far from proportional (0.79, 0.16, 0.05): small sets are re-used
    sampler, tracker = _sampler(datasets, target)
    offsets = [0, 200, 240, 252]
    n_batches = 0
    for epoch in range(6):
        sampler.set_epoch(epoch)
        for batch in sampler:
            k = next(i for i in range(3) if offsets[i] <= batch[0] < offsets[i + 1])
            assert all(offsets[k] <= j < offsets[k + 1] for j in batch)  # one dataset per batch
            n_batches += 1
    assert n_batches == 6 * len(sampler) == 6 * (50 + 10 + 3)
    achieved = tracker.achieved()
    for k, p in enumerate(target):
        sigma = np.sqrt(p * (1 - p) / n_batches)
        assert abs(achieved[f"d{k}"] - p) < 4 * sigma, (achieved, target)
    # proportional would have given d2 ~ 0.05: the mixture really is the requested one
    assert achieved["d2"] > 0.12


def test_draws_are_seeded_by_seed_and_epoch():
    datasets = _datasets([20, 20])
    a, _ = _sampler(datasets, [0.5, 0.5])
    b, _ = _sampler(datasets, [0.5, 0.5])
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)


def test_no_batch_holds_two_rows_of_one_label():
    labels = [i % 5 for i in range(40)]  # 5 labels, 8 rows each
    ds = Dataset.from_dict({"anchor": [f"q{i}" for i in range(40)], "positive": [f"p{i}" for i in range(40)],
                            "label": labels})
    sampler = NoSameLabelBatchSampler(ds, batch_size=4, drop_last=False, valid_label_columns=["label", "score"],
                                      generator=torch.Generator(), seed=3)
    seen = []
    for batch in sampler:
        assert len({labels[i] for i in batch}) == len(batch)
        seen += batch
    assert sorted(set(seen)) == list(range(40))  # every row is still used


def _write_sets(tmp_path):
    write_rows(tmp_path / "big.jsonl", pair_rows(64))
    write_rows(tmp_path / "small.jsonl", pair_rows(16, offset=100))


def _recipe(tmp_path, model_dir, datasets, **extra):
    data = {"model": {"name_or_path": str(model_dir)}, "datasets": datasets, "loss": {"name": "mnrl"},
            "training": {"per_device_train_batch_size": 4, "max_steps": 40, "logging_steps": 10, "save_steps": 100,
                         "report_to": "none"},
            "output_dir": str(tmp_path / "out"), "seed": 3, **extra}
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", data))


def test_a_weighted_run_logs_the_achieved_mixture(tmp_path, tiny_model_dir):
    from embedtrain.api import train

    _write_sets(tmp_path)
    recipe = _recipe(tmp_path, tiny_model_dir, [
        {"name": "big", "path": "big.jsonl", "format": "pairs", "weight": 1},
        {"name": "small", "path": "small.jsonl", "format": "pairs", "weight": 3}])
    result = train(recipe)
    record = json.loads((result.final_dir / "embedtrain_run.json").read_text())
    mixture = record["mixture"]
    assert mixture["target"] == pytest.approx({"big": 0.25, "small": 0.75})
    assert sum(mixture["batches"].values()) >= 40
    assert mixture["achieved"]["small"] > 0.5  # proportional would give 0.2
    logged = [e for e in record["log_history"] if "mixture/small" in e]
    assert [e["step"] for e in logged] == [10, 20, 30, 40]


def test_label_column_runs_and_keeps_labels_out_of_the_texts(tmp_path, tiny_model_dir):
    from embedtrain.api import train
    from embedtrain.train.runner import prepare

    rows = [{"query": f"how to do task {i}", "passage": f"instructions for task {i}", "intent": f"intent{i % 6}"}
            for i in range(24)]
    write_rows(tmp_path / "intents.jsonl", rows)
    recipe = _recipe(tmp_path, tiny_model_dir, [{"name": "intents", "path": "intents.jsonl", "format": "pairs",
                                                 "label_column": "intent", "query_prompt": "q: "}],
                     training={"per_device_train_batch_size": 4, "max_steps": 4, "report_to": "none"})
    mode = prepare(recipe)
    [p] = mode.prepared
    assert p.dataset["label"][:7] == [0, 1, 2, 3, 4, 5, 0] and "label" not in p.prompts
    assert train(recipe).global_step == 4


def test_mixing_errors_are_located(tmp_path, tiny_model_dir):
    _write_sets(tmp_path)
    big = {"name": "big", "path": "big.jsonl", "format": "pairs"}
    small = {"name": "small", "path": "small.jsonl", "format": "pairs"}
    with pytest.raises(RecipeError, match=r"datasets\[1\].*no weight"):
        _recipe(tmp_path, tiny_model_dir, [{**big, "weight": 2}, small])
    with pytest.raises(RecipeError, match="not both"):
        _recipe(tmp_path, tiny_model_dir, [{**big, "weight": 2}, {**small, "weight": 1}], sampling_temperature=2)
    with pytest.raises(RecipeError, match="round_robin"):
        _recipe(tmp_path, tiny_model_dir, [big, small], sampling_temperature=2, multi_dataset_sampler="round_robin")
    write_rows(tmp_path / "sts.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 1.0, "g": 1}])
    with pytest.raises(RecipeError, match=r"datasets\[0\]\.label_column"):
        _recipe(tmp_path, tiny_model_dir, [{"name": "s", "path": "sts.jsonl", "format": "scored_pairs",
                                            "label_column": "g"}], loss={"name": "cosent"})
