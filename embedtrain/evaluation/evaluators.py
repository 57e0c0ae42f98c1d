"""sentence-transformers evaluators a recipe runs around and during training (its ``evaluators:`` section).

Unlike the MTEB harness (``eval:``), these are in-process checks the trainer can run every ``eval_steps``
(``training.eval_strategy: steps``) and pick the best checkpoint by (``load_best_model_at_end`` with
``metric_for_best_model`` naming one of :func:`metric_names`). One evaluator per kind:

=================  =====================================================  ==================================
``type``           evaluator                                              main metric
=================  =====================================================  ==================================
``sts``            ST's ``EmbeddingSimilarityEvaluator`` (cosine)          ``<name>_spearman_cosine``
``retrieval``      ST's ``InformationRetrievalEvaluator`` on a BEIR folder  ``<name>_<similarity>_ndcg@10``
``classification`` :class:`ClassificationEvaluator` (logistic regression)  ``<name>_accuracy``
=================  =====================================================  ==================================

The data is a file/folder (``path``) or a local evaluation task (``task``, resolved like ``embedtrain eval``
does: bundled definitions read from ``data_dir``, or ``task_config`` files). A retrieval evaluator embeds
queries with the model's ``query`` prompt and documents (``title + " " + text``) with its ``document``
prompt, as mteb does, so its nDCG@10 is the one ``embedtrain eval`` reports for the same data.
:func:`sts_evaluator` is also what a soup's held-out metric uses.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentence_transformers.sentence_transformer.evaluation import (
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
    SentenceEvaluator,
    SequentialEvaluator,
)

from embedtrain.errors import DataError, RecipeError, suggest
from embedtrain.io.formats import to_dataset
from embedtrain.io.readers import read_records

logger = logging.getLogger(__name__)

#: The k values of the retrieval evaluator's metrics (sentence-transformers' defaults).
RETRIEVAL_K = {"accuracy": (1, 3, 5, 10), "precision": (1, 3, 5, 10), "recall": (1, 3, 5, 10), "ndcg": (10,),
               "mrr": (10,), "map": (100,)}
#: The key SequentialEvaluator adds when a recipe has several evaluators (the last evaluator's main score).
SEQUENTIAL_SCORE = "sequential_score"


def sts_evaluator(path: str | Path, *, name: str, columns: dict[str, str] | None = None,
                  file_type: str | None = None, max_samples: int | None = None,
                  batch_size: int = 64) -> EmbeddingSimilarityEvaluator:
    """An STS evaluator on the scored pairs in ``path`` (``sentence1``, ``sentence2``, ``score``), rows checked."""
    records = read_records(path, file_type, limit=max_samples)
    ds = to_dataset(records, "scored_pairs", columns or {})
    return EmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"], name=name,
                                        batch_size=batch_size, main_similarity="cosine")


def retrieval_evaluator(folder: str | Path, *, name: str, split: str = "test", columns: dict[str, str] | None = None,
                        max_samples: int | None = None, batch_size: int = 64) -> InformationRetrievalEvaluator:
    """An ``InformationRetrievalEvaluator`` on a BEIR folder, rows checked (ids, qrels against corpus/queries).

    Documents are ``title + " " + text`` (just ``text`` without a title) and relevant documents are those with
    a qrels score above 0, as in mteb; ``max_samples`` keeps the first queries.
    """
    from embedtrain.evaluation.local_data import document_text, read_beir

    data = read_beir(Path(folder), split, columns or {})
    corpus_rows = data["corpus"]
    corpus = {doc_id: document_text(title, text)
              for doc_id, title, text in zip(corpus_rows["id"], corpus_rows["title"], corpus_rows["text"])}
    queries = dict(zip(data["queries"]["id"], data["queries"]["text"]))
    relevant = {qid: {d for d, score in docs.items() if score > 0} for qid, docs in data["relevant_docs"].items()}
    relevant = {qid: docs for qid, docs in relevant.items() if docs and qid in queries}
    if max_samples is not None:
        keep = list(relevant)[:max_samples]
        relevant = {qid: relevant[qid] for qid in keep}
    if not relevant:
        raise DataError(f"no query of split '{split}' has a relevant document", file=folder)
    queries = {qid: text for qid, text in queries.items() if qid in relevant}
    return InformationRetrievalEvaluator(queries, corpus, relevant, name=name, batch_size=batch_size,
                                         mrr_at_k=list(RETRIEVAL_K["mrr"]), ndcg_at_k=list(RETRIEVAL_K["ndcg"]),
                                         accuracy_at_k=list(RETRIEVAL_K["accuracy"]),
                                         precision_recall_at_k=list(RETRIEVAL_K["precision"]),
                                         map_at_k=list(RETRIEVAL_K["map"]), write_csv=False)


class ClassificationEvaluator(SentenceEvaluator):
    """Accuracy of a logistic regression fitted on embeddings of labelled texts (a quick linear probe).

    The classifier (scikit-learn ``LogisticRegression``, ``max_iter`` 100, fixed seed) is fitted on the
    embeddings of ``train_texts`` and scored on ``test_texts``. This is a quick in-training signal: mteb's
    classification protocol (several experiments on a few sampled examples per label) is what ``embedtrain
    eval`` reports.

    Args:
        train_texts / train_labels: the texts the classifier is fitted on, and their labels.
        test_texts / test_labels: the texts it is scored on.
        name: prefix of the metric names (``<name>_accuracy``, ``<name>_f1`` (macro)).
        batch_size: encoding batch size.
        seed: seed of the logistic regression.

    Example::

        evaluators:
          - {name: banking, type: classification, path: test.jsonl, train_path: train.jsonl}
    """

    def __init__(self, train_texts: list[str], train_labels: list, test_texts: list[str], test_labels: list, *,
                 name: str = "", batch_size: int = 64, seed: int = 42) -> None:
        super().__init__()
        self.train_texts, self.train_labels = list(train_texts), list(train_labels)
        self.test_texts, self.test_labels = list(test_texts), list(test_labels)
        self.name, self.batch_size, self.seed = name, batch_size, seed
        self.primary_metric = "accuracy"

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import accuracy_score, f1_score

        train = model.encode(self.train_texts, batch_size=self.batch_size, convert_to_numpy=True)
        test = model.encode(self.test_texts, batch_size=self.batch_size, convert_to_numpy=True)
        classifier = LogisticRegression(max_iter=100, random_state=self.seed)
        classifier.fit(np.asarray(train), self.train_labels)
        predicted = classifier.predict(np.asarray(test))
        metrics = {"accuracy": float(accuracy_score(self.test_labels, predicted)),
                   "f1": float(f1_score(self.test_labels, predicted, average="macro"))}
        logger.info("classification [%s]: accuracy %.4f, macro F1 %.4f", self.name, metrics["accuracy"],
                    metrics["f1"])
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    @property
    def description(self) -> str:
        return "Classification"


def classification_evaluator(path: str | Path, train_path: str | Path, *, name: str,
                             columns: dict[str, str] | None = None, file_type: str | None = None,
                             max_samples: int | None = None, batch_size: int = 64,
                             seed: int = 42) -> ClassificationEvaluator:
    """A :class:`ClassificationEvaluator` fitted on ``train_path`` and scored on ``path`` (``text``, ``label``)."""
    from embedtrain.evaluation.local_data import read_classification

    train = read_classification(Path(train_path), columns or {}, file_type)
    test = read_classification(Path(path), columns or {}, file_type)
    if max_samples is not None:
        train, test = (d.select(range(min(max_samples, len(d)))) for d in (train, test))
    if len(set(train["label"])) < 2:
        raise DataError("the classifier needs at least 2 labels in the training file", file=train_path)
    return ClassificationEvaluator(train["text"], train["label"], test["text"], test["label"], name=name,
                                   batch_size=batch_size, seed=seed)


# ---------------------------------------------------------------------------------------------------------
# Metric names (known before any model runs: what metric_for_best_model may name)
# ---------------------------------------------------------------------------------------------------------
def model_similarity(model_path: str | Path | None) -> str:
    """The similarity function a saved model declares (``cosine`` when it declares none)."""
    if model_path is None:
        return "cosine"
    config = Path(model_path) / "config_sentence_transformers.json"
    try:
        return str(json.loads(config.read_text(encoding="utf-8")).get("similarity_fn_name") or "cosine")
    except (OSError, ValueError):
        return "cosine"


def metric_names(cfg, similarity: str = "cosine") -> list[str]:
    """Every metric key the evaluator of ``cfg`` returns (``<name>_...``); the first is its main metric."""
    if cfg.type == "sts":
        names = ["spearman_cosine", "pearson_cosine"]
    elif cfg.type == "classification":
        names = ["accuracy", "f1"]
    else:
        names = [f"{similarity}_ndcg@10"] + [f"{similarity}_{metric}@{k}" for metric, ks in RETRIEVAL_K.items()
                                              for k in ks if (metric, k) != ("ndcg", 10)]
    return [f"{cfg.name}_{n}" for n in names]


def main_metric(cfg, similarity: str = "cosine") -> str:
    return metric_names(cfg, similarity)[0]


def check_best_metric(recipe: Any, configs: list, similarity: str = "cosine") -> None:
    """``training.metric_for_best_model`` must name an evaluator metric (or the trainer's ``loss``).

    The trainer reports evaluator metrics as ``eval_<metric>``; both spellings are accepted.
    """
    metric = recipe.training.get("metric_for_best_model")
    if metric is None:
        return
    known = [m for cfg in configs for m in metric_names(cfg, similarity)]
    if len(configs) > 1:
        known.append(SEQUENTIAL_SCORE)
    bare = str(metric).removeprefix("eval_")
    if bare in known or bare == "loss" and not configs:
        return
    if not configs:
        raise recipe.error(f"metric_for_best_model '{metric}' names no metric: the recipe has no evaluators "
                           "(add an 'evaluators:' section)", "training", "metric_for_best_model")
    mains = [main_metric(cfg, similarity) for cfg in configs]
    raise recipe.error(f"metric_for_best_model '{metric}' is not a metric of the recipe's evaluators."
                       + suggest(bare, known) + f" Main metrics: {', '.join(mains)}",
                       "training", "metric_for_best_model")


# ---------------------------------------------------------------------------------------------------------
# Building a recipe's evaluators
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _Source:
    """Where an evaluator's data is: files and column mapping, after resolving a task name."""

    path: Path
    train_path: Path | None
    split: str
    columns: dict[str, str]
    file_type: str | None


def _task_kind(spec) -> str | None:
    if spec.type is not None:
        return spec.type
    import mteb

    from embedtrain.evaluation.tasks import _kind_of

    return _kind_of(type(mteb.get_task(spec.mteb_task)))


def _source(recipe: Any, cfg, loc: tuple[Any, ...]) -> _Source:
    """Resolve ``cfg``'s data (a path, or a local task's files) and check that it exists."""
    if cfg.path is not None:
        path = recipe.resolve_path(cfg.path)
        if not path.exists():
            raise recipe.error(f"evaluation {'folder' if cfg.type == 'retrieval' else 'file'} not found: {path}",
                               *loc, "path", kind=DataError)
        train_path = recipe.resolve_path(cfg.train_path) if cfg.train_path else None
        if train_path is not None and not train_path.exists():
            raise recipe.error(f"classifier training file not found: {train_path}", *loc, "train_path",
                               kind=DataError)
        return _Source(path, train_path, cfg.split or "test", dict(cfg.columns), cfg.file_type)
    from embedtrain.evaluation.tasks import _resolve_file, load_definitions, resolve_data_dir

    configs = []
    if cfg.task_config is not None:
        config = recipe.resolve_path(cfg.task_config)
        if not config.is_file():
            raise recipe.error(f"task config file not found: {config}", *loc, "task_config", kind=DataError)
        configs.append(config)
    definitions = load_definitions(configs)
    if cfg.task not in definitions:
        raise recipe.error(f"unknown local task '{cfg.task}'." + suggest(cfg.task, definitions)
                           + f" Local tasks: {', '.join(sorted(definitions)) or 'none'}", *loc, "task")
    defn = definitions[cfg.task]
    kind = _task_kind(defn.spec)
    if kind != cfg.type:
        raise recipe.error(f"task '{cfg.task}' is a {kind} task, but the evaluator's type is '{cfg.type}'", *loc,
                           "type")
    if cfg.data_dir is not None:
        data_dir = recipe.resolve_path(cfg.data_dir)
        if not data_dir.is_dir():
            raise recipe.error(f"data directory not found: {data_dir}", *loc, "data_dir", kind=DataError)
    else:
        data_dir = resolve_data_dir(None)
    spec = defn.spec
    split = cfg.split or (spec.eval_splits[0] if spec.eval_splits else "test")
    columns = {**spec.columns, **cfg.columns}
    try:
        if kind == "retrieval":
            path, train_path = _resolve_file(defn, spec.beir_dir, data_dir), None
        else:
            if split not in spec.files:
                raise recipe.error(f"task '{cfg.task}' has no '{split}' file (files: {sorted(spec.files)})", *loc,
                                   "split")
            path = _resolve_file(defn, spec.files[split], data_dir)
            train_path = _resolve_file(defn, spec.files["train"], data_dir) if kind == "classification" else None
    except DataError as exc:
        raise recipe.error(f"{exc}", *loc, "data_dir", kind=DataError) from None
    for p in (path, train_path):
        if p is not None and not p.exists():
            raise recipe.error(f"file of task '{cfg.task}' not found: {p} (defined in {defn.where})", *loc, "task",
                               kind=DataError)
    return _Source(path, train_path, split, columns, spec.file_type)


def build_evaluator(recipe: Any, cfg, loc: tuple[Any, ...]) -> SentenceEvaluator:
    """The evaluator of one ``evaluators:`` entry (at ``loc`` in the recipe), every data row checked."""
    src = _source(recipe, cfg, loc)
    if cfg.type == "sts":
        return sts_evaluator(src.path, name=cfg.name, columns=src.columns, file_type=src.file_type,
                             max_samples=cfg.max_samples, batch_size=cfg.batch_size)
    if cfg.type == "retrieval":
        if not src.path.is_dir():
            raise recipe.error(f"a retrieval evaluator reads a BEIR folder; {src.path} is a file", *loc, "path",
                               kind=DataError)
        if not (src.path / "qrels" / f"{src.split}.tsv").is_file():
            raise recipe.error(f"no qrels/{src.split}.tsv in {src.path}", *loc, "split", kind=DataError)
        return retrieval_evaluator(src.path, name=cfg.name, split=src.split, columns=src.columns,
                                   max_samples=cfg.max_samples, batch_size=cfg.batch_size)
    return classification_evaluator(src.path, src.train_path, name=cfg.name, columns=src.columns,
                                    file_type=src.file_type, max_samples=cfg.max_samples, batch_size=cfg.batch_size,
                                    seed=getattr(recipe, "seed", 42))


def build_evaluators(recipe: Any, loc: tuple[Any, ...] = ()) -> list[SentenceEvaluator]:
    """Read and validate each evaluator of the recipe section at ``loc`` (default: the recipe itself)."""
    section = recipe
    for part in loc:
        section = section[part] if isinstance(part, int) else getattr(section, part)
    names = [cfg.name for cfg in section.evaluators]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise recipe.error(f"evaluator name '{name}' is used twice; names must be unique", *loc, "evaluators", i,
                               "name", kind=RecipeError)
    return [build_evaluator(recipe, cfg, (*loc, "evaluators", i)) for i, cfg in enumerate(section.evaluators)]


#: Kept for callers of the STS-only version.
build_sts_evaluators = build_evaluators


def combined(evaluators: list[SentenceEvaluator]) -> SentenceEvaluator | None:
    """One evaluator for the trainer: the evaluator itself, or a ``SequentialEvaluator`` of several."""
    if not evaluators:
        return None
    return evaluators[0] if len(evaluators) == 1 else SequentialEvaluator(evaluators)


def run_evaluators(evaluators: list[SentenceEvaluator], model) -> dict[str, float]:
    """The main metric x 100 of each evaluator (cosine Spearman, nDCG@10, accuracy), keyed by its name."""
    scores = {}
    for ev in evaluators:
        result = ev(model)
        scores[ev.name] = 100.0 * float(result[ev.primary_metric])
    return scores


#: Kept for callers of the STS-only version.
run_sts = run_evaluators
