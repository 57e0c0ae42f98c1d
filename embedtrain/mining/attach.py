"""Wire dynamic re-mining into a training run from the recipe's ``datasets[i].mining.dynamic``.

:func:`build_miners` (run while the recipe is validated) builds, for each dataset with a ``mining.dynamic``
section, the :class:`~embedtrain.mining.table.NegativeTable` (the row's negatives from the file, then its
``candidates``) and its miner; :func:`attach_dynamic_mining` (run once the trainer exists) swaps the training
dataset for the table-backed view, restores the saved state when resuming, and returns the trainer callback.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from embedtrain.io.formats import FORMATS, resolve_columns, row_negatives
from embedtrain.io.readers import read_records
from embedtrain.mining.dynamic import DynamicMiner, DynamicMiningCallback, ModelScorer, Retriever
from embedtrain.mining.offline import read_corpus
from embedtrain.mining.reuse import tap_loss
from embedtrain.mining.table import NegativeTable, collate_recording_rows
from embedtrain.schema.mining import DynamicMiningConfig

logger = logging.getLogger(__name__)


def _candidate_texts(records, i: int, column: str) -> list[str]:
    """The row's ranked candidates beyond its negatives (same item forms as negatives); none if absent."""
    return row_negatives(records, i, column) if records.rows[i].get(column) is not None else []


def _file_scores(records, column: str | None, n: int, recipe, loc: tuple) -> np.ndarray:
    """Per row, the mean ``score`` of its first ``n`` negatives in the file (``initial_from: file``)."""
    out = np.empty(len(records))
    for i in range(len(records)):
        value = records.rows[i].get(column) if column else None
        items = value[:n] if isinstance(value, list) else []
        scores = [item.get("score") for item in items if isinstance(item, dict)]
        if len(scores) < n or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in scores):
            raise recipe.error(f"initial_from: file needs a numeric 'score' on the first {n} negatives of every "
                               f"row (as written by `embedtrain mine`); row {i + 1} of {records.path} has none "
                               "- use initial_from: model", *loc)
        out[i] = float(np.mean(scores))
    return out


def build_table(recipe, prepared, config: DynamicMiningConfig,
                ) -> tuple[NegativeTable, np.ndarray | None, list[str]]:
    """The negatives table of dataset ``index`` (ranked list = file negatives, then candidates), with
    ``initial_from: file`` each row's initial score read from the file (else None), and the retrieval
    corpus (``source: retrieve``: the ``corpus`` file, else every text of the table; empty otherwise)."""
    ds_cfg = prepared.config
    loc = (*prepared.loc, "mining", "dynamic")
    path = recipe.resolve_path(ds_cfg.path) if ds_cfg.file_type != "hub" else ds_cfg.path
    records = read_records(path, ds_cfg.file_type, split=ds_cfg.split, limit=ds_cfg.max_samples)
    spec = FORMATS["hard_negatives"]
    columns = resolve_columns(records, spec, ds_cfg.columns)
    dataset = prepared.dataset
    n = sum(1 for c in dataset.column_names if c.startswith("negative_"))
    ranked = [row_negatives(records, i, columns[spec.list_role]) + _candidate_texts(records, i, config.candidates_column)
              for i in range(len(records))]
    if config.source == "candidates" and all(len(r) <= n for r in ranked):
        raise recipe.error(f"no row of {path} has candidates beyond its {n} negatives (column "
                           f"'{config.candidates_column}'); mine with `embedtrain mine --candidates 50` or use "
                           "source: retrieve", *loc, "source")
    extra = []
    if config.source == "retrieve" and config.corpus:
        extra = read_corpus(recipe.resolve_path(config.corpus), config.corpus_column)
    table = NegativeTable(ds_cfg.name, dataset["anchor"], dataset["positive"], ranked, n, extra_texts=extra)
    file_scores = None
    if config.initial_from == "file":
        file_scores = _file_scores(records, columns[spec.list_role], n, recipe, (*loc, "initial_from"))
    corpus = (extra or list(table.texts)) if config.source == "retrieve" else []
    return table, file_scores, corpus


def build_miners(recipe, prepared: list) -> list[tuple]:
    """A :class:`DynamicMiner` for each prepared dataset with ``mining.dynamic`` (no model needed yet).

    Returns ``(prepared_dataset, miner)`` pairs; every problem (no candidates in the file, no file scores for
    ``initial_from: file``...) is a located recipe error, so ``embedtrain validate`` finds it.
    """
    miners = []
    for p in prepared:
        mining = getattr(p.config, "mining", None)
        if mining is None or mining.dynamic is None:
            continue
        cfg = mining.dynamic
        if recipe.training.get("dataloader_num_workers", 0):
            raise recipe.error("dynamic mining rewrites negatives in the training process; set "
                               "training.dataloader_num_workers: 0", "training", "dataloader_num_workers")
        table, file_scores, corpus = build_table(recipe, p, cfg)
        anchor_prompt, negative_prompt = p.prompts.get("anchor"), p.prompts.get("negative_1")
        retriever = None
        if cfg.source == "retrieve":
            retriever = Retriever(table, [table.id_of(t) for t in dict.fromkeys(corpus)], cfg, anchor_prompt,
                                  negative_prompt, p.prompts.get("positive"))

        def scorer_factory(model, table=table, cfg=cfg, ap=anchor_prompt, np_=negative_prompt):
            return ModelScorer(model, table, ap, np_, cfg.batch_size)

        miners.append((p, DynamicMiner(table, cfg, scorer_factory=scorer_factory, retriever=retriever,
                                       seed=recipe.seed, file_scores=file_scores)))
    return miners


def attach_dynamic_mining(miners: list[tuple], train_datasets: dict, resume_from: Path | None,
                          model=None, losses: dict | None = None, precision=None) -> list[TrainerCallback]:
    """Swap in table-backed datasets for the mined datasets; return the callback (or nothing).

    With the ``model`` and the built ``losses`` (dataset name -> loss), datasets with
    ``reuse_similarities`` get their scores from the loss's forward pass (:mod:`embedtrain.mining.reuse`).
    ``precision`` (the run's :class:`~embedtrain.models.precision.Precision`) is used for re-encoding.
    """
    if not miners:
        return []
    for p, miner in miners:
        table = miner.table
        miner.precision = precision
        loss = (losses or {}).get(p.config.name)
        reuse = miner.config.reuse_similarities and model is not None and loss is not None
        if reuse:
            tap_loss(table, model, loss)
            table.reports_to_loss = True  # the collator sends the batch's rows to the loss (RowRecordingCollator)
        elif miner.config.initial_from == "first_use":
            raise ValueError(f"dataset '{table.name}': initial_from: first_use needs the loss to report its scores")
        train_datasets[p.config.name] = table.wrap(p.dataset)
        logger.info("dynamic mining [%s]: %d rows, %d negatives each, source %s, every %d steps, scores %s",
                    table.name, len(table), table.num_negatives, miner.config.source, miner.config.every_steps,
                    "from the loss's forward pass" if reuse else "re-encoded")
    only = [miner for _, miner in miners]
    if resume_from is not None:
        DynamicMiningCallback.restore(only, resume_from)
    return [DynamicMiningCallback(only)]


def record_trained_rows(trainer, callbacks: list[TrainerCallback]) -> None:
    """Make ``trainer``'s data collator record the table rows of every training batch (for the ``seen`` scope)."""
    for callback in callbacks:
        if isinstance(callback, DynamicMiningCallback):
            callback.rows = collate_recording_rows(trainer.data_collator, [m.table for m in callback.miners])
            trainer.data_collator = callback.rows
