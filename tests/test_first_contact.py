"""A new user's first mistakes meet one line and exit code 2, never a traceback (issue 9)."""

from __future__ import annotations

import json

import pytest
from helpers import pair_rows, scored_rows, write_recipe, write_rows

from embedtrain.cli import run_app
from embedtrain.errors import CheckpointError, DataError, RecipeError

#: Every subcommand, with arguments that are complete enough to get past the missing-argument check.
COMMANDS = {
    "train": ["r.yaml"],
    "validate": ["r.yaml"],
    "losses": [],
    "eval": ["model"],
    "mine": ["--model", "m", "--input", "i.jsonl", "--output", "o.jsonl"],
    "soup": ["a", "b", "out"],
    "merge-start": ["ckpt", "out", "--start", "m"],
    "export": ["ckpt", "out"],
    "export-task": ["ckpt", "out", "--task", "t"],
    "tasks": ["ckpt"],
    "push": ["ckpt", "--repo-id", "org/name"],
    "env": [],
}
#: What each command cannot run without (commands absent here have nothing required).
MISSING = {
    "train": [], "validate": [], "mine": ["--model", "m"], "soup": [], "export": ["ckpt"],
    "export-task": ["ckpt", "out"], "tasks": [], "push": ["ckpt"], "merge-start": ["ckpt", "out"],
}


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        run_app(argv)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert info.value.code == 2, (argv, output)
    assert "Traceback" not in output
    return output


def test_every_command_is_registered():
    from typer.main import get_command

    from embedtrain.cli import app

    assert set(get_command(app).commands) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unknown_option_is_a_usage_error(command, capsys):
    output = _usage_error(capsys, [command, *COMMANDS[command], "--no-such-option"])
    assert "No such option" in output


@pytest.mark.parametrize("command", sorted(MISSING))
def test_missing_argument_is_a_usage_error(command, capsys):
    output = _usage_error(capsys, [command, *MISSING[command]])
    assert "Missing" in output


def test_no_arguments_unknown_command_and_bad_list(capsys):
    assert "Usage" in _usage_error(capsys, [])
    assert "No such command" in _usage_error(capsys, ["trian"])
    assert "expected comma-separated integers" in _usage_error(capsys, ["eval", "model", "--dims", "32,abc"])
    assert "--compare needs" in _usage_error(capsys, ["eval", "--compare", "only-one"])


def test_console_script_prints_no_traceback(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "embedtrain", "train"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "Missing argument" in proc.stderr + proc.stdout


# -- `validate` checks everything `train` would reject, before a model loads ------------------------------
@pytest.fixture
def recipe_dir(tmp_path, tiny_model_dir, monkeypatch):
    """A folder with pairs + scored data and a recipe factory; loading a model there fails the test."""
    write_rows(tmp_path / "pairs.jsonl", pair_rows(12))
    write_rows(tmp_path / "scored.jsonl", scored_rows(12))

    def no_model(*args, **kwargs):
        raise AssertionError("validate loaded a model")

    # contrastive imports load_model by name: patch it first, so that a first import here binds the real
    # function (and the teardown restores it), not the stub already in models.resolve
    monkeypatch.setattr("embedtrain.train.contrastive.load_model", no_model)
    monkeypatch.setattr("embedtrain.models.resolve.load_model", no_model)
    tmp_path.joinpath("model_dir").write_text(str(tiny_model_dir))
    return tmp_path


def _recipe(tmp_path, **sections) -> dict:
    model = tmp_path.joinpath("model_dir").read_text()
    recipe = {"model": {"name_or_path": model},
              "datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs"}],
              "loss": {"name": "mnrl"}, "training": {"max_steps": 2}, "output_dir": str(tmp_path / "out")}
    recipe.update(sections)
    return recipe


def _validate(path, overrides=None):
    from embedtrain.api import validate

    return validate(path, overrides)


