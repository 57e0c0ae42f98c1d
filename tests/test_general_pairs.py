"""data_prep/general_pairs.py: general pairs scored by the start model, a second dataset to mix in (issue 12)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import load_script, write_recipe, write_rows


@pytest.fixture(scope="module")
def script(repo_root):
    return load_script(repo_root / "data_prep" / "general_pairs.py")


def test_pairs_mix_nearest_neighbours_and_random_pairs(script):
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    pairs = script.pair_indices(emb, num_pairs=30, neighbour_fraction=0.5, seed=1)
    assert len(pairs) == 30 and len({tuple(sorted(p)) for p in pairs}) == 30 and all(i != j for i, j in pairs)
    sims = emb @ emb.T
    sims.fill_diagonal_(-2)
    nearest = sims.argmax(dim=1)
    neighbour_pairs = [p for p in pairs if nearest[p[0]] == p[1]]
    assert len(neighbour_pairs) >= 10  # about half (a neighbour pair met twice counts once)
    # asking for more pairs than exist gives every pair once
    assert len(script.pair_indices(emb[:5], num_pairs=100)) == 10


def test_script_writes_scored_pairs_from_the_start_model(tmp_path, tiny_model_dir, script, one_thread):
    from sentence_transformers import SentenceTransformer

    from embedtrain.io.formats import to_dataset
    from embedtrain.io.readers import read_records

    out = script.main(["--model", str(tiny_model_dir), "--output", str(tmp_path / "general.jsonl"),
                       "--num-pairs", "200", "--seed", "3"])
    ds = to_dataset(read_records(out), "scored_pairs", {})  # readable as the recipe's scored_pairs format
    assert len(ds) == 200
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    emb = model.encode([ds[0]["sentence1"], ds[0]["sentence2"]], normalize_embeddings=True, convert_to_tensor=True)
    assert ds[0]["score"] == pytest.approx(float(emb[0] @ emb[1]), abs=1e-5)
    from embedtrain.io.sentences import default_general_text, read_sentences

    general = set(read_sentences(default_general_text()))
    assert set(ds["sentence1"]) <= general and set(ds["sentence2"]) <= general


def test_general_pairs_train_as_a_weighted_second_dataset(tmp_path, tiny_model_dir, script, one_thread):
    from embedtrain.api import train

    sentences = tmp_path / "mine.txt"
    sentences.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(30)) + "\n")
    script.main(["--model", str(tiny_model_dir), "--output", str(tmp_path / "general.jsonl"),
                 "--sentences", str(sentences), "--num-pairs", "60"])
    write_rows(tmp_path / "target.jsonl", [{"sentence1": f"a cat number {i} sits", "sentence2": f"a dog {i} runs",
                                            "score": float(i % 6)} for i in range(40)])
    recipe = write_recipe(tmp_path / "r.yaml", {
        "model": {"name_or_path": str(tiny_model_dir)},
        "datasets": [{"name": "target", "path": "target.jsonl", "format": "scored_pairs", "weight": 2},
                     {"name": "general", "path": "general.jsonl", "format": "scored_pairs", "weight": 1}],
        "loss": {"name": "cosent"},
        "training": {"max_steps": 6, "per_device_train_batch_size": 8},
        "output_dir": str(tmp_path / "out")})
    result = train(recipe)
    record = json.loads((result.final_dir / "embedtrain_run.json").read_text())
    assert {d["name"]: d["weight"] for d in record["datasets"]} == {"target": 2, "general": 1}
    assert record["mixture"]["target"] == pytest.approx({"target": 2 / 3, "general": 1 / 3}, abs=1e-6)
    assert set(record["mixture"]["batches"]) <= {"target", "general"} and sum(record["mixture"]["batches"].values()) >= 6
