"""SMAE pre-training stage: sliced MLM head, a few training steps, a loadable checkpoint, recipe errors."""

from __future__ import annotations

import pytest
import torch
from helpers import write_recipe, write_rows
from sentence_transformers import SentenceTransformer

from embedtrain.api import train
from embedtrain.cli.app import run_app
from embedtrain.errors import DataError, RecipeError
from embedtrain.models.mlm_head import mlm_head_parts, subdim_mlm_logits
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


def test_subdim_head_is_the_reference_head_on_the_first_d_dims(tiny4):
    mlm = build_mlm_model(tiny4)
    mlm.eval()
    hidden = torch.randn(5, 32)
    parts = mlm_head_parts(mlm)
    torch.testing.assert_close(subdim_mlm_logits(parts, hidden, 32), mlm.cls(hidden), rtol=1e-5, atol=1e-5)
    small = subdim_mlm_logits(parts, hidden, 8)
    assert small.shape == (5, mlm.config.vocab_size)
    # Starbucks' head: the first 8 input columns of the dense layer (full bias, all 32 outputs), then the full
    # LayerNorm and decoder -- the model's own head on the hidden state with dims 9..32 zeroed
    zeroed = hidden.clone()
    zeroed[:, 8:] = 0
    torch.testing.assert_close(small, mlm.cls(zeroed), rtol=1e-5, atol=1e-5)


def test_objective_scores_every_pair_and_reaches_the_right_layers(tiny4):
    mlm = build_mlm_model(tiny4)
    objective = SubnetworkMLMObjective(mlm, [(1, 8), (2, 16)])
    objective.install(mlm)
    ids = torch.randint(1000, 2000, (4, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    out = mlm(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss) and objective.counts == 1 and set(objective.mean_losses()) == {(1, 8), (2, 16)}
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


def test_mae_decoder_loss_follows_the_starbucks_reference(tiny4):
    """Per pair (MLM + MAE) / 2, where MAE = the full MLM head on one decoder layer over the decoder input
    whose first token is the head-transformed, D-cut CLS state of the pair (computed here independently)."""
    from transformers.masking_utils import create_bidirectional_mask

    torch.manual_seed(0)
    mlm = build_mlm_model(tiny4)
    mlm.eval()
    layer0 = {k: v.clone() for k, v in mlm.bert.encoder.layer[0].state_dict().items()}
    objective = SubnetworkMLMObjective(mlm, [(1, 8), (4, 32)], mae=True)
    objective.install(mlm)
    decoder = mlm.smae_decoder
    assert decoder is not mlm.bert.encoder.layer[0]  # its own weights, initialised from layer 1
    for k, v in decoder.state_dict().items():
        torch.testing.assert_close(v, layer0[k])
    ids = torch.randint(1000, 2000, (3, 9))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    dec_ids, dec_labels = ids.clone(), torch.full_like(ids, -100)
    dec_ids[:, [2, 3, 5]] = 103
    dec_labels[:, [2, 3, 5]] = ids[:, [2, 3, 5]]
    out = mlm(input_ids=ids, attention_mask=mask, labels=labels, decoder_input_ids=dec_ids, decoder_labels=dec_labels)
    with torch.no_grad():
        hidden = mlm.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        emb = mlm.bert.embeddings(input_ids=dec_ids)
        ext = create_bidirectional_mask(config=mlm.config, inputs_embeds=emb, attention_mask=mask)
        expected = 0.0
        for layer, dim in [(1, 8), (4, 32)]:
            padded = torch.zeros_like(hidden[layer])
            padded[..., :dim] = hidden[layer][..., :dim]
            mlm_loss = torch.nn.functional.cross_entropy(mlm.cls(padded)[labels != -100], labels[labels != -100])
            x = emb.clone()
            x[:, :1] = mlm.cls.predictions.transform(padded[:, :1])
            y = decoder(x, ext)
            y = y[0] if isinstance(y, tuple) else y
            sel = dec_labels != -100
            mae_loss = torch.nn.functional.cross_entropy(mlm.cls(y)[sel], dec_labels[sel])
            expected += (mlm_loss + mae_loss) / 2 / 2
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-4)
    out.loss.backward()
    assert decoder.attention.self.query.weight.grad.abs().sum() > 0  # the decoder layer trains
    assert set(objective.mean_mae_losses()) == {(1, 8), (4, 32)}


def test_whole_word_masks_nest_the_encoder_in_the_decoder_at_the_paper_rates(tiny4):
    from transformers import AutoTokenizer

    from embedtrain.train.smae_masking import SmaeCollator, tokenize_for_smae

    tok = AutoTokenizer.from_pretrained(str(tiny4))
    texts = ["unbelievably, the photosynthesis researchers characterised extraordinary phenomena " * 3] * 40
    rows = tokenize_for_smae(tok, texts, 128)
    batch = SmaeCollator(tok, 0.2, 0.4, whole_word=True, seed=3)(
        [{k: rows[k][i] for k in rows} for i in range(len(texts))])
    enc, dec = batch["labels"] != -100, batch["decoder_labels"] != -100
    assert not (enc & ~dec).any()  # every encoder-masked token is masked for the decoder too
    n = batch["attention_mask"].sum(1).float()
    assert abs(float((enc.sum(1) / n).mean()) - 0.2) < 0.03 and abs(float((dec.sum(1) / n).mean()) - 0.4) < 0.03
    special = torch.tensor(rows["special_tokens_mask"])
    assert not (dec & special.bool()).any()
    for i in range(len(texts)):  # whole words: a masked piece's word is masked entirely
        words = rows["word_ids"][i]
        for kind in (enc, dec):
            masked_words = {words[p] for p in range(len(words)) if kind[i, p]}
            assert all(bool(kind[i, p]) == (words[p] in masked_words) for p in range(len(words)) if words[p] >= 0)
    # labels hold the original tokens at masked positions; ~80% of those inputs are [MASK]
    ids = torch.tensor(rows["input_ids"])
    assert torch.equal(batch["labels"][enc], ids[enc]) and torch.equal(batch["decoder_labels"][dec], ids[dec])
    share = float((batch["decoder_input_ids"][dec] == tok.mask_token_id).float().mean())
    assert 0.7 < share < 0.9


def test_smae_stage_with_mae_saves_the_decoder_in_checkpoints_not_in_final(tmp_path, tiny4):
    from safetensors.torch import load_file

    result = train(load_recipe(smae_recipe(tmp_path, tiny4)))
    assert set(result.details["pair_mae_losses"]) == {(1, 8), (2, 16), (4, 32)}
    ckpt = load_file(str(result.output_dir / "checkpoint-3" / "model.safetensors"))
    assert any(k.startswith("smae_decoder.") for k in ckpt)
    final_files = [p.name for p in result.final_dir.rglob("*.safetensors")]
    final = load_file(str(next(result.final_dir.rglob("model.safetensors"))))
    assert final_files and not any("smae_decoder" in k or k.startswith("cls.") for k in final)
