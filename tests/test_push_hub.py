"""``embedtrain push``: the staged folder, the generated card (model-index from MTEB results), token hygiene."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from embedtrain.evaluation.results import weights_fingerprint
from embedtrain.hub import push, stage_folder
from embedtrain.hub.push import PushError

TOKEN = "hf_SeCrEtToKeN0123456789abcdef"


#: mteb's data revisions of the real tasks the fixtures use (a result under another revision is a local task).
REVISIONS = {"STSBenchmark": "b0fddb56ed78048fa8b90373c8a3cfc37b684831",
             "Banking77Classification": "0fd18e25b25c072e09e0d92ab615fda904d66300",
             "SICK-R": "20a6d6f312dd54037fe07a32d58e5e168867909d"}


def _result_json(task: str, score: float, revision: str | None = None) -> dict:
    return {"dataset_revision": revision or REVISIONS.get(task, "local"), "task_name": task, "mteb_version": "2.26.24",
            "scores": {"test": [{"main_score": score, "cosine_spearman": score, "hf_subset": "default",
                                 "languages": ["eng-Latn"]}]}, "evaluation_time": 1.0}


@pytest.fixture
def checkpoint(tmp_path, tiny_model_dir):
    """A trained-looking final/ folder: model, recipe with local paths, eval results, training leftovers."""
    ckpt = tmp_path / "run" / "final"
    shutil.copytree(tiny_model_dir, ckpt)
    recipe = {"model": {"name_or_path": "all-MiniLM-L6-v2", "max_seq_length": 128},
              "datasets": [{"name": "stsb", "path": str(tmp_path / "secret_home" / "stsb_train.jsonl"),
                            "format": "scored_pairs"}],
              "loss": {"name": "cosent", "params": {"scale": 20.0}},
              "training": {"num_train_epochs": 1, "learning_rate": 2e-5},
              "output_dir": str(tmp_path / "run"), "seed": 42}
    (ckpt / "embedtrain_recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    (ckpt / "optimizer.pt").write_bytes(b"x")
    (ckpt / "rng_state.pth").write_bytes(b"x")
    (ckpt / "checkpoint-5").mkdir()
    (ckpt / "checkpoint-5" / "model.safetensors").write_bytes(b"x")
    fingerprint = weights_fingerprint(ckpt)
    results = ckpt / "eval" / "results" / "embedtrain__run-final"
    (results / fingerprint).mkdir(parents=True)
    (results / fingerprint / "STSBenchmark.json").write_text(json.dumps(_result_json("STSBenchmark", 0.8123)))
    (results / fingerprint / "Banking77Classification.json").write_text(
        json.dumps(_result_json("Banking77Classification", 0.7)))
    (results / "0123456789ab").mkdir()  # results of older weights: must not reach the card
    (results / "0123456789ab" / "SICK-R.json").write_text(json.dumps(_result_json("SICK-R", 0.5)))
    (ckpt / "eval" / "scores.json").write_text(json.dumps({"checkpoint": str(ckpt)}))
    return ckpt


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


def test_dry_run_writes_exactly_the_upload_folder(checkpoint, tmp_path):
    out = tmp_path / "staged"
    result = push(checkpoint, "my-org/tiny-sts", dry_run=out)
    assert not result.uploaded
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == result.files
    assert {"model.safetensors", "config.json", "modules.json", "1_Pooling/config.json", "tokenizer.json",
            "README.md", "embedtrain_recipe.yaml"} <= set(files)
    assert not any(f.startswith(("eval/", "checkpoint-")) or f in {"optimizer.pt", "rng_state.pth"} for f in files)
    assert (out / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    assert str(tmp_path) not in _all_text(out)  # no local paths anywhere
    recipe = yaml.safe_load((out / "embedtrain_recipe.yaml").read_text())
    assert recipe["datasets"][0]["path"] == "stsb_train.jsonl" and recipe["output_dir"] == "run"

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "sentence-transformers"
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    results = {(r.dataset_name, r.metric_type): r for r in card.data.eval_results}
    assert set(results) == {("MTEB STSBenchmark", "cosine_spearman"), ("MTEB Banking77Classification", "accuracy")}
    sts = results[("MTEB STSBenchmark", "cosine_spearman")]
    assert sts.metric_value == pytest.approx(81.23) and sts.task_type == "STS" and sts.dataset_split == "test"
    assert sts.dataset_type == "mteb/stsbenchmark-sts"
    assert "SICK-R" not in card.content
    assert "cosent" in card.text and "stsb_train.jsonl" in card.text and "81.23" in card.text

    with pytest.raises(Exception, match="not empty"):
        push(checkpoint, "my-org/tiny-sts", dry_run=out)


class FakeApi:
    """Records calls; copies the uploaded folder before push() deletes its staging area."""

    def __init__(self, token=None, fail: bool = False, seen: dict | None = None):
        self.token, self.fail, self.seen = token, fail, seen if seen is not None else {}

    def create_repo(self, **kwargs):
        self.seen["create_repo"] = kwargs

    def upload_folder(self, *, folder_path, **kwargs):
        if self.fail:
            raise RuntimeError(f"401 Unauthorized for token {self.token}")
        self.seen["upload"] = kwargs
        self.seen["text"] = _all_text(Path(folder_path))
        self.seen["files"] = sorted(p.name for p in Path(folder_path).iterdir())

        class Info:
            commit_url = "https://huggingface.co/my-org/tiny-sts/commit/abc"

        return Info()


def test_upload_uses_hfapi_and_never_writes_the_token(checkpoint, monkeypatch, caplog):
    import huggingface_hub

    seen: dict = {}
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: FakeApi(token, seen=seen))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG):
        result = push(checkpoint, "my-org/tiny-sts", private=True)
    assert result.uploaded and result.url.endswith("/commit/abc")
    assert seen["create_repo"] == {"repo_id": "my-org/tiny-sts", "repo_type": "model", "private": True,
                                   "exist_ok": True}
    assert seen["upload"]["repo_id"] == "my-org/tiny-sts" and "README.md" in seen["files"]
    assert TOKEN not in seen["text"] and TOKEN not in caplog.text
    assert not any(TOKEN in p.read_bytes().decode("utf-8", "replace") for p in checkpoint.rglob("*") if p.is_file())


def test_upload_errors_are_scrubbed_of_the_token(checkpoint, monkeypatch, caplog):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: FakeApi(token, fail=True))
    with caplog.at_level(logging.DEBUG), pytest.raises(PushError) as err:
        push(checkpoint, "my-org/tiny-sts", token=TOKEN)
    assert "401 Unauthorized" in str(err.value) and TOKEN not in str(err.value) and TOKEN not in caplog.text


def test_push_cli_dry_run_with_token_option(checkpoint, tmp_path, capsys, caplog):
    from embedtrain.cli.app import run_app

    with caplog.at_level(logging.DEBUG):
        run_app(["push", str(checkpoint), "--repo-id", "me/m", "--token", TOKEN, "--dry-run", str(tmp_path / "d")])
    printed = capsys.readouterr()
    assert "nothing uploaded" in " ".join(printed.out.split())
    everything = printed.out + printed.err + caplog.text + _all_text(tmp_path / "d")
    assert TOKEN not in "".join(everything.split())  # rich may wrap lines: compare without whitespace


def test_card_of_a_task_adapter_soup(tmp_path, tiny_model_dir):
    from embedtrain.adapters.checkpoint import attach_tasks
    from embedtrain.models import load_model
    from embedtrain.schema.tasks import LoraSpec, TaskConfig

    model = load_model(tiny_model_dir, device="cpu")
    attach_tasks(model, [TaskConfig(name="retrieval.query", prompt="query: ", lora=LoraSpec(r=2)),
                         TaskConfig(name="text-matching", lora=LoraSpec(r=2))])
    ckpt = tmp_path / "ckpt"
    model.save(str(ckpt))
    (ckpt / "soup.json").write_text(json.dumps({
        "method": "greedy", "members": [str(tmp_path / "a")], "weights": [1.0],
        "ingredients": [str(tmp_path / "a"), str(tmp_path / "b")],
        "individual_scores": {str(tmp_path / "a"): 80.0, str(tmp_path / "b"): 70.0}, "soup_score": 80.0,
        "greedy_steps": [{"ingredient": str(tmp_path / "a"), "score": 80.0, "kept": True}], "metric": "dev.jsonl"}))
    staged = tmp_path / "staged"
    files = stage_folder(ckpt, staged, "me/tasks")
    assert "adapters/retrieval_query/adapter_model.safetensors" in files and "task_adapters.json" in files
    card = (staged / "README.md").read_text()
    assert 'task="retrieval.query"' in card and "| `text-matching` |" in card and "greedy soup" in card
    assert "No MTEB results" in card
    assert str(tmp_path) not in _all_text(staged)


# -------------------------------------------------------------------------------------------------------
# The card extends sentence-transformers' card; nothing local, secret or unset is published (issues 18, 19)
# -------------------------------------------------------------------------------------------------------
@pytest.fixture
def trained(tmp_path, tiny_model_dir):
    """A real tiny training run: ST's own card in final/, the run record, curves; eval paths are absolute."""
    from helpers import pair_rows, scored_rows, write_recipe, write_rows

    from embedtrain.api import train
    from embedtrain.schema import load_recipe

    data = tmp_path / "private" / "data"
    data.mkdir(parents=True)
    write_rows(data / "pairs.jsonl", pair_rows(24))
    write_rows(data / "dev.jsonl", scored_rows(20))
    (data / "tasks.yaml").write_text(yaml.safe_dump({"tasks": [
        {"name": "MyPrivateSTS", "type": "sts", "files": {"test": "dev.jsonl"}}]}))
    recipe = {"model": {"name_or_path": str(tiny_model_dir), "max_seq_length": 48},
              "datasets": [{"name": "pairs", "path": str(data / "pairs.jsonl"), "format": "pairs"}],
              "loss": {"name": "mnrl"},
              "evaluators": [{"name": "dev", "path": str(data / "dev.jsonl")}],
              "eval": {"tasks": ["MyPrivateSTS"], "data_dir": str(data), "task_config": [str(data / "tasks.yaml")]},
              "training": {"per_device_train_batch_size": 8, "max_steps": 4, "logging_steps": 1, "save_steps": 2,
                           "eval_strategy": "steps", "eval_steps": 2, "learning_rate": 1e-3},
              "output_dir": str(tmp_path / "run"), "seed": 1}
    result = train(load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe)))
    final = result.final_dir
    # a secret that found its way into a saved recipe must not be published
    saved = yaml.safe_load((final / "embedtrain_recipe.yaml").read_text())
    saved["training"]["hub_token"] = TOKEN
    (final / "embedtrain_recipe.yaml").write_text(yaml.safe_dump(saved))
    fingerprint = weights_fingerprint(final)
    results = final / "eval" / "results" / "embedtrain__run-final" / fingerprint
    results.mkdir(parents=True, exist_ok=True)
    (results / "STSBenchmark.json").write_text(json.dumps(_result_json("STSBenchmark", 0.8123)))
    assert list((final / "eval").rglob("MyPrivateSTS.json"))  # written by the recipe's eval: section
    (final / "model.safetensors").chmod(0o600)
    return final


