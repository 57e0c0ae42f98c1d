"""Conan-embedding dynamic hard-negative re-mining while training.

Hard negatives mined once with the starting model get easy as the model learns them. Following
Conan-embedding (Li et al., 2024), each example remembers the mean query-negative cosine of its
negatives when they were put in place (``initial``). Every ``every_steps`` optimizer steps the
current model re-scores examples (``current``); negatives count as easy when
``current < initial / easy_ratio`` and ``|current| < easy_abs`` and are replaced by the next window
of the example's ranked candidates, or by a fresh retrieval with the current model. The new
negatives' score becomes the example's new ``initial``.

* :class:`ModelScorer` - mean query-negative cosine of rows under a model (training prompts).
* :class:`Retriever` - fresh, filtered retrieval of negatives with the current model.
* :class:`DynamicMiner` - one dataset's rounds: score (sharded across processes), decide, refresh.
* :class:`DynamicMiningCallback` - runs the rounds from the trainer and saves the state into each
  checkpoint (``dynamic_mining-<dataset>.npz``), restored on ``--resume``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from embedtrain.mining.collective import Collective, current_collective, sharded_map
from embedtrain.mining.embeddings import block_size
from embedtrain.mining.filtering import select_negatives
from embedtrain.mining.search import encode_texts, top_k
from embedtrain.mining.table import NegativeTable
from embedtrain.models.precision import Precision
from embedtrain.schema.mining import DynamicMiningConfig

logger = logging.getLogger(__name__)

STATE_FILE = "dynamic_mining-{name}.npz"
Scorer = Callable[[list[int]], np.ndarray]


def is_easy(current: float, initial: float, config: DynamicMiningConfig) -> bool:
    """Conan's rule: the negatives got easier by more than ``easy_ratio`` and are not near-duplicates."""
    if not (np.isfinite(current) and np.isfinite(initial)):
        return False
    return current < initial / config.easy_ratio and abs(current) < config.easy_abs


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


class _TrainingMode:
    """Encode in eval mode, then put the model back in the mode training left it in."""

    def __init__(self, model) -> None:
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        _materialise_fsdp_params(self.model)
        return self.model

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)


def _materialise_fsdp_params(model) -> None:
    """Let FSDP2 allocate its unsharded parameters outside ``torch.inference_mode``.

    sentence-transformers encodes under ``inference_mode``; if the first all-gather of an FSDP2 module happens
    there, its unsharded parameters become inference tensors and the next training forward fails. One
    unshard / reshard with plain ``no_grad`` first (a collective: every rank is here, in lock step) avoids that.
    """
    try:
        import torch
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return
    if getattr(model, "_embedtrain_fsdp_ready", False) or not isinstance(model, FSDPModule):
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.unshard()
                module.reshard()
    model._embedtrain_fsdp_ready = True


@dataclass
class ModelScorer:
    """Mean cosine between each row's anchor and its current negatives, under ``model``.

    ``anchor_prompt`` / ``negative_prompt`` are the prompts training applies to those columns, so
    the scores are those of the similarities the loss sees.
    """

    model: object
    table: NegativeTable
    anchor_prompt: str | None = None
    negative_prompt: str | None = None
    batch_size: int = 64

    def __call__(self, rows: list[int]) -> np.ndarray:
        if not rows:
            return np.zeros(0)
        n = self.table.num_negatives
        anchors = [self.table.anchors[r] for r in rows]
        negatives = [t for r in rows for t in self.table.negatives(r)]
        with _TrainingMode(self.model) as model:
            a = encode_texts(model, anchors, kind="plain", prompt=self.anchor_prompt, batch_size=self.batch_size)
            e = encode_texts(model, negatives, kind="plain", prompt=self.negative_prompt, batch_size=self.batch_size)
        return np.einsum("rd,rkd->rk", a, e.reshape(len(rows), n, -1)).mean(axis=1).astype(np.float64)


