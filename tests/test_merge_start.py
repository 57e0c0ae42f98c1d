"""Merge with the start model after training (WiSE-FT), the weight chosen on dev data (issue 12)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_recipe, write_rows

from embedtrain.errors import CheckpointError, RecipeError
from embedtrain.soup.merge_start import (
    MergeCandidate,
    choose_alpha,
    interpolate_weights,
    merge_with_start,
    weights_of,
)


@pytest.fixture(scope="module")
def two_models(tiny_model_factory):
    """Two tiny models of one architecture with different weights: 'start' and 'trained'."""
    from sentence_transformers import SentenceTransformer

    start = SentenceTransformer(str(tiny_model_factory(seed=0)), device="cpu")
    trained = SentenceTransformer(str(tiny_model_factory(seed=1)), device="cpu")
    return start, trained


def _fresh(model):
    import copy

    return copy.deepcopy(model)


def test_interpolation_equals_hand_computation(two_models):
    start, trained = two_models
    s, t = weights_of(start), weights_of(trained)
    merged = interpolate_weights(s, t, 0.3)
    floats = [k for k in s if s[k].is_floating_point()]
    assert floats and set(merged) == set(s)
    for key in floats:
        torch.testing.assert_close(merged[key], 0.7 * s[key] + 0.3 * t[key], rtol=1e-6, atol=1e-7)
    for key in set(s) - set(floats):  # integer buffers (position ids) are copied, not averaged
        assert torch.equal(merged[key], t[key])
    # the merged model encodes with those weights
    model = _fresh(trained)
    selection = merge_with_start(model, s, alpha=0.3)
    assert selection.alpha == 0.3 and selection.mode == "fixed"
    for key in floats:
        torch.testing.assert_close(model.state_dict()[key], merged[key])


def test_alpha_one_is_the_trained_model_exactly(two_models):
    start, trained = two_models
    model = _fresh(trained)
    merge_with_start(model, weights_of(start), alpha=1.0)
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    start_copy = _fresh(trained)
    merge_with_start(start_copy, weights_of(start), alpha=0.0)  # the other end is the start model
    for key, value in start.state_dict().items():
        assert torch.equal(start_copy.state_dict()[key], value), key


def test_mismatched_weights_are_refused(two_models):
    start, trained = two_models
    s = weights_of(start)
    s.pop(next(iter(s)))
    with pytest.raises(CheckpointError, match="cannot merge with the start model"):
        merge_with_start(_fresh(trained), s, alpha=0.5)


def test_rule_keeps_90_percent_of_the_best_dev_gain_then_takes_the_most_agreement():
    candidates = [MergeCandidate(0.3, dev=81.80, agreement=95.0), MergeCandidate(0.5, dev=82.00, agreement=85.0),
                  MergeCandidate(0.7, dev=81.00, agreement=70.0), MergeCandidate(1.0, dev=79.00, agreement=50.0)]
    # best gain 2.0 over the start model (80); the floor is 80 + 0.9 * 2 = 81.8: 0.3 and 0.5 pass
    alpha, reason = choose_alpha(candidates, start_dev=80.0)
    assert alpha == 0.3 and "2 of 4 candidates pass" in reason  # dev argmax alone would take 0.5
    assert choose_alpha(candidates, start_dev=80.0, keep=1.0)[0] == 0.5
    assert choose_alpha(candidates, start_dev=80.0, keep=0.5)[0] == 0.3  # 0.7 passes too, but agrees less
    # ties in agreement: the larger alpha (more of the target gain)
    tied = [MergeCandidate(0.3, 81.0, 90.0), MergeCandidate(0.4, 81.0, 90.0)]
    assert choose_alpha(tied, start_dev=80.0)[0] == 0.4
    # no candidate beats the start model on dev: the start weights are kept
    worse = [MergeCandidate(0.5, 79.0, 90.0), MergeCandidate(1.0, 78.0, 60.0)]
    alpha, reason = choose_alpha(worse, start_dev=80.0)
    assert alpha == 0.0 and "start weights are kept" in reason


def test_auto_measures_every_candidate_and_loads_the_chosen_weights(two_models):
    """Constructed signals (a function of the merge weight read back from the model's weights): the merge must
    pick by the rule and leave the model holding exactly that merge."""
    start, trained = two_models
    s, t = weights_of(start), weights_of(trained)
    key = next(k for k in s if s[k].is_floating_point() and not torch.equal(s[k], t[k]))
    idx = torch.nonzero(s[key] != t[key])[0].tolist()

    def alpha_of(model) -> float:
        w = model.state_dict()[key][tuple(idx)].item()
        return round((w - s[key][tuple(idx)].item()) / (t[key][tuple(idx)].item() - s[key][tuple(idx)].item()), 2)

    devs = {0.0: 80.0, 0.3: 81.8, 0.4: 81.9, 0.5: 82.0, 0.7: 81.0, 1.0: 79.0}
    seen = []

    def dev(model):
        seen.append(alpha_of(model))
        return devs[seen[-1]]

    def agreement(reference):
        assert alpha_of(reference) == 0.0  # the reference is the start model
        return lambda model: 100.0 - 50.0 * alpha_of(model)

    model = _fresh(trained)
    selection = merge_with_start(model, s, alpha="auto", dev=dev, agreement=agreement)
    assert seen == [0.0, 0.3, 0.4, 0.5, 0.7, 1.0]
    assert selection.alpha == 0.3 and selection.start_dev == 80.0
    assert [c.alpha for c in selection.candidates] == [0.3, 0.4, 0.5, 0.7, 1.0]
    assert alpha_of(model) == 0.3
    torch.testing.assert_close(model.state_dict()[key], interpolate_weights(s, t, 0.3)[key])
    assert "| 0.3 | 81.80 | 85.00 | kept |" in selection.table()


def test_real_agreement_signal_is_100_at_the_start_and_lower_when_moved(two_models):
    from embedtrain.io.sentences import default_general_text, read_sentences
    from embedtrain.soup.metrics import similarity_agreement

    start, trained = two_models
    sentences = read_sentences(default_general_text())
    assert len(sentences) >= 150
    agree = similarity_agreement(start, sentences, num_pairs=300)
    assert agree(start) == pytest.approx(100.0)
    assert agree(trained) < 90.0


# -- the recipe section --------------------------------------------------------------------------------------------
def _recipe(tmp_path, merge, *, extra=None):
    write_rows(tmp_path / "train.jsonl", [{"sentence1": f"a cat number {i} sits", "sentence2": f"a dog {i} runs",
                                           "score": float(i % 6)} for i in range(40)])
    write_rows(tmp_path / "dev.jsonl", [{"sentence1": f"the bird {i} flies", "sentence2": f"a bird {i} sings",
                                         "score": float(i % 5)} for i in range(20)])
    return {"model": {"name_or_path": "unused"},
            "datasets": [{"name": "sts", "path": "train.jsonl", "format": "scored_pairs"}],
            "loss": {"name": "cosent"}, "merge_with_start": merge, "output_dir": str(tmp_path / "out"),
            **(extra or {})}


@pytest.mark.parametrize(("merge", "extra", "field", "message"), [
    ({"alpha": 1.5}, None, "merge_with_start.alpha", "alpha must be in (0, 1]"),
    ({"alpha": 0}, None, "merge_with_start.alpha", "alpha must be in (0, 1]"),
    ({"alpha": "auto"}, None, "merge_with_start", "set 'dev' to the target's dev split"),
    ({"dev": "dev.jsonl", "grid": [0.5, 1.2]}, None, "merge_with_start.grid", "every grid weight must be in (0, 1]"),
    ({"dev": "data/stsb_test.jsonl"}, None, "merge_with_start.dev", "looks like a test split"),
    ({"dev": "stsb/test.jsonl"}, None, "merge_with_start.dev", "looks like a test split"),
    ({"dev": "dev.jsonl", "general_text": "sts-test.txt"}, None, "merge_with_start.general_text",
     "looks like a test split"),
    ({"dev": "train.jsonl"}, None, "merge_with_start.dev", "is training dataset 'sts'"),
    ({"alpha": 0.5}, {"model": {"name_or_path": "unused", "lora": {"r": 4}}}, "merge_with_start",
     "does not apply to a model.lora run"),
    ({"dev": "dev.jsonl", "kep": 0.9}, None, "merge_with_start.kep", "keep"),
])
def test_recipe_errors_are_one_located_line(tmp_path, merge, extra, field, message):
    from embedtrain.schema import load_recipe

    path = write_recipe(tmp_path / "r.yaml", _recipe(tmp_path, merge, extra=extra))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    text = str(info.value)
    assert "\n" not in text.strip(), text
    assert str(path) in text and f"field '{field}" in text and message in text, text
    assert info.value.line is not None


def test_testing_words_are_not_test_splits():
    from embedtrain.schema.merge import looks_like_test_split

    assert looks_like_test_split("test.jsonl") and looks_like_test_split("STSb-Test.csv")
    assert looks_like_test_split("/data/test/pairs.jsonl")
    assert not looks_like_test_split("dev.jsonl") and not looks_like_test_split("contest_dev.jsonl")
    assert not looks_like_test_split("/tmp/pytest-0/test_merge0/dev.jsonl")  # only the file and its folder count


def test_missing_dev_file_is_reported_by_validate(tmp_path, tiny_model_dir):
    from embedtrain.api import validate

    recipe = _recipe(tmp_path, {"dev": "nowhere.jsonl"})
    recipe["model"] = {"name_or_path": str(tiny_model_dir)}
    path = write_recipe(tmp_path / "r.yaml", recipe)
    with pytest.raises(RecipeError, match="dev file not found") as info:
        validate(path)
    assert info.value.field == "merge_with_start.dev"


# -- in a training run ---------------------------------------------------------------------------------------------
def test_training_run_saves_the_merged_model_and_records_the_selection(tmp_path, tiny_model_dir, capsys, one_thread):
    """Three runs of one seeded recipe: plain, alpha 0.5 (the saved weights must be the midpoint of the start and
    the plain run's weights: training is deterministic on CPU), and auto (the record holds the table)."""
    from sentence_transformers import SentenceTransformer

    from embedtrain.api import train
    from embedtrain.cli import run_app

    def recipe(name, merge):
        data = _recipe(tmp_path, merge)
        data.update({"model": {"name_or_path": str(tiny_model_dir)}, "output_dir": str(tmp_path / name),
                     "training": {"max_steps": 4, "learning_rate": 1e-2, "per_device_train_batch_size": 8}})
        if merge is None:
            del data["merge_with_start"]
        return write_recipe(tmp_path / f"{name}.yaml", data)

    plain = train(recipe("plain", None))
    half = train(recipe("half", {"alpha": 0.5}))
    start = weights_of(SentenceTransformer(str(tiny_model_dir), device="cpu"))
    trained = weights_of(SentenceTransformer(str(plain.final_dir), device="cpu"))
    saved = weights_of(SentenceTransformer(str(half.final_dir), device="cpu"))
    expected = interpolate_weights(start, trained, 0.5)
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(start[k], trained[k])]
    assert moved
    for key in moved:
        torch.testing.assert_close(saved[key], expected[key])
    assert half.details["merge_with_start"].alpha == 0.5

    run_app(["train", str(recipe("auto", {"dev": "dev.jsonl", "grid": [0.5, 1.0], "num_pairs": 200}))])
    out = capsys.readouterr().out
    assert "merge_with_start: alpha" in out and ("dev gain floor" in out or "start weights are kept" in out)
    record = json.loads((tmp_path / "auto" / "final" / "embedtrain_run.json").read_text())
    merge = record["merge_with_start"]
    assert merge["mode"] == "auto" and merge["alpha"] in (0.0, 0.5, 1.0)
    assert [c["alpha"] for c in merge["candidates"]] == [0.5, 1.0]
    assert all(c["dev"] is not None and c["agreement"] is not None for c in merge["candidates"])
    assert merge["start_dev"] is not None and "| alpha | dev | agreement |" in merge["table"]


def test_merge_start_command_merges_saved_checkpoints(tmp_path, tiny_model_factory, capsys, one_thread):
    from sentence_transformers import SentenceTransformer

    from embedtrain.cli import run_app

    start_dir, trained_dir = tiny_model_factory(seed=0), tiny_model_factory(seed=1)
    write_rows(tmp_path / "dev.jsonl", [{"sentence1": f"the bird {i} flies", "sentence2": f"a bird {i} sings",
                                         "score": float(i % 5)} for i in range(20)])
    run_app(["merge-start", str(trained_dir), str(tmp_path / "merged"), "--start", str(start_dir),
             "--alpha", "0.25"])
    merged = weights_of(SentenceTransformer(str(tmp_path / "merged"), device="cpu"))
    expected = interpolate_weights(weights_of(SentenceTransformer(str(start_dir), device="cpu")),
                                   weights_of(SentenceTransformer(str(trained_dir), device="cpu")), 0.25)
    for key, value in expected.items():
        torch.testing.assert_close(merged[key], value)
    record = json.loads((tmp_path / "merged" / "merge_start.json").read_text())
    assert record["alpha"] == 0.25 and record["mode"] == "fixed"

    run_app(["merge-start", str(trained_dir), str(tmp_path / "auto"), "--start", str(start_dir),
             "--dev", str(tmp_path / "dev.jsonl"), "--grid", "0.5,1.0"])
    assert "merged at alpha" in capsys.readouterr().out
    assert json.loads((tmp_path / "auto" / "merge_start.json").read_text())["mode"] == "auto"
    with pytest.raises(SystemExit):  # the CLI prints the located error and exits non-zero
        run_app(["merge-start", str(trained_dir), str(tmp_path / "x"), "--start", str(start_dir),
                 "--dev", str(tmp_path / "stsb_test.jsonl")])
    assert "looks like a test split" in capsys.readouterr().err