@pytest.mark.parametrize(("training", "field", "message"), [
    ({"max_steps": "notanint"}, "training.max_steps", "expected int"),
    ({"per_device_train_batch_size": -3}, "training.per_device_train_batch_size", "must be >= 1"),
    ({"learning_rate": "abc"}, "training.learning_rate", "expected float"),
    ({"num_train_epochs": 0}, "training.num_train_epochs", "must be > 0"),
    ({"max_step": 3}, "training.max_step", "Did you mean 'max_steps'"),
])
def test_training_argument_values_are_checked(recipe_dir, training, field, message):
    path = write_recipe(recipe_dir / "r.yaml", _recipe(recipe_dir, training=training))
    with pytest.raises(RecipeError, match=message) as info:
        _validate(path)
    assert info.value.field == field and info.value.line is not None


def test_learning_rate_in_exponent_notation_is_a_float(recipe_dir):
    text = (f"model: {{name_or_path: {recipe_dir.joinpath('model_dir').read_text()}}}\n"
            "datasets: [{name: pairs, path: pairs.jsonl, format: pairs}]\n"
            "loss: {name: mnrl}\n"
            "training: {learning_rate: 1e-5, warmup_steps: 5E-2, max_steps: 2}\n"
            f"output_dir: {recipe_dir / 'out'}\n")
    report = _validate(write_recipe(recipe_dir / "r.yaml", text))
    assert report.recipe.training["learning_rate"] == 1e-05
    from embedtrain.train.runner import mode_for

    args = mode_for(report.recipe)
    args.prepare()
    assert args.training_args().learning_rate == 1e-05 and args.training_args().warmup_steps == 0.05


@pytest.mark.parametrize(("sections", "field", "kind", "message"), [
    ({"loss": {"name": "mnrl", "params": {"scale": "big"}}}, "loss.params.scale", RecipeError, "expected"),
    ({"loss": {"name": "gist", "params": {"guide": "no/such/guide"}}}, "loss.params.guide", CheckpointError,
     "model path not found"),
    ({"loss": {"name": "matryoshka", "params": {"dims": [16, 64]}, "inner": {"name": "mnrl"}}},
     "loss.params.dims", RecipeError, "outside 1..32"),
    ({"datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs",
                    "mining": {"dynamic": {"every_steps": 2}}}]},
     "datasets[0].mining.dynamic", RecipeError, "format 'pairs' has none"),
])
def test_losses_models_and_mining_are_checked(recipe_dir, sections, field, kind, message):
    path = write_recipe(recipe_dir / "r.yaml", _recipe(recipe_dir, **sections))
    with pytest.raises(kind, match=message) as info:
        _validate(path)
    assert info.value.field == field and info.value.line is not None


@pytest.mark.parametrize(("override", "message"), [
    ("datasets.foo.x=1", "'datasets' is a list; use an index"),
    ("datasets.5.x=1", r"has 1 item\(s\); index 5 is out of range"),
    ("model.name_or_path.x=1", "is a single value"),
    ("training.max_steps=[1,", "cannot read the value"),
    ("noequalsign", "must look like key.subkey=value"),
    ("training.max_steps=abc", "expected int"),
])
def test_bad_set_arguments_name_the_argument(recipe_dir, override, message):
    path = write_recipe(recipe_dir / "r.yaml", _recipe(recipe_dir))
    with pytest.raises(RecipeError, match=message) as info:
        _validate(path, [override])
    assert "--set" in info.value.field and info.value.file is None  # not the recipe's first line
    assert override.split("=")[0] in str(info.value) or "--set" in str(info.value)


# -- files that are not UTF-8 ------------------------------------------------------------------------------
def test_recipe_that_is_not_utf8(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"output_dir: out\nmodel: {name_or_path: caf\xe9}\n")
    with pytest.raises(RecipeError, match=r"not UTF-8 text: byte 41 \(0xe9\)") as info:
        _validate(path)
    assert info.value.line == 2 and str(path) in str(info.value)


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "json"])
def test_data_file_that_is_not_utf8(tmp_path, suffix):
    from embedtrain.io.readers import read_records

    good = {"jsonl": b'{"anchor": "a", "positive": "b"}\n', "csv": b"anchor,positive\na,b\n",
            "json": b'[{"anchor": "a", "positive": "b"},\n'}[suffix]
    bad = {"jsonl": b'{"anchor": "caf\xe9", "positive": "b"}\n', "csv": b"caf\xe9,b\n",
           "json": b'{"anchor": "caf\xe9", "positive": "b"}]\n'}[suffix]
    path = tmp_path / f"d.{suffix}"
    path.write_bytes(good + bad)
    offset = len(good) + bad.index(b"\xe9")
    with pytest.raises(DataError, match=rf"not UTF-8 text: byte {offset}") as info:
        read_records(path)
    assert info.value.line == good.count(b"\n") + 1


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_utf8_bom_is_accepted(tmp_path, suffix):
    from embedtrain.io.formats import to_dataset
    from embedtrain.io.readers import read_records

    text = {"jsonl": '{"anchor": "é", "positive": "b"}\n', "csv": "anchor,positive\né,b\n"}[suffix]
    path = tmp_path / f"d.{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    ds = to_dataset(read_records(path), "pairs")
    assert ds["anchor"] == ["é"]


