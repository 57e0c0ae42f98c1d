"""Shared evaluation and statistics for the method experiments (examples/*_experiment.py).

``evaluate_items`` runs the offline MTEB harness (the project's main scores) and, from the very embeddings
the harness computed, per-item scores for a paired bootstrap:

* STS: the cosine similarity of every pair (the main score, cosine Spearman, is recomputed from them);
* retrieval: nDCG@10 of every query (exact cosine search over the task's corpus);
* classification: whether a linear probe (logistic regression fitted on *all* train embeddings) labels
  each test text right. This is not mteb's protocol (8 sampled examples per label, 10 experiments), so
  the bootstrap of a classification task is on linear-probe accuracy, reported next to mteb's score.

``paired_bootstrap`` resamples test items (the same resample for both methods) and returns the 95%
interval of the difference of the seed-averaged metric.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import logging

import numpy as np

logger = logging.getLogger(__name__)


def _record_texts(encoder, store: dict[str, np.ndarray]) -> None:
    """Make the harness encoder remember every (text -> embedding) it computes."""
    original = encoder._encode_distinct

    def recording(texts, inputs, call):
        emb = original(texts, inputs, call)
        arr = emb if isinstance(emb, np.ndarray) else np.asarray(emb)
        for t, e in zip(texts, arr):
            store.setdefault(t, e)
        return emb

    encoder._encode_distinct = recording


def _embed(store: dict[str, np.ndarray], texts: Sequence[str], model) -> np.ndarray:
    missing = [t for t in dict.fromkeys(texts) if t not in store]
    if missing:  # texts the harness encoded through another path (should be rare): encode them here
        logger.warning("%d texts were not encoded by the harness; encoding them", len(missing))
        for t, e in zip(missing, model.encode(missing, batch_size=64, convert_to_numpy=True)):
            store[t] = e
    return np.stack([store[t] for t in texts])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def ndcg_at_10(scores: np.ndarray, relevant: dict[int, int]) -> float:
    top = np.argsort(-scores)[:10]
    dcg = sum(relevant.get(int(d), 0) / math.log2(r + 2) for r, d in enumerate(top))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def evaluate_items(model_dir: str | Path, tasks: Sequence[str], *, data_dir: str | Path,
                   task_configs: Sequence[str | Path] = (), output: str | Path, batch_size: int = 64,
                   layers: int | None = None, dim: int | None = None) -> dict[str, Any]:
    """Main scores (x100, mteb) and per-item arrays of ``model_dir`` (optionally its (layers, dim) sub-network)."""
    from embedtrain.evaluation.encoder import make_encoder
    from embedtrain.evaluation.harness import run_mteb
    from embedtrain.evaluation.tasks import resolve_tasks
    from embedtrain.models.resolve import load_model, resolve_model_path
    from embedtrain.models.truncate import truncated_copy

    task_objs = resolve_tasks(list(tasks), data_dir=data_dir, task_configs=list(task_configs))
    model = load_model(resolve_model_path(str(model_dir)), device="cpu")
    if layers is not None:
        model = truncated_copy(model, layers=layers)
    encoder = make_encoder(model, label=Path(str(model_dir)).name + (f"-{layers}l" if layers else ""),
                           fingerprint=f"{layers}-{dim}", dim=dim)
    store: dict[str, np.ndarray] = {}
    _record_texts(encoder, store)
    results = run_mteb(encoder, task_objs, output_dir=Path(output), batch_size=batch_size, show_progress=False)
    out: dict[str, Any] = {"main": {}, "items": {}}
    for task, result in zip(task_objs, results):
        name = task.metadata.name
        if task.dataset is None:  # mteb frees the data after evaluating; the local files reload quickly
            task.load_data()
        out["main"][name] = 100.0 * float(result.get_score())
        ttype = task.metadata.type
        if ttype == "STS":
            split = task.dataset["default"]["test"] if "default" in task.dataset else task.dataset["test"]
            a = _unit(_embed(store, split["sentence1"], model)[:, :dim])
            b = _unit(_embed(store, split["sentence2"], model)[:, :dim])
            out["items"][name] = {"kind": "sts", "pred": (a * b).sum(-1).tolist(), "gold": list(split["score"])}
        elif ttype == "Retrieval":
            data = task.dataset["default"]["test"]
            corpus, queries, qrels = data["corpus"], data["queries"], data["relevant_docs"]
            doc_ids = list(corpus["id"])
            titles = corpus["title"] if "title" in corpus.column_names else [""] * len(corpus)
            doc_texts = [(t + " " + x).strip() if t else x.strip() for t, x in zip(titles, corpus["text"])]
            d = _unit(_embed(store, doc_texts, model)[:, :dim])
            q_ids, q_texts = list(queries["id"]), list(queries["text"])
            q = _unit(_embed(store, q_texts, model)[:, :dim])
            pos = {doc: i for i, doc in enumerate(doc_ids)}
            per_query = [ndcg_at_10(d @ q[i], {pos[k]: int(v) for k, v in qrels.get(qid, {}).items() if k in pos})
                         for i, qid in enumerate(q_ids) if qid in qrels]
            out["items"][name] = {"kind": "mean", "values": per_query}
        elif ttype == "Classification":
            from sklearn.linear_model import LogisticRegression

            ds = task.dataset["default"] if "default" in task.dataset else task.dataset
            xtr = _embed(store, ds["train"]["text"], model)[:, :dim]
            xte = _embed(store, ds["test"]["text"], model)[:, :dim]
            clf = LogisticRegression(max_iter=200).fit(xtr, ds["train"]["label"])
            correct = (clf.predict(xte) == np.asarray(ds["test"]["label"])).astype(float)
            out["items"][name] = {"kind": "mean", "values": correct.tolist(), "note": "linear probe accuracy"}
    return out


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(pred, gold).statistic)


def item_metric(item: dict, idx: np.ndarray | None = None) -> float:
    if item["kind"] == "sts":
        pred, gold = np.asarray(item["pred"]), np.asarray(item["gold"])
        return 100.0 * (spearman(pred, gold) if idx is None else spearman(pred[idx], gold[idx]))
    values = np.asarray(item["values"])
    return 100.0 * float(values.mean() if idx is None else values[idx].mean())


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def paired_bootstrap(a_runs: Sequence[dict], b_runs: Sequence[dict], *, resamples: int = 1000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Difference (mean over A's seeds - mean over B's seeds) and its 95% bootstrap interval over test items.

    Each run is one ``items`` entry of :func:`evaluate_items` for the same task; all runs share the items.
    """
    diff, boot = bootstrap_differences(a_runs, b_runs, resamples=resamples, seed=seed)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(diff), float(lo), float(hi)