class Retriever:
    """Fresh negatives for rows from ``corpus`` (pool ids) with the current model, filtered like offline mining.

    Excluded: the row's anchor text, every positive of rows with the same anchor, and every negative the row
    ever had found easy (its current ones included). The rank window is Conan's for ``window: conan``: the
    row's ``i``-th negatives (``i = refreshes so far + 2``; the mined ones are the first) come from ranks
    ``[(i-1)*n + range_min, i*n + range_min)``, ranks counted over the retrieval list without the positives
    and the anchor; retired negatives inside the window are passed over for the next ranks. Margins compare
    with the anchor-positive cosine under the current model.
    """

    def __init__(self, table: NegativeTable, corpus_ids: Sequence[int], config: DynamicMiningConfig,
                 anchor_prompt: str | None = None, negative_prompt: str | None = None,
                 positive_prompt: str | None = None) -> None:
        self.table = table
        self.corpus_ids = np.asarray(corpus_ids, dtype=np.int64)
        self.config = config
        self.prompts = (anchor_prompt, negative_prompt, positive_prompt)
        self.positives_of: dict[str, set[int]] = {}
        for anchor, pid in zip(table.anchors, table.positive_ids):
            self.positives_of.setdefault(anchor, set()).add(int(pid))

    def window(self, row: int) -> tuple[int, int]:
        """The rank window of ``row``'s next negatives."""
        cfg, n = self.config, self.table.num_negatives
        if cfg.window == "fixed":
            return cfg.range_min, cfg.range_max
        start = cfg.range_min + (int(self.table.refresh_count[row]) + 1) * n
        return start, min(start + n, cfg.range_max)

    def __call__(self, model, rows: list[int], coll: Collective) -> list[list[int] | None]:
        """New negative ids per row (None where too few candidates pass the filters or the window is past
        ``range_max``). Corpus encoding and the per-row searches are split across the ranks of ``coll``."""
        if not rows:
            return []
        cfg, table = self.config, self.table
        n = table.num_negatives
        anchor_prompt, negative_prompt, positive_prompt = self.prompts
        size = block_size(cfg.batch_size)
        blocks = [self.corpus_ids[s:s + size] for s in range(0, len(self.corpus_ids), size)]
        with _TrainingMode(model):
            parts = sharded_map(coll, blocks, lambda bs: [encode_texts(
                model, [table.texts[j] for j in b], kind="plain", prompt=negative_prompt,
                batch_size=cfg.batch_size) for b in bs])
        corpus_emb = np.concatenate(parts, axis=0)
        retired = max((len(table.retired[r]) + n for r in rows), default=n)
        k = min(cfg.range_max + 1 + retired + len(max(self.positives_of.values(), key=len)), len(self.corpus_ids))
        flt = cfg.filter_only()

        def search(my_rows: list[int]) -> list[list[int] | None]:
            with _TrainingMode(model):
                q = encode_texts(model, [table.anchors[r] for r in my_rows], kind="plain", prompt=anchor_prompt,
                                 batch_size=cfg.batch_size)
                p = encode_texts(model, [table.positive(r) for r in my_rows], kind="plain", prompt=positive_prompt,
                                 batch_size=cfg.batch_size)
            scores, idx = top_k(q, corpus_emb, k)
            out: list[list[int] | None] = []
            for i, r in enumerate(my_rows):
                start, stop = self.window(r)
                if start >= stop:
                    out.append(None)
                    continue
                ids = np.where(idx[i] >= 0, self.corpus_ids[np.maximum(idx[i], 0)], -1)
                exclude = set(self.positives_of[table.anchors[r]])
                own = table.id_of(table.anchors[r])
                if own is not None:
                    exclude.add(own)
                used = table.retired[r] | {int(j) for j in table.current_ids[r]}
                window_flt = flt.model_copy(update={"range_min": start, "range_max": cfg.range_max})
                ranked = select_negatives(ids, scores[i], exclude=exclude, positive_score=float(q[i] @ p[i]),
                                          flt=window_flt)
                picked = [j for j, _ in ranked if j not in used][:n]
                out.append(picked if len(picked) == n else None)
            return out

        return sharded_map(coll, rows, search)