def test_eval_task_file_that_is_not_utf8(tmp_path):
    from embedtrain.evaluation.tasks import load_definitions

    path = tmp_path / "tasks.yaml"
    path.write_bytes(b"tasks:\n  - name: T\n    type: sts\n    files: {test: caf\xe9.jsonl}\n")
    with pytest.raises(RecipeError, match="not UTF-8") as info:
        load_definitions([path])
    assert info.value.line == 4


# -- degenerate data ---------------------------------------------------------------------------------------
def test_all_duplicate_pairs_are_refused(recipe_dir):
    write_rows(recipe_dir / "pairs.jsonl", [pair_rows(1)[0]] * 10)
    with pytest.raises(DataError, match="all 10 rows are the same pair") as info:
        _validate(write_recipe(recipe_dir / "r.yaml", _recipe(recipe_dir)))
    assert info.value.field == "datasets[0]" and info.value.line is not None


def test_mostly_duplicate_pairs_warn(recipe_dir, caplog):
    write_rows(recipe_dir / "pairs.jsonl", pair_rows(2) * 5)
    with caplog.at_level("WARNING"):
        _validate(write_recipe(recipe_dir / "r.yaml", _recipe(recipe_dir)))
    assert "8 of 10 rows are duplicates" in caplog.text


def test_equal_scores_are_refused_for_ranking_losses(recipe_dir):
    rows = [{**r, "score": 3.0} for r in scored_rows(12)]
    write_rows(recipe_dir / "scored.jsonl", rows)
    recipe = _recipe(recipe_dir, datasets=[{"name": "sts", "path": "scored.jsonl", "format": "scored_pairs"}],
                     loss={"name": "cosent"})
    with pytest.raises(DataError, match=r"all 12 scores are equal \(3.0\).*'cosent' would train at loss 0"):
        _validate(write_recipe(recipe_dir / "r.yaml", recipe))


def test_env_lists_versions_and_the_tested_combination(capsys):
    run_app(["env"])
    out = capsys.readouterr().out
    for name in ("torch", "transformers", "sentence-transformers", "datasets", "accelerate", "peft", "mteb"):
        assert name in out
    assert "tested combination" in out


