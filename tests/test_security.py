"""Nothing from a model folder runs without an explicit flag, and secrets never reach disk, a card or a log (issue 11)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from helpers import pair_rows, scored_rows, write_recipe, write_rows

from embedtrain.cli import run_app

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
"""


def _plant(model_dir, dst, marker):
    """A copy of ``model_dir`` whose configs ask to run ``evil.py`` (which writes ``marker`` when imported)."""
    shutil.copytree(model_dir, dst)
    (dst / "evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.EvilModel",
                                                                         "AutoConfig": "evil.EvilConfig"}}))
    tok = json.loads((dst / "tokenizer_config.json").read_text())
    (dst / "tokenizer_config.json").write_text(json.dumps({**tok, "auto_map": {"AutoTokenizer": ["evil.Tok", None]}}))
    modules = json.loads((dst / "modules.json").read_text())
    modules[-1]["type"] = "evil.EvilModule"
    (dst / "modules.json").write_text(json.dumps(modules))
    return dst


@pytest.fixture
def planted(tmp_path, tiny_model_dir):
    marker = tmp_path / "MARKER"
    return _plant(tiny_model_dir, tmp_path / "evil_model", marker), marker


def _refused(capsys, argv):
    with pytest.raises(SystemExit) as info:
        run_app(argv)
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.out + captured.err
    assert "--trust-remote-code" in captured.err and "Traceback" not in captured.err
    return captured.err


def test_no_command_runs_code_from_a_model_folder(planted, tmp_path, tiny_model_dir, capsys):
    evil, marker = planted
    write_rows(tmp_path / "pairs.jsonl", pair_rows(8))
    recipe = {"model": {"name_or_path": str(evil)}, "datasets": [{"name": "p", "path": "pairs.jsonl", "format": "pairs"}],
              "loss": {"name": "mnrl"}, "training": {"max_steps": 1}, "output_dir": str(tmp_path / "out")}
    _refused(capsys, ["train", str(write_recipe(tmp_path / "train.yaml", recipe))])
    guide = {**recipe, "model": {"name_or_path": str(tiny_model_dir)},
             "loss": {"name": "gist", "params": {"guide": str(evil)}}}
    _refused(capsys, ["train", str(write_recipe(tmp_path / "guide.yaml", guide))])
    sts = tmp_path / "sts.jsonl"
    write_rows(sts, [{"sentence1": r["sentence1"], "sentence2": r["sentence2"], "score": r["score"]}
                     for r in scored_rows(8)])
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(f"tasks:\n  - name: T\n    type: sts\n    files: {{test: {sts}}}\n")
    _refused(capsys, ["eval", str(evil), "--task-config", str(tasks), "--tasks", "T"])
    _refused(capsys, ["soup", str(tiny_model_dir), str(evil), str(tmp_path / "soup")])
    _refused(capsys, ["export", str(evil), str(tmp_path / "small"), "--layers", "1"])
    _refused(capsys, ["export-task", str(evil), str(tmp_path / "task"), "--task", "x"])
    _refused(capsys, ["tasks", str(evil)])
    _refused(capsys, ["mine", "--model", str(evil), "--input", str(tmp_path / "pairs.jsonl"),
                      "--output", str(tmp_path / "mined.jsonl")])
    _refused(capsys, ["mine", "--model", str(tiny_model_dir), "--input", str(tmp_path / "pairs.jsonl"),
                      "--output", str(tmp_path / "mined.jsonl"), "--cross-encoder", str(evil)])
    run_app(["push", str(evil), "--repo-id", "org/x", "--dry-run", str(tmp_path / "staged")])  # copies, never loads
    assert not marker.exists()


def test_embedtrain_modules_load_without_the_flag_but_nothing_else(tmp_path, tiny_model_dir):
    from embedtrain.errors import CheckpointError
    from embedtrain.models.resolve import load_model
    from embedtrain.models.trust import custom_code_requests

    assert custom_code_requests(tiny_model_dir) == []
    evil = _plant(tiny_model_dir, tmp_path / "evil", tmp_path / "MARKER")
    requests = custom_code_requests(evil)
    assert any("config.json: auto_map" in r for r in requests)
    assert any("tokenizer_config.json: auto_map" in r for r in requests)
    assert any("module class evil.EvilModule" in r for r in requests)
    with pytest.raises(CheckpointError, match="asks to run its own Python code"):
        load_model(evil)
    assert not (tmp_path / "MARKER").exists()


FAKE_TOKEN = "hf_FAKEsecretTOKEN0123456789abcdef"


def test_secrets_never_reach_disk_a_card_or_a_log(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "")  # restored after the test (training moves the token here)
    write_rows(tmp_path / "pairs.jsonl", pair_rows(16))
    recipe = write_recipe(tmp_path / "r.yaml", {
        "model": {"name_or_path": str(tiny_model_dir)},
        "datasets": [{"name": "p", "path": "pairs.jsonl", "format": "pairs"}],
        "loss": {"name": "mnrl"},
        "training": {"max_steps": 2, "save_steps": 1, "per_device_train_batch_size": 8, "hub_token": FAKE_TOKEN},
        "output_dir": str(tmp_path / "out")})
    run_app(["validate", str(recipe)])
    run_app(["train", str(recipe)])
    logging.getLogger("embedtrain.anything").warning("a library logs the token: %s", FAKE_TOKEN)
    from embedtrain.io.secrets import RedactingFilter

    for name in ("", "transformers"):  # libraries with handlers of their own scrub too
        assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in logging.getLogger(name).handlers)
    run_app(["push", str(tmp_path / "out" / "final"), "--repo-id", "org/model", "--dry-run", str(tmp_path / "staged"),
             "--token", FAKE_TOKEN])
    captured = capsys.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err
    assert "a library logs the token: ***" in captured.err
    leaks = [str(p) for p in tmp_path.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]
    assert leaks == [str(tmp_path / "r.yaml")]  # only the user's own recipe holds it
    saved = (tmp_path / "out" / "final" / "embedtrain_recipe.yaml").read_text()
    assert "hub_token: '***'" in saved
    assert (tmp_path / "staged" / "README.md").is_file()
