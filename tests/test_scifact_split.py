"""examples/scifact_subset.py --split-queries: disjoint query halves over one corpus, and a task for the held-out
half (the tutorial's first step: never evaluate on a query trained on)."""

from __future__ import annotations

import json

import yaml
from helpers import load_script


def _module(repo_root):
    return load_script(repo_root / "examples" / "scifact_subset.py")


def _fake_scifact(root):
    src = root / "scifact"
    (src / "qrels").mkdir(parents=True)
    (src / "corpus.jsonl").write_text("".join(json.dumps({"_id": str(d), "title": f"T{d}", "text": f"doc {d}"}) + "\n"
                                              for d in range(100, 140)), "utf-8")
    (src / "queries.jsonl").write_text("".join(json.dumps({"_id": str(q), "text": f"claim {q}"}) + "\n"
                                               for q in range(1, 21)), "utf-8")
    qrels = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{100 + q}\t1" for q in range(1, 21)] + ["3\t105\t1"]
    (src / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", "utf-8")
    return root


def _qrels(path):
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


def test_query_halves_are_disjoint_and_cover_every_query(repo_root, tmp_path):
    data = _fake_scifact(tmp_path / "data")
    out = tmp_path / "split"
    _module(repo_root).main(["--data-dir", str(data), "--out", str(out), "--split-queries", "--distractors", "5"])
    train = _qrels(out / "scifact_train" / "qrels" / "train.tsv")
    held = _qrels(out / "scifact_heldout" / "qrels" / "test.tsv")
    train_q, held_q = {q for q, _, _ in train}, {q for q, _, _ in held}
    assert not train_q & held_q and train_q | held_q == {str(q) for q in range(1, 21)}
    assert len(train_q) == len(held_q) == 10 and len(train) + len(held) == 21
    held_queries = [json.loads(line)["_id"] for line in (out / "scifact_heldout" / "queries.jsonl").open()]
    assert set(held_queries) == held_q  # the held-out folder has no training query at all
    corpus = (out / "scifact_train" / "corpus.jsonl").read_text()
    assert corpus == (out / "scifact_heldout" / "corpus.jsonl").read_text()
    assert corpus.count("\n") == 20 + 5  # 20 relevant documents + 5 distractors
    (task,) = yaml.safe_load((out / "task.yaml").read_text())["tasks"]
    assert task["name"] == "SciFactHeldOut" and task["beir_dir"] == str((out / "scifact_heldout").resolve())
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["queries"]["heldout"]) == sorted(held_q)
    # the same seed gives the same split; -1 distractors keeps the whole corpus
    _module(repo_root).main(["--data-dir", str(data), "--out", str(tmp_path / "again"), "--split-queries",
                             "--distractors", "-1"])
    assert _qrels(tmp_path / "again" / "scifact_heldout" / "qrels" / "test.tsv") == held
    assert (tmp_path / "again" / "scifact_train" / "corpus.jsonl").read_text().count("\n") == 40


def test_a_development_split_comes_out_of_the_training_half(repo_root, tmp_path):
    data = _fake_scifact(tmp_path / "data")
    out = tmp_path / "split"
    _module(repo_root).main(["--data-dir", str(data), "--out", str(out), "--split-queries", "--dev-fraction", "0.2"])
    qs = {name: {q for q, _, _ in _qrels(out / f"scifact_{name}" / "qrels" / f"{split}.tsv")}
          for name, split in (("train", "train"), ("dev", "test"), ("heldout", "test"))}
    assert [len(qs[n]) for n in ("train", "dev", "heldout")] == [6, 4, 10]
    assert not (qs["train"] & qs["dev"] or qs["train"] & qs["heldout"] or qs["dev"] & qs["heldout"])
    names = [t["name"] for t in yaml.safe_load((out / "task.yaml").read_text())["tasks"]]
    assert names == ["SciFactHeldOut", "SciFactDev"]
    # the held-out half is the one written without a development split
    _module(repo_root).main(["--data-dir", str(data), "--out", str(tmp_path / "plain"), "--split-queries"])
    assert {q for q, _, _ in _qrels(tmp_path / "plain" / "scifact_heldout" / "qrels" / "test.tsv")} == qs["heldout"]
