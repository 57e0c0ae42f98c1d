"""SMAE pre-training stage: sliced MLM head, a few training steps, a loadable checkpoint, recipe errors."""

from __future__ import annotations

import pytest
import torch
from helpers import write_recipe, write_rows
from sentence_transformers import SentenceTransformer

from embedtrain.api import train
from embedtrain.cli.app import run_app
from embedtrain.errors import DataError, RecipeError
from embedtrain.models.mlm_head import mlm_head_parts, sliced_mlm_logits
from embedtrain.schema import SmaeRecipe, load_recipe
from embedtrain.schema.recipe import recipe_stage
from embedtrain.train.smae import SubnetworkMLMObjective, build_mlm_model

pytestmark = pytest.mark.usefixtures("one_thread")


def smae_recipe(tmp_path, model_dir, **extra):
    write_rows(tmp_path / "texts.jsonl", [{"sentence": f"the cat number {i} sat on mat {i % 5}"} for i in range(24)])
    recipe = {"stage": "smae", "model": {"name_or_path": str(model_dir)},
              "datasets": [{"name": "texts", "path": "texts.jsonl", "format": "text"}],
              "smae": {"pairs": [[1, 8], [2, 16], [4, 32]]},
              "training": {"max_steps": 3, "per_device_train_batch_size": 8, "save_steps": 3, "logging_steps": 1,
                           "learning_rate": 1e-3},
              "output_dir": str(tmp_path / "out")}
    recipe.update(extra)
    return write_recipe(tmp_path / "smae.yaml", recipe)


def test_sliced_head_at_full_width_is_the_models_own_head(tiny4):
    mlm = build_mlm_model(tiny4)
    mlm.eval()
    hidden = torch.randn(5, 32)
    parts = mlm_head_parts(mlm)
    torch.testing.assert_close(sliced_mlm_logits(parts, hidden, 32), mlm.cls(hidden), rtol=1e-5, atol=1e-5)
    small = sliced_mlm_logits(parts, hidden, 8)
    assert small.shape == (5, mlm.config.vocab_size)
    # the sub-head only reads the first 8 dims
    changed = hidden.clone()
    changed[:, 8:] = 0
    torch.testing.assert_close(sliced_mlm_logits(parts, changed, 8), small)


def test_objective_scores_every_pair_and_reaches_the_right_layers(tiny4):
    mlm = build_mlm_model(tiny4)
    objective = SubnetworkMLMObjective(mlm, [(1, 8), (2, 16)])
    objective.install(mlm)
    ids = torch.randint(1000, 2000, (4, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    out = mlm(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss) and objective.counts == 1 and set(objective.sums) == {(1, 8), (2, 16)}
    layer_grads = {i: mlm.bert.encoder.layer[i].attention.self.query.weight.grad for i in range(4)}
    assert layer_grads[0].abs().sum() > 0 and layer_grads[1].abs().sum() > 0
    assert layer_grads[2] is None or layer_grads[2].abs().sum() == 0  # no pair uses layers 3-4


def test_smae_stage_trains_and_writes_a_checkpoint_for_the_next_recipe(tmp_path, tiny4):
    recipe = load_recipe(smae_recipe(tmp_path, tiny4))
    result = train(recipe)
    pair_losses = result.details["pair_losses"]
    assert result.global_step == 3 and set(pair_losses) == {(1, 8), (2, 16), (4, 32)}
    assert all(torch.isfinite(torch.tensor(v)) for v in pair_losses.values())
    trained = SentenceTransformer(str(result.final_dir), device="cpu")
    start = SentenceTransformer(str(tiny4), device="cpu")
    assert trained.encode(["a cat"]).shape == (1, 32)
    assert not torch.allclose(torch.tensor(start.encode(["a cat"])), torch.tensor(trained.encode(["a cat"])))
    assert (result.output_dir / "checkpoint-3").is_dir()
    assert "stage: smae" in (result.final_dir / "embedtrain_recipe.yaml").read_text()


def test_smae_recipe_through_the_cli(tmp_path, tiny4, capsys):
    path = smae_recipe(tmp_path, tiny4, training={"max_steps": 1, "per_device_train_batch_size": 8})
    run_app(["validate", str(path)])
    assert "24 texts" in capsys.readouterr().out
    run_app(["train", str(path)])
    assert "final model" in capsys.readouterr().out
    assert (tmp_path / "out" / "final" / "modules.json").is_file()
    with pytest.raises(SystemExit) as info:  # checkpoints exist now: needs --resume / --overwrite
        run_app(["train", str(path)])
    assert info.value.code == 2


def test_stage_selects_the_recipe_kind(tmp_path, tiny4):
    path = smae_recipe(tmp_path, tiny4)
    assert isinstance(load_recipe(path), SmaeRecipe)
    with pytest.raises(RecipeError, match="unknown stage 'other'") as info:
        load_recipe(path, ["stage=other"])
    assert info.value.field == "stage (from --set 'stage=other')"
    assert recipe_stage({"model": {}, "output_dir": "x"}) == "contrastive"  # recipes written before 'stage'
    assert recipe_stage({"tasks": [], "output_dir": "x"}) == "tasks"


@pytest.mark.parametrize(("extra", "field", "message"), [
    ({"smae": {"pairs": [[5, 8]]}}, "smae.pairs", "layer 5 is outside 1..4"),
    ({"smae": {"pairs": [[2, 8], [1, 16]]}}, "smae.pairs", "small to large"),
    ({"smae": {"pairs": [[1, 8]], "weights": [1, 2]}}, "smae.weights", "one per pair"),
    ({"smae": {"mlm_probability": 1.5}}, "smae.mlm_probability", "less than 1"),
    ({"smae": {"pair": [[1, 8]]}}, "smae.pair", "Did you mean 'pairs'"),
    ({"training": {"max_step": 3}}, "training.max_step", "Did you mean 'max_steps'"),
])
def test_smae_recipe_errors_name_the_field(tmp_path, tiny4, extra, field, message):
    path = smae_recipe(tmp_path, tiny4, **extra)
    with pytest.raises(RecipeError, match=message) as info:
        train(path)
    assert info.value.field == field and info.value.line is not None


def test_smae_text_column_missing_is_a_data_error(tmp_path, tiny4):
    path = smae_recipe(tmp_path, tiny4)
    write_rows(tmp_path / "texts.jsonl", [{"title": "no text column here"}])
    with pytest.raises(DataError, match="missing column for 'text'"):
        train(path)
