"""Merging a fine-tuned model with the model it started from (WiSE-FT), the weight chosen on dev data.

WiSE-FT (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models") keeps::

    theta(alpha) = (1 - alpha) * theta_start + alpha * theta_trained

a two-ingredient soup with weights ``1 - alpha, alpha`` (:func:`embedtrain.soup.average.weighted_state_dict`).
``alpha = 1`` is the trained model, ``alpha = 0`` the start model. Fine-tuning from one start keeps both ends in
one linearly connected basin, so the models in between are good models that keep most of the target gain while
moving much less on everything else.

``alpha: auto`` measures two signals for every candidate of a grid, on data that is never a test split:

* **dev**: cosine Spearman x 100 on the target's dev pairs (how much of the fine-tuning gain a merge keeps);
* **agreement**: Spearman x 100 between the merged model's cosine similarities and the start model's on
  unlabeled general sentence pairs (:func:`embedtrain.soup.metrics.similarity_agreement`; 100 at ``alpha = 0``,
  lower the further the model drifts on text it was not trained on).

Rule (:func:`choose_alpha`): among the candidates whose dev gain over the start model is at least ``keep``
(default 0.9) of the best dev gain, take the one with the highest agreement (ties: the larger alpha). The rule is
scale-free: ``keep`` is a share of the gain, not a number of points, and the general signal only decides *where on
the dev plateau* to stop, toward the start model. When no candidate beats the start model on dev, the start
weights are kept (``alpha = 0``) with a warning: training did not help the target's dev split.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from embedtrain.errors import CheckpointError
from embedtrain.soup.average import weighted_state_dict
from embedtrain.soup.ingredients import parameter_difference
from embedtrain.soup.metrics import Metric

logger = logging.getLogger(__name__)

#: The candidate grid measured on the quickstart (docs/generalization.md).
DEFAULT_GRID: tuple[float, ...] = (0.3, 0.4, 0.5, 0.7, 1.0)
DEFAULT_KEEP = 0.9
#: What ``embedtrain merge-start`` writes beside the merged weights.
MERGE_FILE = "merge_start.json"


def interpolate_weights(start: Mapping[str, torch.Tensor], trained: Mapping[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * trained`` key by key (float32, cast back); integer buffers must agree."""
    diff = parameter_difference(dict(trained), dict(start))
    if diff:
        raise CheckpointError(f"cannot merge with the start model: {diff} (the start model's side)")
    return weighted_state_dict([start, trained], [1.0 - float(alpha), float(alpha)])


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model``'s state dict (later changes to the model do not reach it)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class MergeCandidate:
    """One measured merge weight."""

    alpha: float
    dev: float | None = None
    agreement: float | None = None