def bootstrap_differences(a_runs: Sequence[dict], b_runs: Sequence[dict], *, resamples: int = 1000,
                          seed: int = 0) -> tuple[float, np.ndarray]:
    """The observed difference of :func:`paired_bootstrap` and its ``resamples`` bootstrap replicates (one
    array, so intervals of derived quantities, e.g. the mean over several tasks, can be taken from them)."""
    first = a_runs[0]
    n = len(first["gold"] if first["kind"] == "sts" else first["values"])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    diff = np.mean([item_metric(r) for r in a_runs]) - np.mean([item_metric(r) for r in b_runs])

    def resampled(runs: Sequence[dict]) -> np.ndarray:
        if first["kind"] == "sts":
            total = np.zeros(resamples)
            for r in runs:
                pred, gold = np.asarray(r["pred"])[idx], np.asarray(r["gold"])[idx]
                rp, rg = _ranks(pred), _ranks(gold)
                rp -= rp.mean(1, keepdims=True)
                rg -= rg.mean(1, keepdims=True)
                total += 100.0 * (rp * rg).sum(1) / np.sqrt((rp ** 2).sum(1) * (rg ** 2).sum(1))
            return total / len(runs)
        return np.mean([100.0 * np.asarray(r["values"])[idx].mean(1) for r in runs], axis=0)

    return float(diff), resampled(a_runs) - resampled(b_runs)


def seed_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Difference of the means of two sets of per-seed scores and its Welch t interval (``level``).

    For tasks whose per-item outputs were not kept: the interval is over seeds (n = 3 each gives a wide one),
    not over test items like :func:`paired_bootstrap`.
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = float(np.sqrt(vx + vy))
    if se == 0.0:
        return diff, diff, diff
    dof = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return diff, diff - half, diff + half


def mean_std(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.2f} ± {arr.std(ddof=1) if len(arr) > 1 else 0.0:.2f}"


def save_json(path: str | Path, data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data), encoding="utf-8")


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def comparison_table(results: dict[str, list[dict]], tasks: Sequence[str], baseline: str,
                     resamples: int = 1000) -> str:
    """Markdown: per method mean ± std over seeds of the main (mteb) score per task, then for each method
    other than ``baseline`` the paired-bootstrap difference on the per-item metric."""
    lines = ["| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for method, runs in results.items():
        lines.append(f"| {method} | " + " | ".join(mean_std([r["main"][t] for r in runs]) for t in tasks) + " |")
    for method, runs in results.items():
        if method == baseline:
            continue
        cells = []
        for t in tasks:
            d, lo, hi = paired_bootstrap([r["items"][t] for r in runs], [r["items"][t] for r in results[baseline]],
                                         resamples=resamples)
            cells.append(f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        lines.append(f"| {method} − {baseline} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