def test_card_extends_sentence_transformers_card(trained, tmp_path):
    st_card = (trained / "README.md").read_text()
    assert "### Training Logs" in st_card  # sentence-transformers wrote its card while saving
    out = tmp_path / "staged"
    files = push(trained, "my-org/tiny", dry_run=out).files
    assert {"training_curves.png", "embedtrain_run.json", "embedtrain_recipe.yaml", "README.md"} <= set(files)
    card = ModelCard.load(out / "README.md")
    text = card.text
    # sentence-transformers' sections are kept...
    for section in ("## Model Details", "### Full Model Architecture", "## Training Details", "### Training Logs",
                    "### Framework Versions", "## Citation", "#### Non-Default Hyperparameters"):
        assert section in text, section
    assert 'SentenceTransformer("my-org/tiny")' in text and "sentence_transformers_model_id" not in text
    assert "dev_spearman_cosine" in text  # ST's evaluator table in the training logs
    # ...and embedtrain's are added
    for section in ("## Training with embedtrain", "### Data", "### Losses and models", "### Training curves",
                    "![training curves](training_curves.png)", "### In-training evaluators", "## Evaluation (MTEB)",
                    "## embedtrain recipe"):
        assert section in text, section
    assert text.index("## Training with embedtrain") < text.index("## Training Details")
    record = json.loads((trained / "embedtrain_run.json").read_text())
    assert record["datasets"][0]["sha256"][:16] in text and "| pairs | `pairs.jsonl` |" in text
    assert "embedtrain" in card.data.tags and "generated_from_trainer" in card.data.tags


