"""Model soups on tiny models: exact averages, weights, carried-over configuration, incompatibilities, LoRA."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from embedtrain.errors import CheckpointError
from embedtrain.models import load_model
from embedtrain.soup import make_soup
from embedtrain.testing import build_tiny_model

TEXTS = ["a cat sits on the mat", "stock prices fell sharply"]


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Three tiny models with the same architecture (mean pooling + normalise, prompts) and different weights."""
    root = tmp_path_factory.mktemp("soup")
    paths = []
    for seed in (1, 2, 3):
        path = build_tiny_model(root / f"m{seed}", seed=seed, normalize=True)
        model = load_model(path, device="cpu")
        model.prompts = {"query": "q: ", "document": "d: "}
        model.save(str(path))
        paths.append(path)
    return paths


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_uniform_soup_is_the_exact_average_and_keeps_configuration(three, tmp_path):
    out = tmp_path / "soup"
    result = make_soup(three, out)
    assert result.weights == pytest.approx([1 / 3] * 3)
    parts = [_weights(p) for p in three]
    soup = _weights(out)
    assert set(soup) == set(parts[0])
    for key, value in soup.items():
        torch.testing.assert_close(value, sum(p[key] for p in parts) / 3, rtol=0, atol=1e-6)
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json",
                 "config_sentence_transformers.json", "tokenizer_config.json", "tokenizer.json"):
        assert (out / name).read_bytes() == (three[0] / name).read_bytes(), name
    assert json.loads((out / "1_Pooling/config.json").read_text())["pooling_mode"] == "mean"
    assert not (out / "README.md").exists()
    info = json.loads((out / "soup.json").read_text())
    assert info["method"] == "uniform" and info["ingredients"] == [str(p) for p in three]

    model = load_model(out, device="cpu")
    assert model.prompts["query"] == "q: " and type(model[-1]).__name__ == "Normalize"
    np.testing.assert_allclose(np.linalg.norm(model.encode(TEXTS), axis=1), 1.0, atol=1e-5)


def test_weighted_soup_respects_and_normalises_weights(three, tmp_path):
    make_soup(three[:2], tmp_path / "w", method="weighted", weights=[3, 1])
    a, b, soup = _weights(three[0]), _weights(three[1]), _weights(tmp_path / "w")
    for key in soup:
        torch.testing.assert_close(soup[key], 0.75 * a[key] + 0.25 * b[key], rtol=0, atol=1e-6)
    with pytest.raises(CheckpointError, match="got 3 weights for 2 checkpoints"):
        make_soup(three[:2], tmp_path / "x", method="weighted", weights=[1, 1, 1])
    with pytest.raises(CheckpointError, match="needs --weights"):
        make_soup(three[:2], tmp_path / "x", method="weighted")
    with pytest.raises(CheckpointError, match="needs a held-out metric"):
        make_soup(three[:2], tmp_path / "x", method="greedy")
    with pytest.raises(CheckpointError, match="not empty"):
        make_soup(three[:2], tmp_path / "w")


@pytest.mark.parametrize("variant, what", [
    ({"hidden_size": 48}, "transformer config"),
    ({"pooling": "cls"}, "Pooling"),
    ({"normalize": False}, "modules.json"),
    ({"num_layers": 3}, "transformer config"),
])
def test_incompatible_checkpoints_are_named(three, tmp_path, variant, what):
    odd = build_tiny_model(tmp_path / "odd", seed=9, **{"normalize": True, **variant})
    with pytest.raises(CheckpointError) as err:
        make_soup([three[0], odd], tmp_path / "out")
    assert str(odd) in str(err.value) and what in str(err.value)
    assert not (tmp_path / "out").exists()


def test_different_prompts_are_incompatible(three, tmp_path):
    other = build_tiny_model(tmp_path / "p", seed=5, normalize=True)
    model = load_model(other, device="cpu")
    model.prompts = {"query": "question: ", "document": "d: "}
    model.save(str(other))
    with pytest.raises(CheckpointError, match="model config differs.*question: "):
        make_soup([three[0], other], tmp_path / "out")


def test_greedy_keeps_helpful_and_rejects_harmful_ingredients(three):
    """A synthetic held-out metric: closeness to a target; two noisy copies average to it, a third is far."""
    from embedtrain.soup.greedy import greedy_select
    from embedtrain.soup.ingredients import load_ingredients

    ingredients = load_ingredients(three)
    target = {k: v.clone() for k, v in ingredients[0].weights.items()}
    g = torch.Generator().manual_seed(0)
    # Noise well below the init scale (0.02), so the independent third model is much farther away.
    noise = {k: torch.randn(v.shape, generator=g) * 0.002 for k, v in target.items() if v.is_floating_point()}
    for sign, ing in zip((1, -1), ingredients[:2]):
        state = {k: target[k] + sign * noise[k] if k in noise else target[k] for k in target}
        ing.model.load_state_dict(state)
        ing.weights = {k: v.clone() for k, v in state.items()}

    def metric(model) -> float:
        state = model.state_dict()
        return -float(sum((state[k] - target[k]).pow(2).sum() for k in target if target[k].is_floating_point()))

    picked = greedy_select(ingredients, metric)
    assert sorted(picked.chosen) == [0, 1]
    assert [s.kept for s in picked.steps] == [True, True, False]
    assert picked.score == pytest.approx(0.0, abs=1e-6)  # the two noisy copies average to the target


