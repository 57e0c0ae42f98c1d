"""``stage: distill``: contrastive training whose datasets may also learn from teachers.

Everything a contrastive recipe does still works (several datasets, per-dataset losses, prompts, evaluators).
On top, before the trainer is built (on every process of a launch, each doing its share):

* ``scored_negatives`` datasets whose rows carry no teacher scores (or all of them, with
  ``distill.scorer.rescore``) are scored by ``distill.scorer``; each (query, document) pair is scored once and
  kept in an SQLite cache under ``distill.cache_dir``, so later runs score nothing already seen;
* datasets whose loss learns teacher embeddings (``embed_distill``, ``embed_similarity``, ``embed_ranking``,
  also inside wrappers) get their texts encoded once by ``distill.teachers`` into a memory-mapped store
  (:mod:`embedtrain.distill.teachers`), reused by later runs; each row's ``label`` is its texts' store rows.

A trained student -> teacher projection (``embed_distill`` when the widths differ) is written into every
``checkpoint-N`` (``--resume`` restores it) and, at the end, beside the student or appended to it
(:mod:`embedtrain.distill.projection`). The student may be cut from a deeper model with
``model.keep_layers`` (any stage).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from embedtrain.distill.columns import attach_teacher_rows, label_with_teacher_scores, teacher_texts
from embedtrain.distill.projection import PROJECTION_DIR, append_projection, restore_projection, save_projection
from embedtrain.distill.teachers import (
    BiEncoderScorer,
    CrossEncoderScorer,
    DigestMemo,
    PairScoreCache,
    TeacherSpec,
    model_fingerprint,
    precompute_teacher_embeddings,
    score_pairs,
    store_fingerprint,
)
from embedtrain.errors import DataError
from embedtrain.io.checkpoints import save_with_recipe
from embedtrain.io.formats import FORMATS
from embedtrain.losses import LOSSES
from embedtrain.losses.embedding_distill import EmbeddingDistillLoss
from embedtrain.models.resolve import resolve_model_path
from embedtrain.schema import DistillRecipe, LossConfig
from embedtrain.train.contrastive import ContrastiveMode
from embedtrain.train.prepare import PreparedDataset

logger = logging.getLogger(__name__)


def needs_teacher_embeddings(loss: LossConfig) -> bool:
    """Whether ``loss`` (or a loss it wraps) learns from pre-computed teacher embeddings."""
    while loss is not None:
        spec = LOSSES.get(loss.name)
        if spec is not None and getattr(spec.target, "needs_teacher_embeddings", False):
            return True
        loss = loss.inner  # type: ignore[assignment]
    return False


class ProjectionCheckpoint(TrainerCallback):
    """Writes the trained projection into every ``checkpoint-N`` folder (so ``--resume`` can restore it)."""

    def __init__(self, projection) -> None:
        self.projection = projection

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                save_projection(self.projection, folder / PROJECTION_DIR)
        return control


class DistillMode(ContrastiveMode):
    """Contrastive training plus teacher scores and pre-computed teacher embeddings (``stage: distill``)."""

    stage = "distill"
    recipe: DistillRecipe

    def prepare(self) -> None:
        super().prepare()
        cfg = self.recipe.distill
        self.teacher_paths = [resolve_model_path(t.model, base_dir=self.recipe.base_dir, file=self.recipe.source,
                                                 line=self.recipe.line_of("distill", "teachers", i, "model"),
                                                 field=f"distill.teachers[{i}].model")
                              for i, t in enumerate(cfg.teachers)]
        self.scorer_path = None if cfg.scorer is None else resolve_model_path(
            cfg.scorer.model, base_dir=self.recipe.base_dir, file=self.recipe.source,
            line=self.recipe.line_of("distill", "scorer", "model"), field="distill.scorer.model")
        self.embed_sets = [p for p in self.prepared if needs_teacher_embeddings(p.loss)]
        rescore = cfg.scorer is not None and cfg.scorer.rescore
        self.score_sets = [p for p in self.prepared if p.config.format == "scored_negatives"
                           and (rescore or "label" not in p.dataset.column_names)]
        if cfg.teachers and not self.embed_sets:
            logger.warning("distill.teachers is set but no dataset's loss learns teacher embeddings (embed_distill, "
                           "embed_similarity, embed_ranking); the teachers are not used")
        if cfg.scorer is not None and not self.score_sets:
            logger.warning("distill.scorer is set but no scored_negatives dataset needs scores; it is not used")

    def describe(self) -> list[str]:
        lines = super().describe()
        cfg = self.recipe.distill
        for name, path, t in zip(cfg.teacher_names(), self.teacher_paths, cfg.teachers):
            lines.append(f"teacher {name}: {path} (weight {t.weight:g}) for "
                         f"{', '.join(p.config.name for p in self.embed_sets) or 'no dataset'}")
        if self.scorer_path is not None:
            lines.append(f"scorer ({cfg.scorer.kind}): {self.scorer_path} for "  # type: ignore[union-attr]
                         f"{', '.join(p.config.name for p in self.score_sets) or 'no dataset'}")
        return lines

    # -- with models ----------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.recipe.resolve_path(self.recipe.distill.cache_dir)

    def build_trainer(self, args, callbacks: list[TrainerCallback], resume_from: Path | None):
        device = str(args.device)  # also sets up the process group of a multi-process launch
        memo = DigestMemo(self.cache_dir / "fingerprints.json")
        if self.score_sets:
            self.score_datasets(memo, device)
        if self.embed_sets:
            self.attach_teacher_store(memo, device)
        if args.process_index == 0:
            memo.save()
        trainer = super().build_trainer(args, callbacks, resume_from)
        self.projection = self.tie_projections(trainer)
        if self.projection is not None:
            if resume_from is not None and (resume_from / PROJECTION_DIR).is_dir():
                restore_projection(self.projection, resume_from / PROJECTION_DIR)
                logger.info("restored the distillation projection from %s", resume_from)
            trainer.add_callback(ProjectionCheckpoint(self.projection))
        return trainer

    def score_datasets(self, memo: DigestMemo, device: str) -> None:
        """Teacher scores for the ``scored_negatives`` datasets that need them (cached pair by pair)."""
        cfg = self.recipe.distill.scorer
        if cfg is None:
            name = self.score_sets[0].config.name
            raise DataError(f"dataset '{name}' has no teacher scores; name a scorer (distill.scorer)")
        if cfg.kind == "cross_encoder":
            scorer: Any = CrossEncoderScorer(self.scorer_path, batch_size=cfg.batch_size, device=device,
                                             trust_remote_code=cfg.trust_remote_code, memo=memo)
        else:
            scorer = BiEncoderScorer(self.scorer_path, query_prompt=cfg.query_prompt,
                                     document_prompt=cfg.document_prompt, similarity=cfg.similarity,
                                     batch_size=cfg.batch_size, device=device,
                                     trust_remote_code=cfg.trust_remote_code, memo=memo)
        cache = PairScoreCache(self.cache_dir / "pair_scores", scorer.fingerprint)
        score_fn = functools.partial(score_pairs, scorer=scorer, cache=cache)
        for p in self.score_sets:
            logger.info("scoring dataset '%s' with %s (cache %s)", p.config.name, self.scorer_path, cache.path)
            p.dataset = label_with_teacher_scores(p.dataset, score_fn)

    def teacher_specs(self) -> list[TeacherSpec]:
        cfg = self.recipe.distill
        return [TeacherSpec(name, str(path), weight=t.weight, query_prompt=t.query_prompt,
                            document_prompt=t.document_prompt, max_seq_length=t.max_seq_length,
                            batch_size=t.batch_size, trust_remote_code=t.trust_remote_code)
                for name, path, t in zip(cfg.teacher_names(), self.teacher_paths, cfg.teachers)]

    def text_kinds(self, p: PreparedDataset, specs: list[TeacherSpec]) -> dict[str, str]:
        """Column -> ``query`` for query-side columns when some teacher encodes queries differently."""
        if not any(t.query_prompt != t.document_prompt for t in specs):
            return {}
        return {column: "query" for column in FORMATS[p.config.format].query_roles}

    def attach_teacher_store(self, memo: DigestMemo, device: str) -> None:
        """Encode the texts of the embedding-distillation datasets once (reusing the store) and attach rows."""
        cfg = self.recipe.distill
        specs = self.teacher_specs()
        fingerprints = [model_fingerprint(t.model, memo) for t in specs]
        directory = self.recipe.resolve_path(cfg.store) if cfg.store else \
            self.cache_dir / f"teachers-{store_fingerprint(specs, cfg.dtype, fingerprints)[:16]}"
        texts = [item for p in self.embed_sets for item in teacher_texts(p.dataset, self.text_kinds(p, specs))]
        store = precompute_teacher_embeddings(texts, specs, directory, dtype=cfg.dtype, device=device,
                                              model_fingerprints=fingerprints)
        logger.info("teacher store %s: %d texts x %d dims", directory, len(store), store.dim)
        self.store = store
        for p in self.embed_sets:
            p.dataset = attach_teacher_rows(p.dataset, store, kinds=self.text_kinds(p, specs))
            p.loss_context.teacher_store = store

    @staticmethod
    def tie_projections(trainer):
        """One projection shared by every embedding-distillation loss of the run (None when there is none)."""
        losses = trainer.loss.values() if isinstance(trainer.loss, dict) else [trainer.loss]
        found = [m for loss in losses for m in loss.modules()
                 if isinstance(m, EmbeddingDistillLoss) and m.projection is not None]
        if not found:
            return None
        for other in found[1:]:
            other.projection = found[0].projection
        return found[0].projection

    def save_final(self, trainer, folder: str) -> None:
        projection = getattr(self, "projection", None)
        if projection is not None and self.recipe.distill.append_projection:
            append_projection(trainer.model, projection)
            logger.info("appended the %d -> %d projection to the saved model", projection.in_features,
                        projection.out_features)
        save_with_recipe(trainer.model, self.recipe, folder)
        if projection is not None and not self.recipe.distill.append_projection:
            save_projection(projection, Path(folder) / PROJECTION_DIR)
