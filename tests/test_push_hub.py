"""``embedtrain push``: the staged folder, the generated card (model-index from MTEB results), token hygiene."""

from __future__ import annotations

import json
import logging
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