def _task_checkpoint(base, path, seed):
    from embedtrain.adapters.checkpoint import attach_tasks
    from embedtrain.schema.tasks import LoraSpec, TaskConfig

    model = load_model(base, device="cpu")
    lora = LoraSpec(r=2 + seed % 2, alpha=4, target_modules=["query", "value"])
    module = attach_tasks(model, [TaskConfig(name="a", lora=lora), TaskConfig(name="b", prompt="b: ", lora=lora)])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    model.save(str(path))
    return model


def test_lora_soup_averages_each_task_exactly(tiny_model_dir, tmp_path):
    models = [_task_checkpoint(tiny_model_dir, tmp_path / f"t{s}", s) for s in (1, 2)]
    make_soup([tmp_path / "t1", tmp_path / "t2"], tmp_path / "soup", method="weighted", weights=[0.7, 0.3])
    soup = load_model(tmp_path / "soup", device="cpu")
    config = json.loads((tmp_path / "soup" / "adapters" / "a" / "adapter_config.json").read_text())
    assert config["r"] == 3 + 2  # ranks of the two ingredients, stacked
    for task in ("a", "b"):
        merged = [m[0].base_state_dict(merge_task=task) for m in models]
        got = soup[0].base_state_dict(merge_task=task)
        for key in got:
            torch.testing.assert_close(got[key], 0.7 * merged[0][key] + 0.3 * merged[1][key], rtol=1e-5, atol=1e-5)
    assert (tmp_path / "soup" / "task_adapters.json").read_bytes() == (tmp_path / "t1" / "task_adapters.json").read_bytes()
    assert soup.encode(TEXTS, task="b").shape == (2, 32)


def test_soup_cli_reports_held_out_scores(three, tmp_path, write_jsonl, capsys):
    from embedtrain.cli.app import run_app

    dev = write_jsonl([{"sentence1": f"a cat {i} sits", "sentence2": f"a dog {i} runs", "score": i % 5}
                       for i in range(20)], "dev.jsonl")
    run_app(["soup", *map(str, three), str(tmp_path / "cli"), "--held-out", str(dev)])
    printed = capsys.readouterr().out
    assert "uniform soup" in printed and "soup:" in printed
    info = json.loads((tmp_path / "cli" / "soup.json").read_text())
    assert set(info["individual_scores"]) == {str(p) for p in three} and info["metric"] == "dev.jsonl"
    with pytest.raises(SystemExit):
        run_app(["soup", str(three[0]), str(tmp_path / "one")])


def test_greedy_soup_reports_a_held_out_split_separately_from_its_selection_split(three, tmp_path):
    """Greedy picks on one metric; the report metric scores every ingredient and the soup on another."""
    selection_calls, report_calls = [], []

    def selection(model) -> float:
        selection_calls.append(1)
        return model[0].auto_model.embeddings.word_embeddings.weight[0, 0].item()

    def report(model) -> float:
        report_calls.append(1)
        return model[0].auto_model.embeddings.word_embeddings.weight[1, 0].item()

    result = make_soup(three, tmp_path / "g", method="greedy", metric=selection, metric_name="dev",
                       report_metrics={"test": report})
    assert set(result.report) == {"test"}
    assert set(result.report["test"]) == {*map(str, three), "soup"}
    soup = load_model(tmp_path / "g", device="cpu")
    expected = soup[0].auto_model.embeddings.word_embeddings.weight[1, 0].item()
    assert result.report["test"]["soup"] == pytest.approx(expected, abs=1e-6)  # the saved soup, on the report split
    assert len(report_calls) == len(three) + 1
    info = json.loads((tmp_path / "g" / "soup.json").read_text())
    assert info["report"] == result.report and info["soup_score"] == result.soup_score


def test_soup_cli_eval_held_out_is_a_separate_split(three, tmp_path, write_jsonl, capsys):
    from embedtrain.cli.app import run_app

    dev = write_jsonl([{"sentence1": f"a cat {i} sits", "sentence2": f"a dog {i} runs", "score": i % 5}
                       for i in range(20)], "dev.jsonl")
    test = write_jsonl([{"sentence1": f"the bird {i} flies", "sentence2": f"a fish {i} swims", "score": i % 4}
                        for i in range(20)], "test.jsonl")
    run_app(["soup", *map(str, three), str(tmp_path / "cli"), "--method", "greedy", "--held-out", str(dev),
             "--eval-held-out", str(test)])
    printed = capsys.readouterr().out
    assert "test.jsonl (held out from selection" in printed
    info = json.loads((tmp_path / "cli" / "soup.json").read_text())
    assert set(info["report"]["test.jsonl"]) == {*map(str, three), "soup"}
    with pytest.raises(SystemExit):  # the report split may not be the selection split
        run_app(["soup", *map(str, three), str(tmp_path / "cli2"), "--method", "greedy", "--held-out", str(dev),
                 "--eval-held-out", str(dev)])
