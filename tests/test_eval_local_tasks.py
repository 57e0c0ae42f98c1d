"""Local MTEB tasks defined in YAML (STS, BEIR retrieval, classification) and their input errors.

The scores of the tiny random model are checked against a direct computation of the metric from the
model's own embeddings, so a wrong data loading (swapped columns, dropped rows, wrong qrels) fails.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from eval_helpers import ANIMALS, PLACES, TINY_TASKS, sts_rows, write_task_config
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer

from embedtrain.errors import DataError, RecipeError
from embedtrain.evaluation.runner import evaluate_checkpoint
from embedtrain.evaluation.tasks import load_task_data, resolve_tasks


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory, tiny_model_dir):
    """One evaluation of the three YAML-defined tiny tasks (shared by the tests of this module)."""
    root = tmp_path_factory.mktemp("tiny_eval")
    config = write_task_config(root)
    report = evaluate_checkpoint(tiny_model_dir, tasks=TINY_TASKS, task_configs=[config], output=root / "eval",
                                 show_progress=False)
    return root, config, report


def test_yaml_tasks_are_mteb_task_subclasses(tiny_eval):
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    _, config, _ = tiny_eval
    sts, cls, ret = resolve_tasks(TINY_TASKS, task_configs=[config])
    assert isinstance(sts, AbsTaskSTS) and isinstance(cls, AbsTaskClassification) \
        and isinstance(ret, AbsTaskRetrieval)
    assert [t.metadata.main_score for t in (sts, cls, ret)] == ["cosine_spearman", "accuracy", "ndcg_at_10"]
    assert cls.n_experiments == 2  # from the YAML


def test_bundled_definition_subclasses_the_real_mteb_class(tmp_path):
    """``mteb_task: X`` keeps mteb's class (metadata, protocol) and swaps only the data loading."""
    import mteb

    rows = [{"sentence1": r["s1"], "sentence2": r["s2"], "score": r["sim"]} for r in sts_rows(6)]
    (tmp_path / "stsb_test.json").write_text(json.dumps(rows))  # a JSON list, like the shared data
    (task,) = resolve_tasks(["STSBenchmark"], data_dir=tmp_path)
    assert isinstance(task, type(mteb.get_task("STSBenchmark")))
    assert task.metadata.main_score == "cosine_spearman" and task.metadata.eval_splits == ["test"]
    task.load_data()
    assert task.dataset["default"]["test"]["sentence2"] == [r["sentence2"] for r in rows]


def test_sts_task_score_matches_direct_spearman(tiny_eval, tiny_model_dir):
    _, _, report = tiny_eval
    rows = sts_rows()
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    sims = _cos(model.encode([r["s1"] for r in rows]), model.encode([r["s2"] for r in rows]))
    expected = 100 * spearmanr([r["sim"] for r in rows], sims).statistic
    assert report.summary.scores["TinySTS"].metric == "cosine_spearman"
    assert report.summary.scores["TinySTS"].value == pytest.approx(expected, abs=1e-3)