@dataclass
class MergeSelection:
    """What :func:`merge_with_start` did: the weight it kept, every candidate's signals and why."""

    alpha: float
    mode: str  # "auto" or "fixed"
    candidates: list[MergeCandidate] = field(default_factory=list)
    start_dev: float | None = None
    reason: str = ""
    seconds: float = 0.0

    def rows(self) -> list[tuple[str, str, str, str]]:
        """``(alpha, dev, agreement, kept)`` as printed: the start model first (when measured), then each
        candidate; what :meth:`table` and the CLI show."""
        def num(x: float | None) -> str:
            return f"{x:.2f}" if x is not None else "-"

        rows = [("0 (start)", num(self.start_dev), "100.00", "kept" if self.alpha == 0 else "")] \
            if self.start_dev is not None else []
        return rows + [(f"{c.alpha:g}", num(c.dev), num(c.agreement), "kept" if c.alpha == self.alpha else "")
                       for c in self.candidates]

    def table(self) -> str:
        """A markdown table of the candidates (the kept one marked)."""
        lines = ["| alpha | dev | agreement | |", "|---:|---:|---:|---|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in self.rows()])

    def to_json(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "mode": self.mode, "start_dev": self.start_dev, "reason": self.reason,
                "seconds": round(self.seconds, 1), "candidates": [asdict(c) for c in self.candidates]}


def choose_alpha(candidates: Sequence[MergeCandidate], *, start_dev: float,
                 keep: float = DEFAULT_KEEP) -> tuple[float, str]:
    """The selection rule on measured candidates (see the module docstring): ``(alpha, reason)``."""
    measured = [c for c in candidates if c.dev is not None]
    if not measured:
        raise ValueError("no candidate has a dev score")
    best = max(c.dev for c in measured)  # type: ignore[type-var]
    gain = best - start_dev
    if gain <= 0:
        return 0.0, (f"no merge weight beats the start model on dev (best {best:.2f} <= start {start_dev:.2f}): "
                     "the start weights are kept")
    floor = start_dev + keep * gain
    pool = [c for c in measured if c.dev >= floor - 1e-9]  # type: ignore[operator]
    if any(c.agreement is not None for c in pool):
        pick = max(pool, key=lambda c: (c.agreement if c.agreement is not None else float("-inf"), c.alpha))
        how = "the highest agreement with the start model wins"
    else:
        pick = min(pool, key=lambda c: c.alpha)
        how = "no general signal: the smallest alpha wins"
    return pick.alpha, (f"dev gain floor {floor:.2f} (keep {keep:.0%} of the best gain {gain:.2f}); "
                        f"{len(pool)} of {len(measured)} candidates pass; {how}")


def merge_with_start(model, start_weights: Mapping[str, torch.Tensor], *, alpha: float | str = "auto",
                     dev: Metric | None = None, agreement: Any = None, grid: Sequence[float] = DEFAULT_GRID,
                     keep: float = DEFAULT_KEEP) -> MergeSelection:
    """Replace ``model``'s (trained) weights in place by their merge with ``start_weights``; return the selection.

    Args:
        model: the trained SentenceTransformer (``alpha = 1``); its weights are replaced.
        start_weights: the start model's state dict (same keys and shapes).
        alpha: a weight in (0, 1], or ``"auto"`` to choose one from ``grid`` by :func:`choose_alpha`.
        dev: ``model -> dev score`` (needed for ``auto``; with a fixed alpha it is only reported).
        agreement: ``reference_model -> (model -> agreement)``, e.g. ``functools.partial(similarity_agreement,
            sentences=...)``; the reference is the start model. None: dev only.
        grid: candidate weights for ``auto``.
        keep: share of the best dev gain a candidate must keep.
    """
    t0 = time.perf_counter()
    trained = weights_of(model)
    start = dict(start_weights)
    diff = parameter_difference(trained, start)
    if diff:
        raise CheckpointError(f"cannot merge with the start model: {diff} (the start model's side)")

    def at(a: float):  # checked once above: no second comparison of every parameter per candidate
        model.load_state_dict(weighted_state_dict([start, trained], [1.0 - a, a]), strict=True)
        return model

    auto = alpha == "auto"
    if auto and dev is None:
        raise ValueError("alpha 'auto' needs a dev metric")
    alphas = sorted({float(a) for a in grid}) if auto else [float(alpha)]
    start_dev, general = None, None
    if dev is not None or agreement is not None:
        reference = at(0.0)
        start_dev = float(dev(reference)) if dev is not None else None
        general = agreement(reference) if agreement is not None else None
    candidates = []
    for a in alphas:
        if dev is None and general is None:
            candidates.append(MergeCandidate(a))
            continue
        merged = at(a)
        candidates.append(MergeCandidate(a, float(dev(merged)) if dev is not None else None,
                                         float(general(merged)) if general is not None else None))
        logger.info("merge with start: alpha %g -> dev %s, agreement %s", a, candidates[-1].dev,
                    candidates[-1].agreement)
    if auto:
        chosen, reason = choose_alpha(candidates, start_dev=start_dev, keep=keep)  # type: ignore[arg-type]
    else:
        chosen, reason = float(alpha), "fixed alpha"
    at(chosen)
    selection = MergeSelection(chosen, "auto" if auto else "fixed", candidates, start_dev, reason,
                               time.perf_counter() - t0)
    if chosen == 0.0:
        logger.warning("merge_with_start: %s", reason)
    logger.info("merged with the start model at alpha %g (%s)\n%s", chosen, reason, selection.table())
    return selection


def merge_checkpoints(trained: str | Path, start: str | Path, output: str | Path, *, alpha: float | str = "auto",
                      dev: str | Path | None = None, general_text: str | Path | None = None,
                      grid: Sequence[float] = DEFAULT_GRID, keep: float = DEFAULT_KEEP, num_pairs: int = 2000,
                      max_dev_pairs: int | None = None, overwrite: bool = False,
                      trust_remote_code: bool = False) -> MergeSelection:
    """:func:`merge_with_start` on saved checkpoints (``embedtrain merge-start``): ``trained`` merged with
    ``start`` into ``output``, with ``trained``'s configuration files; ``merge_start.json`` records the selection.

    Only the parameters must match (names, shapes, integer buffers); module settings such as max_seq_length are
    ``trained``'s."""
    from functools import partial

    from embedtrain.adapters.module import task_module
    from embedtrain.io.checkpoints import check_new_dir
    from embedtrain.io.sentences import default_general_text, read_sentences
    from embedtrain.models.resolve import load_model, resolve_model_path
    from embedtrain.schema.merge import looks_like_test_split
    from embedtrain.soup.metrics import held_out_sts, similarity_agreement
    from embedtrain.soup.output import write_soup

    if alpha != "auto" and not 0 < float(alpha) <= 1:
        raise CheckpointError(f"alpha must be in (0, 1] or 'auto', got {alpha}", field="--alpha")
    if alpha == "auto" and dev is None:
        raise CheckpointError("--alpha auto chooses the weight on dev data: give --dev (the target's dev split)",
                              field="--dev")
    for name, path in (("--dev", dev), ("--general-text", general_text)):
        if path is not None and looks_like_test_split(str(path)):
            raise CheckpointError(f"'{path}' looks like a test split; choose the merge weight on dev data", field=name)
    output = Path(output)
    start_path, trained_path = resolve_model_path(start), resolve_model_path(trained)
    check_new_dir(output, overwrite=overwrite, protect=[start_path, trained_path])
    dev_metric = held_out_sts(dev, max_samples=max_dev_pairs) if dev is not None else None
    sentences = read_sentences(general_text if general_text is not None else default_general_text())
    model = load_model(trained_path, device="cpu", trust_remote_code=trust_remote_code)
    if task_module(model) is not None:
        raise CheckpointError("task-adapter checkpoints cannot be merged with merge-start; use `embedtrain soup "
                              "--method weighted`", file=trained_path)
    start_weights = weights_of(load_model(start_path, device="cpu", trust_remote_code=trust_remote_code))
    selection = merge_with_start(model, start_weights, alpha=alpha, dev=dev_metric,
                                 agreement=partial(similarity_agreement, sentences=sentences, num_pairs=num_pairs),
                                 grid=grid, keep=keep)
    info = {"method": "merge_with_start", "start": str(start), "trained": str(trained), **selection.to_json()}
    write_soup(model, trained_path, output, info, record=MERGE_FILE)
    return selection
