"""Greedy soup with the real all-MiniLM-L6-v2 and a real held-out set (STS Benchmark dev pairs).

Ingredients: the model plus noise, the model minus the same noise (each alone scores below the model;
together they average back to it exactly), and a random-weights copy (which can only hurt). Greedy
must keep the first two (their average is the original model) and leave the third out; the uniform soup
of all three (greedy's rejected step) must score clearly worse.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from embedtrain.models import load_model
from embedtrain.soup import make_soup

N_PAIRS = 100


@pytest.fixture(scope="module")
def ingredients(tmp_path_factory, minilm_path):
    root = tmp_path_factory.mktemp("greedy")
    model = load_model(minilm_path, device="cpu")
    clean = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(v.shape, generator=g) * v.std() * 0.3
             for k, v in clean.items() if v.is_floating_point() and v.numel() > 1}
    paths = []
    for name, state in (
        ("plus", {k: v + noise[k] if k in noise else v for k, v in clean.items()}),
        ("minus", {k: v - noise[k] if k in noise else v for k, v in clean.items()}),
        ("random", {k: torch.randn(v.shape, generator=g) * v.std() if k in noise else v for k, v in clean.items()}),
    ):
        model.load_state_dict(state)
        model.save(str(root / name))
        paths.append(root / name)
    return paths, clean


@pytest.mark.slow
def test_greedy_soup_on_real_held_out_data(ingredients, shared_data_dir, minilm_path, tmp_path):
    from embedtrain.soup.metrics import held_out_sts

    paths, clean = ingredients
    metric = held_out_sts(shared_data_dir / "stsb_dev.json", max_samples=N_PAIRS)
    result = make_soup(paths, tmp_path / "greedy", method="greedy", metric=metric, metric_name="stsb-dev")

    scores = [result.individual_scores[str(p)] for p in paths]
    assert sorted(result.members) == sorted(map(str, paths[:2]))
    assert [s["kept"] for s in result.greedy_steps] == [True, True, False]
    # +noise and -noise cancel: the soup is the original model, better than either noisy copy alone ...
    soup = load_file(str(tmp_path / "greedy" / "model.safetensors"))
    original = load_file(str(minilm_path / "model.safetensors"))
    for key in soup:
        torch.testing.assert_close(soup[key], original[key], rtol=0, atol=1e-5)
    assert result.soup_score > max(scores[:2]) + 1 and scores[2] < min(scores[:2])
    # ... and the uniform soup of all three (the rejected step) is clearly worse.
    assert result.greedy_steps[2]["score"] < result.soup_score - 5
    info = json.loads((tmp_path / "greedy" / "soup.json").read_text())
    assert info["metric"] == "stsb-dev" and len(info["greedy_steps"]) == 3
