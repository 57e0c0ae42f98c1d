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

from embedtrain.mining.dynamic import DynamicMiner, DynamicMiningCallback, ModelScorer, Retriever
from embedtrain.mining.offline import read_corpus
from embedtrain.mining.reuse import tap_loss
from embedtrain.mining.table import NegativeTable, collate_recording_rows
from embedtrain.schema.mining import DynamicMiningConfig

logger = logging.getLogger(__name__)


def _file_scores(scores: list, n: int, path, recipe, loc: tuple) -> np.ndarray:
    """Per row, the mean ``score`` of its first ``n`` negatives in the file (``initial_from: file``)."""
    out = np.empty(len(scores))
    for i, row in enumerate(scores):
        first = list(row[:n]) if row is not None else []
        if len(first) < n or any(x is None for x in first):
            raise recipe.error(f"initial_from: file needs a numeric 'score' on the first {n} negatives of every "
                               f"row (as written by `embedtrain mine`); row {i + 1} of {path} has none "
                               "- use initial_from: model", *loc)
        out[i] = float(np.mean(first))
    return out


def _warn_if_scores_differ(path, recipe, name: str, ds_cfg=None) -> None:
    """``initial_from: file`` trusts the file's scores as the training model's; say when the mining record next
    to the file shows they are not (another model, length or prompts, or cross-encoder scores)."""
    from embedtrain.mining.provenance import initial_score_mismatches, read_mining_record

    if not isinstance(path, Path):
        return
    record = read_mining_record(path)
    model_prompts = getattr(recipe, "prompts", None)
    prompts = {"query": getattr(ds_cfg, "query_prompt", None) or getattr(model_prompts, "query", None),
               "document": getattr(ds_cfg, "passage_prompt", None) or getattr(model_prompts, "passage", None)}
    mismatches = initial_score_mismatches(record, model=recipe.model.name_or_path,
                                          max_seq_length=recipe.model.max_seq_length, prompts=prompts)
    if mismatches:
        logger.warning("dataset '%s': initial_from: file takes the mined scores as the model's starting scores, "
                       "but %s; rows will be judged easy or hard against scores of another setting - mine again "
                       "with the training settings or use initial_from: model", name, "; ".join(mismatches))
    elif record is None:
        logger.info("dataset '%s': no mining record (%s.stats.json) to check that initial_from: file scores "
                    "match the training model and length", name, path)


def build_table(recipe, prepared, config: DynamicMiningConfig,
                ) -> tuple[NegativeTable, np.ndarray | None, list[str]]:
    """The negatives table of dataset ``index`` (ranked list = file negatives, then candidates), with
    ``initial_from: file`` each row's initial score read from the file (else None), and the retrieval
    corpus (``source: retrieve``: the ``corpus`` file, else every text of the table; empty otherwise).

    The file's negatives, scores and candidates come from the prepared dataset's extra columns (read in the
    same pass as the training columns, memory-mapped from the data cache), not from a second read of the file.
    """
    from embedtrain.io.columnar import CANDIDATES, FILE_NEGATIVES, FILE_SCORES

    ds_cfg = prepared.config
    loc = (*prepared.loc, "mining", "dynamic")
    path = recipe.resolve_path(ds_cfg.path) if ds_cfg.file_type != "hub" else ds_cfg.path
    extras = prepared.extras
    dataset = prepared.dataset
    n = sum(1 for c in dataset.column_names if c.startswith("negative_"))
    ranked = [negs + (cands or []) for negs, cands in zip(extras[FILE_NEGATIVES], extras[CANDIDATES])]
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
        file_scores = _file_scores(extras[FILE_SCORES], n, path, recipe, (*loc, "initial_from"))
        _warn_if_scores_differ(path, recipe, ds_cfg.name, ds_cfg)
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