def test_tested_versions_match_constraints(repo_root):
    from embedtrain.env import TESTED_VERSIONS

    pins = dict(line.split("==", 1) for line in (repo_root / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert {name: pins.get(name) for name in TESTED_VERSIONS} == TESTED_VERSIONS


def test_known_broken_combination_is_one_line(monkeypatch, capsys, tmp_path):
    """transformers 5.24 with peft 0.21 (peft 0.22 unreleased): importing LoRA features says so in one line."""
    import sys

    from embedtrain import env

    versions = {"transformers": "5.24.0", "peft": "0.21.2"}
    monkeypatch.setattr(env, "installed_version", lambda name: versions.get(name, "1.0"))
    with pytest.raises(env.DependencyError) as info:
        env.require_compatible("peft")
    message = str(info.value)
    assert "transformers 5.24.0" in message and "peft 0.21.2" in message and "pip install" in message
    assert "\n" not in message
    # the CLI: a command that needs adapters prints the line, exit code 2
    for name in [m for m in sys.modules if m.startswith("embedtrain.adapters")]:
        monkeypatch.delitem(sys.modules, name)
    (tmp_path / "ckpt").mkdir()
    output = _usage_error(capsys, ["export-task", str(tmp_path / "ckpt"), str(tmp_path / "out"), "--task", "t"])
    assert "peft 0.21.2" in output and "transformers 5.24.0" in output
    versions["peft"] = "0.22.0"
    env.require_compatible("peft")  # fixed combination: no error


def test_wheel_install_has_its_package_data(tmp_path, repo_root):
    """A non-editable install (the wheel) lists the bundled eval tasks and validates the quickstart recipe."""
    import subprocess
    import sys

    wheel_dir = tmp_path / "wheel"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(wheel_dir), str(repo_root)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = wheel_dir.glob("embedtrain-*.whl")
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**__import__("os").environ, "PYTHONPATH": str(site), "COLUMNS": "250"}
    where = subprocess.run([sys.executable, "-c", "import embedtrain; print(embedtrain.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    tasks = subprocess.run([sys.executable, "-m", "embedtrain", "eval", "--list-tasks"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert tasks.returncode == 0, tasks.stderr[-2000:]
    for name in ("STSBenchmark", "Banking77Classification", "SciFact"):
        assert name in tasks.stdout
    recipe = repo_root / "recipes" / "quickstart.yaml"
    validate = subprocess.run([sys.executable, "-m", "embedtrain", "validate", str(recipe)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    assert validate.returncode == 0, validate.stderr[-2000:]
    assert "recipe OK" in validate.stdout
    speed = json.loads((site / "embedtrain" / "resources" / "sentences.jsonl").read_text().splitlines()[0])
    assert speed["text"]


def test_installer_and_build_backend_are_pinned_too(repo_root):
    """pip and the editable build's setuptools/wheel are versions CI ran, not whatever is newest on the day:
    constraints.txt pins pip (installed by the first README command, and .ci/run upgrades nothing unpinned),
    and pyproject's build-system names exactly the setuptools/wheel pinned there (pip's -c does not reach the
    isolated build environment)."""
    import re
    import tomllib

    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (repo_root / "constraints.txt").read_text(), re.M))
    assert "pip" in pins
    build = tomllib.loads((repo_root / "pyproject.toml").read_text())["build-system"]["requires"]
    assert sorted(build) == sorted(f"{name}=={pins[name]}" for name in ("setuptools", "wheel"))
    ci = (repo_root / ".ci" / "run").read_text(encoding="utf-8")
    assert "--upgrade" not in ci and " -U " not in ci


def test_ci_installs_and_tests_exactly_as_the_readme_says(repo_root):
    import re

    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    ci = (repo_root / ".ci" / "run").read_text(encoding="utf-8")
    install = re.findall(r"pip install (-c constraints\.txt [^&\n]+?)\s*(?:&&|\n)", readme.split("**2.")[0])
    assert install == ["-c constraints.txt pip torch==2.13.0", '-c constraints.txt -e ".[dev,llm]"']
    for args in install:
        assert re.search(rf"pip install --quiet {re.escape(args)}\n", ci), args
    test_command = re.search(r"\*\*2\. Run the tests:\*\*\s*```bash\s*(.+?)\s*```", readme, re.S).group(1)
    assert ci.rstrip().splitlines()[-1] == test_command


def test_every_package_the_install_pulls_in_is_pinned_at_the_installed_version(repo_root):
    """The whole dependency closure of ``.[dev,llm]`` (walked through the installed metadata) has a pin in
    constraints.txt, and what is installed is exactly that pin: CI installs from the file, so a dependency added
    without a pin, or a pin that no longer matches what the install resolves, fails here."""
    import re
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {canonicalize_name(name): version for name, version in
            re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (repo_root / "constraints.txt").read_text(), re.M)}
    seen: dict[str, str] = {}
    todo = [("embedtrain", {"dev", "llm"})]
    while todo:
        name, extras = todo.pop()
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                continue
            key = canonicalize_name(req.name)
            if key not in seen:
                seen[key] = metadata.version(req.name).split("+")[0]
                todo.append((req.name, set(req.extras)))
    assert len(seen) > 30  # the closure was really walked (torch, transformers, datasets... and theirs)
    unpinned = sorted(k for k in seen if k not in pins)
    assert not unpinned, f"installed but not pinned in constraints.txt: {unpinned}"
    drift = {k: (v, pins[k]) for k, v in seen.items() if v != pins[k]}
    assert not drift, f"installed version differs from constraints.txt (installed, pinned): {drift}"
