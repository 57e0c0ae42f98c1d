"""Tiny synthetic local evaluation tasks (STS, classification, BEIR retrieval) for the eval tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ANIMALS = ["cat", "dog", "horse", "bird", "fish", "cow", "goat", "duck"]
PLACES = ["garden", "kitchen", "river", "forest", "street", "barn"]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sts_rows(n: int = 24) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = ANIMALS[i % len(ANIMALS)], ANIMALS[(i * 3 + 1) % len(ANIMALS)]
        place = PLACES[i % len(PLACES)]
        same = i % 3 == 0
        rows.append({"s1": f"the {a} sleeps in the {place}",
                     # never identical to s1: cosine ties (1.0 up to float noise) would make ranks arbitrary
                     "s2": f"a {a if same else b} rests in the {place if i % 2 else 'house'}",
                     "sim": float((i * 7) % 6)})
    return rows


def classification_rows(per_label: int, offset: int = 0) -> list[dict]:
    labels = {"animal": ANIMALS, "place": PLACES, "number": ["one", "two", "three", "four", "five", "six"]}
    rows = []
    for i in range(offset, offset + per_label):
        for label, words in labels.items():
            rows.append({"text": f"this is about {words[i % len(words)]} number {i}", "label": label})
    return rows


def write_beir(folder: Path) -> Path:
    docs = [{"_id": f"d{i}", "title": f"{a} facts", "text": f"the {a} lives in the {PLACES[i % len(PLACES)]}"}
            for i, a in enumerate(ANIMALS)]
    queries = [{"_id": f"q{i}", "text": f"where does the {a} live"} for i, a in enumerate(ANIMALS[:5])]
    queries.append({"_id": "q-unjudged", "text": "a query without relevance judgements"})
    _jsonl(folder / "corpus.jsonl", docs)
    _jsonl(folder / "queries.jsonl", queries)
    qrels = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(5)]
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder


def write_task_config(root: Path) -> Path:
    """Data for three new local tasks plus the YAML that defines them; returns the YAML path."""
    data = root / "data"
    _jsonl(data / "sts.jsonl", sts_rows())
    _jsonl(data / "cls_train.jsonl", classification_rows(10))
    _jsonl(data / "cls_test.jsonl", classification_rows(4, offset=10))
    write_beir(data / "beir")
    config = {
        "data_dir": "data",
        "tasks": [
            {"name": "TinySTS", "type": "sts", "files": {"test": "sts.jsonl"},
             "columns": {"sentence1": "s1", "sentence2": "s2", "score": "sim"}},
            {"name": "TinyClassification", "type": "classification",
             "files": {"train": "cls_train.jsonl", "test": "cls_test.jsonl"}, "n_experiments": 2},
            {"name": "TinyRetrieval", "type": "retrieval", "beir_dir": "beir"},
        ],
    }
    path = root / "tiny_tasks.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


TINY_TASKS = ["TinySTS", "TinyClassification", "TinyRetrieval"]