def test_model_index_holds_only_real_mteb_tasks(trained, tmp_path):
    out = tmp_path / "staged"
    push(trained, "my-org/tiny", dry_run=out)
    card = ModelCard.load(out / "README.md")
    assert [(r.dataset_name, r.dataset_type) for r in card.data.eval_results] == [
        ("MTEB STSBenchmark", "mteb/stsbenchmark-sts")]
    raw = (out / "README.md").read_text()
    front_matter = raw.split("---")[1]
    assert "mteb/MyPrivateSTS" not in raw and "MyPrivateSTS" not in front_matter and "Unknown" not in front_matter
    local = raw[raw.index("Local evaluation tasks"):]
    assert re.search(r"\| MyPrivateSTS \| test \| cosine_spearman \| -?\d+\.\d\d \|", local)  # in the text
    # a local task that reuses a real task's name but not its data is local too
    assert not any("MyPrivateSTS" in r.dataset_name for r in card.data.eval_results)


def test_nothing_local_secret_or_unset_is_published(trained, tmp_path):
    out = tmp_path / "staged"
    push(trained, "my-org/tiny", dry_run=out)
    everything = _all_text(out)
    assert str(tmp_path) not in everything and "/private/data" not in everything
    assert TOKEN not in everything and "***" in (out / "embedtrain_recipe.yaml").read_text()
    for recipe in (yaml.safe_load((out / "embedtrain_recipe.yaml").read_text()),
                   yaml.safe_load(_recipe_block((out / "README.md").read_text()))):
        assert recipe["eval"]["data_dir"] == "data" and recipe["eval"]["task_config"] == ["tasks.yaml"]
        assert recipe["datasets"][0]["path"] == "pairs.jsonl"
        assert not _has_null(recipe)
    assert "null" not in _recipe_block((out / "README.md").read_text())