def test_retrieval_task_score_matches_direct_ndcg(tiny_eval, tiny_model_dir):
    """BEIR layout: title + text documents, the query without qrels is dropped, nDCG@10 over 5 queries."""
    root, _, report = tiny_eval
    corpus = [json.loads(line) for line in (root / "data/beir/corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (root / "data/beir/queries.jsonl").read_text().splitlines()][:5]
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    docs = model.encode([f"{d['title']} {d['text']}" for d in corpus])
    ndcgs = []
    for i, q in enumerate(queries):
        sims = _cos(np.repeat(model.encode([q["text"]]), len(docs), 0), docs)
        rank = 1 + int((sims > sims[i]).sum())  # query q{i} is relevant to document d{i} only
        ndcgs.append(1 / math.log2(rank + 1) if rank <= 10 else 0.0)
    score = report.summary.scores["TinyRetrieval"]
    assert score.metric == "ndcg_at_10"
    assert score.value == pytest.approx(100 * sum(ndcgs) / len(ndcgs), abs=0.01)


def test_classification_task_runs_mteb_protocol(tiny_eval):
    root, _, report = tiny_eval
    score = report.summary.scores["TinyClassification"]
    assert score.metric == "accuracy" and 0 <= score.value <= 100
    data = json.loads(report.result_files[TINY_TASKS.index("TinyClassification")].read_text())
    assert data["task_name"] == "TinyClassification"
    assert 100 * data["scores"]["test"][0]["main_score"] == pytest.approx(score.value, abs=1e-3)
    assert len(data["scores"]["test"][0]["scores_per_experiment"]) == 2  # n_experiments: 2 from the YAML


def test_missing_file_names_the_path_and_task(tmp_path):
    config = write_task_config(tmp_path)
    (tmp_path / "data" / "sts.jsonl").unlink()
    with pytest.raises(DataError) as err:
        resolve_tasks(["TinySTS"], task_configs=[config])
    assert "TinySTS" in str(err.value) and str(tmp_path / "data" / "sts.jsonl") in str(err.value)
    (tmp_path / "data" / "beir" / "qrels" / "test.tsv").unlink()
    with pytest.raises(DataError, match=r"qrels/test\.tsv"):
        resolve_tasks(["TinyRetrieval"], task_configs=[config])


def test_missing_data_dir_for_bundled_task_says_how_to_give_it(monkeypatch):
    monkeypatch.delenv("EMBEDTRAIN_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="--data-dir"):
        resolve_tasks(["STS12"])


@pytest.mark.parametrize(("bad_line", "field", "message"), [
    ('{"s1": "a cat", "s2": "a dog", "sim": "high"}', "sim", "score must be a number"),
    ('{"s1": "a cat", "sim": 2.0}', "s2", "missing column 's2'"),
    ('{"s1": "a cat", "s2": "a dog", "sim": 1.0', None, "malformed JSON"),
])
def test_malformed_sts_row_names_file_line_and_field(tmp_path, bad_line, field, message):
    config = write_task_config(tmp_path)
    path = tmp_path / "data" / "sts.jsonl"
    lines = path.read_text().splitlines()
    lines.insert(6, bad_line)  # becomes line 7
    path.write_text("\n".join(lines) + "\n")
    tasks = resolve_tasks(["TinySTS"], task_configs=[config])
    with pytest.raises(DataError) as err:
        load_task_data(tasks)
    text = str(err.value)
    assert f"{path}:7" in text and message in text
    if field:
        assert field in text


def test_malformed_classification_and_qrels_rows(tmp_path):
    config = write_task_config(tmp_path)
    train = tmp_path / "data" / "cls_train.jsonl"
    with train.open("a") as fh:
        fh.write(json.dumps({"text": "no label here"}) + "\n")
    n = len(train.read_text().splitlines())
    with pytest.raises(DataError, match=rf"cls_train\.jsonl:{n}.*label"):
        load_task_data(resolve_tasks(["TinyClassification"], task_configs=[config]))

    qrels = tmp_path / "data" / "beir" / "qrels" / "test.tsv"
    with qrels.open("a") as fh:
        fh.write("q1\td-missing\t1\n")
    n = len(qrels.read_text().splitlines())
    with pytest.raises(DataError, match=rf"test\.tsv:{n}.*d-missing"):
        load_task_data(resolve_tasks(["TinyRetrieval"], task_configs=[config]))


def test_unknown_task_name_suggests_the_closest(tmp_path):
    config = write_task_config(tmp_path)
    with pytest.raises(RecipeError, match="unknown task 'STSBenchmrk'. Did you mean 'STSBenchmark'"):
        resolve_tasks(["STSBenchmrk"])
    with pytest.raises(RecipeError, match="Did you mean 'TinyRetrieval'"):
        resolve_tasks(["tinyretreival"], task_configs=[config])
    with pytest.raises(RecipeError, match="'Banking77Classification'"):
        resolve_tasks(["banking77"])


def test_builtin_mteb_task_needs_online_and_is_mteb_own_then(tmp_path):
    import mteb

    with pytest.raises(RecipeError, match="--online"):
        resolve_tasks(["STS15"])
    (task,) = resolve_tasks(["STS15"], online=True)  # no download until mteb loads its data
    assert type(task) is type(mteb.get_task("STS15"))


def test_bad_task_yaml_names_line_and_field(tmp_path):
    (tmp_path / "t.yaml").write_text("tasks:\n  - name: X\n    type: sts\n    file: {test: a.jsonl}\n")
    with pytest.raises(RecipeError) as err:
        resolve_tasks(["X"], task_configs=[tmp_path / "t.yaml"])
    assert "t.yaml:4" in str(err.value) and "unknown key 'file'" in str(err.value) and "files" in str(err.value)


def test_column_mapping_and_csv_files(tmp_path, tiny_model_dir):
    """A new task from a CSV with its own column names, a few lines of YAML, run through the CLI path."""
    rows = [(f"the {a} eats", f"the {b} sleeps in the {PLACES[i % 6]}", (i * 5) % 6)
            for i, (a, b) in enumerate(zip(ANIMALS, reversed(ANIMALS)))]
    (tmp_path / "pairs.csv").write_text("left,right,gold\n" + "".join(f"{a},{b},{s}\n" for a, b, s in rows))
    (tmp_path / "mine.yaml").write_text(
        "tasks:\n  - name: MyPairs\n    type: sts\n    files: {test: pairs.csv}\n"
        "    columns: {sentence1: left, sentence2: right, score: gold}\n")
    report = evaluate_checkpoint(tiny_model_dir, tasks=["MyPairs"], task_configs=[tmp_path / "mine.yaml"],
                                 output=tmp_path / "out", show_progress=False)
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    sims = _cos(model.encode([r[0] for r in rows]), model.encode([r[1] for r in rows]))
    expected = 100 * spearmanr([r[2] for r in rows], sims).statistic
    assert report.summary.scores["MyPairs"].value == pytest.approx(expected, abs=1e-3)