@dataclass
class RoundReport:
    """What one re-mining round did (logged and kept in the saved state's history).

    ``mean_current`` / ``mean_initial``: mean query-negative cosine of the re-scored rows under the
    current model and when their negatives were put in place (both before this round's refreshes).
    """

    step: int
    dataset: str
    rescored: int
    easy: int
    refreshed: int
    exhausted: int
    mean_current: float
    mean_initial: float
    seconds: float
    #: Rows whose score came from the loss's forward pass / from re-encoding.
    reused: int = 0
    encoded: int = 0
    #: ``[a, b]``: the loss's scores were used as ``a + b * score`` (``[0, 1]``: as they are), fitted on
    #: ``calibration_rows`` re-encoded rows.
    calibration: list = field(default_factory=lambda: [0.0, 1.0])
    calibration_rows: int = 0


class DynamicMiner:
    """Dynamic re-mining for one dataset: initial scoring, periodic rounds, refreshes.

    ``scorer_factory(model) -> Scorer`` and ``retriever`` are injectable so the decision logic can
    be tested with hand-set scores; ``collective`` splits the scoring across processes.
    """

    def __init__(self, table: NegativeTable, config: DynamicMiningConfig, *,
                 scorer_factory: Callable[[object], Scorer], retriever: Retriever | None = None,
                 collective: Collective | None = None, seed: int = 0,
                 file_scores: np.ndarray | None = None) -> None:
        if config.source == "retrieve" and retriever is None:
            raise ValueError("source 'retrieve' needs a retriever")
        self.table = table
        self.config = config
        self.scorer_factory = scorer_factory
        self.retriever = retriever
        self._collective = collective
        self.seed = seed
        self.file_scores = file_scores  # initial scores read from the data (initial_from: file)
        self.restored = False
        #: Precision of the re-encoding (the training run's; None: as the model is).
        self.precision: Precision | None = None

    @property
    def collective(self) -> Collective:
        """The process group, looked up on first use (it exists only once training arguments are built)."""
        if self._collective is None:
            self._collective = current_collective()
        return self._collective

    def _encoding(self):
        return self.precision.context() if self.precision is not None else contextlib.nullcontext()

    def _score(self, model, rows: list[int]) -> np.ndarray:
        scorer = self.scorer_factory(model)
        with self._encoding():
            return np.asarray(sharded_map(self.collective, rows, lambda rs: list(scorer(rs))), dtype=np.float64)

    def initialize(self, model, file_scores: np.ndarray | None = None) -> None:
        """Set every row's ``initial`` score: the model's scores of its starting negatives, or ``file_scores``."""
        t = time.perf_counter()
        rows = list(range(len(self.table)))
        if self.config.initial_from == "first_use" and file_scores is None:
            self.table.initial[:] = np.nan
            self.table.current[:] = np.nan
            self.table.take_seen()
            logger.info("dynamic mining [%s]: each row's initial score is the loss's the first time it trains on "
                        "the row (initial_from: first_use)", self.table.name)
            return
        if file_scores is not None:
            if len(file_scores) != len(rows):
                raise ValueError(f"file_scores has {len(file_scores)} entries for {len(rows)} rows")
            scores = np.asarray(file_scores, dtype=np.float64)
        else:
            scores = self._score(model, rows)
        self.table.initial[:] = scores
        self.table.current[:] = scores
        self.table.take_seen()
        logger.info("dynamic mining [%s]: initial mean query-negative cosine %.4f over %d rows (%s, %.1fs)",
                    self.table.name, float(np.mean(scores)) if len(scores) else float("nan"), len(rows),
                    "from the mined file" if file_scores is not None else "scored with the model",
                    time.perf_counter() - t)

    def captured_scores(self) -> dict[int, float]:
        """Scores the loss reported since the last round, from every rank (identical on every rank)."""
        merged: dict[int, float] = {}
        for part in self.collective.all_gather_object(self.table.take_captured()):
            merged.update(part)
        return merged

    def calibrate(self, model, captured: dict[int, float], step: int) -> tuple[float, float]:
        """``(a, b)`` mapping the loss's training-mode scores onto the scale of ``initial`` (``a + b * score``).

        Only when ``initial`` comes from re-encoding (``initial_from: model`` / ``file``): a sample of
        ``reuse_calibration_rows`` reported rows is re-encoded and a least-squares line fitted (with fewer than
        8 rows, or no spread, only the mean shift). Identical on every rank.
        """
        k = min(self.config.reuse_calibration_rows, len(captured))
        if k == 0 or self.config.initial_from == "first_use":
            return 0.0, 1.0
        rng = np.random.default_rng([self.seed, step, 1])
        sample = sorted(int(r) for r in rng.choice(sorted(captured), k, replace=False))
        encoded = self._score(model, sample)
        reported = np.array([captured[r] for r in sample])
        if k >= 8 and reported.std() > 1e-6:
            b, a = np.polyfit(reported, encoded, 1)
            return float(a), float(b)
        return float(encoded.mean() - reported.mean()), 1.0

    def round_rows(self, step: int, captured: Sequence[int] = ()) -> list[int]:
        """Rows to re-score this round, identical on every rank.

        ``scope: seen``: the rows trained on since the last round (every rank's), plus ``captured`` (rows the
        loss reported scores for, already gathered).
        """
        if self.config.scope == "all":
            rows = list(range(len(self.table)))
        else:
            local = self.table.take_seen()
            rows = sorted(set(captured).union(*map(set, self.collective.all_gather_object(local))))
        if self.config.max_rescore is not None and len(rows) > self.config.max_rescore:
            rng = np.random.default_rng([self.seed, step])
            rows = sorted(int(r) for r in rng.choice(rows, self.config.max_rescore, replace=False))
        return rows

    def run_round(self, model, step: int) -> RoundReport:
        """Re-score, find easy rows, refresh them; returns the report (same on every rank)."""
        t = time.perf_counter()
        table, cfg = self.table, self.config
        captured = self.captured_scores() if cfg.reuse_similarities else {}
        calibration = self.calibrate(model, captured, step)
        captured = {r: calibration[0] + calibration[1] * v for r, v in captured.items()}
        # negatives put in place without a score (a refresh, or initial_from: first_use) take the loss's first one
        first = [r for r in sorted(captured) if not np.isfinite(table.initial[r])]
        table.initial[first] = table.current[first] = [captured[r] for r in first]
        skip = set(first)
        rows = [r for r in self.round_rows(step, captured=sorted(captured)) if r not in skip]
        need = [r for r in rows if r not in captured]
        encoded = dict(zip(need, self._score(model, need))) if need else {}
        scores = np.array([captured[r] if r in captured else encoded[r] for r in rows], dtype=np.float64)
        table.current[rows] = scores
        initial_before = table.initial[rows].copy()  # the report compares with these, not the refreshed ones
        easy = [r for r, s in zip(rows, scores) if is_easy(s, table.initial[r], cfg)]
        refreshed: list[int] = []
        if cfg.source == "candidates":
            for r in easy:
                table.retire(r)
            refreshed = [r for r in easy if table.advance(r)]
        elif easy:
            with self._encoding():
                fresh = self.retriever(model, easy, self.collective)
            for r, ids in zip(easy, fresh):
                if ids is not None:
                    table.replace(r, ids)
                    refreshed.append(r)
        if refreshed and captured:  # the loss reports scores: the next forward on these rows sets 'initial'
            table.initial[refreshed] = np.nan
            table.current[refreshed] = np.nan
        elif refreshed:
            new = self._score(model, refreshed)
            table.initial[refreshed] = new
            table.current[refreshed] = new
        report = RoundReport(
            step=step, dataset=table.name, rescored=len(rows), easy=len(easy), refreshed=len(refreshed),
            exhausted=len(easy) - len(refreshed), reused=len(rows) - len(need), encoded=len(need),
            calibration=[round(calibration[0], 6), round(calibration[1], 6)],
            calibration_rows=min(cfg.reuse_calibration_rows, len(captured)) if cfg.initial_from != "first_use" else 0,
            mean_current=round(float(np.mean(scores)), 6) if len(rows) else float("nan"),
            mean_initial=round(_nanmean(initial_before), 6),
            seconds=round(time.perf_counter() - t, 3))
        table.history.append(asdict(report))
        logger.info("dynamic mining [%s] step %d: re-scored %d rows (%d from the loss, %d encoded), %d easy, "
                    "refreshed %d, %d out of candidates (mean cosine %.4f, initial %.4f, %.1fs)", table.name, step,
                    report.rescored, report.reused, report.encoded, report.easy, report.refreshed, report.exhausted,
                    report.mean_current, report.mean_initial, report.seconds)
        return report