def test_staged_files_have_normal_permissions(trained, tmp_path):
    assert (trained / "model.safetensors").stat().st_mode & 0o777 == 0o600
    out = tmp_path / "staged"
    push(trained, "my-org/tiny", dry_run=out)
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert modes["model.safetensors"] == 0o644
    assert all(m == (0o755 if (out / p).is_dir() else 0o644) for p, m in modes.items()), modes


def test_card_states_training_length_and_provenance(trained, tmp_path):
    out = tmp_path / "staged"
    push(trained, "my-org/tiny", dry_run=out)
    text = (out / "README.md").read_text()
    # trained at the recipe's max_seq_length, saved at the start model's own length (issue 19): the card says both
    assert "trained at `max_seq_length` **48** tokens; the saved model encodes up to **64** tokens" in text
    assert "sha256" in text and "rows used" in text and "| 24 |" in text
    # a checkpoint saved at the length it was trained at says that
    config = json.loads((trained / "tokenizer_config.json").read_text())
    config["model_max_length"] = 48
    (trained / "tokenizer_config.json").write_text(json.dumps(config))
    push(trained, "my-org/tiny", dry_run=tmp_path / "staged2")
    text = (tmp_path / "staged2" / "README.md").read_text()
    assert "trained at `max_seq_length` 48 tokens; the saved model encodes up to 48 tokens" in text


def test_card_without_sentence_transformers_card(checkpoint, tmp_path):
    (checkpoint / "README.md").unlink(missing_ok=True)
    out = tmp_path / "staged"
    push(checkpoint, "my-org/tiny", dry_run=out)
    text = ModelCard.load(out / "README.md").text
    assert text.lstrip().startswith("# tiny") and "## Usage" in text and "## embedtrain recipe" in text


def test_public_recipe_helpers():
    from embedtrain.hub.public import public_recipe, scrub_paths

    recipe = {"model": {"name_or_path": "/home/me/models/base", "max_seq_length": None},
              "datasets": [{"name": "a", "path": "org/data", "file_type": "hub", "format": "pairs"},
                           {"name": "b", "path": "../data/b.jsonl", "file_type": None, "format": "pairs",
                            "loss": {"name": "gist", "params": {"guide": "/home/me/guide"}}}],
              "loss": {"name": "mnrl", "params": {"guide": "sentence-transformers/all-mpnet-base-v2"}},
              "training": {"hub_token": "hf_x", "push_to_hub_password": "p", "learning_rate": 1e-5},
              "eval": {"data_dir": "~/data", "output": None}, "output_dir": "runs/x"}
    out = public_recipe(recipe)
    assert out["model"] == {"name_or_path": "base"}
    assert out["datasets"][0]["path"] == "org/data" and out["datasets"][1]["path"] == "b.jsonl"
    assert out["datasets"][1]["loss"]["params"]["guide"] == "guide"
    assert out["loss"]["params"]["guide"] == "sentence-transformers/all-mpnet-base-v2"
    assert out["training"] == {"hub_token": "***", "push_to_hub_password": "***", "learning_rate": 1e-5}
    assert out["eval"] == {"data_dir": "data"} and out["output_dir"] == "x"
    text = "saved to /home/me/run/final and ~/x/y; see https://sbert.net/docs/a.html and/or </details>"
    assert scrub_paths(text) == "saved to final and y; see https://sbert.net/docs/a.html and/or </details>"


def _recipe_block(card: str) -> str:
    section = card[card.index("## embedtrain recipe"):]
    return section[section.index("```yaml") + 7:section.index("```", section.index("```yaml") + 7)]


def _has_null(data) -> bool:
    if isinstance(data, dict):
        return any(v is None or _has_null(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_null(v) for v in data)
    return False