class DynamicMiningCallback(TrainerCallback):
    """Runs :class:`DynamicMiner` rounds during training and keeps their state in checkpoints."""

    def __init__(self, miners: Sequence[DynamicMiner]) -> None:
        self.miners = list(miners)
        #: The collator that notes each batch's rows (see embedtrain.mining.table.RowRecordingCollator).
        self.rows = None
        self._reported = {id(m): len(m.table.history) for m in self.miners}

    def step_metrics(self) -> dict[str, float]:
        """Rows refreshed by the rounds run since the last call, ``mining/<dataset>/refreshed`` (the training run
        logs and plots them per round)."""
        out: dict[str, float] = {}
        for miner in self.miners:
            history = miner.table.history
            new = history[self._reported.get(id(miner), 0):]
            self._reported[id(miner)] = len(history)
            if new:
                out[f"mining/{miner.table.name}/refreshed"] = float(sum(r["refreshed"] for r in new))
        return out

    def rounds(self) -> list[dict]:
        """Every round report of every dataset so far (restored rounds included)."""
        return [dict(r) for miner in self.miners for r in miner.table.history]

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from embedtrain.errors import EmbedtrainError
        from embedtrain.mining.collective import sharding_engine

        if sharding_engine() == "fsdp1":
            raise EmbedtrainError("dynamic mining encodes with the model being trained, which FSDP1 keeps as flat "
                                  "shards; use fsdp_version: 2 (recipes/accelerate/fsdp.yaml) or DDP")
        for miner in self.miners:
            if not miner.restored:
                miner.initialize(model, miner.file_scores)
            else:  # rows trained on before the checkpoint, since its last round
                miner.table.take_seen()
                miner.table.record(miner.table.restored_seen)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.rows is not None:
            self.rows.commit(args.gradient_accumulation_steps)
        for miner in self.miners:
            if state.global_step > 0 and state.global_step % miner.config.every_steps == 0:
                miner.run_round(model, state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        for miner in self.miners:
            miner.table.save(folder / STATE_FILE.format(name=miner.table.name))

    @staticmethod
    def restore(miners: Sequence[DynamicMiner], checkpoint: str | Path) -> None:
        """Load each miner's table state from ``checkpoint`` (a ``checkpoint-N`` folder)."""
        for miner in miners:
            path = Path(checkpoint) / STATE_FILE.format(name=miner.table.name)
            if not path.exists():
                logger.warning("dynamic mining [%s]: %s has no saved state; starting from the data's negatives",
                               miner.table.name, checkpoint)
                continue
            miner.table.load(path)
            miner.restored = True
            logger.info("dynamic mining [%s]: restored state from %s (%d rounds so far, %d rows refreshed)",
                        miner.table.name, path, len(miner.table.history), int((miner.table.refresh_count > 0).sum()))
