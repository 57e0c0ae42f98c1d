"""``make_soup``: load, check, average (uniform / weighted / greedy), score and write a soup."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from embedtrain.errors import CheckpointError
from embedtrain.io.checkpoints import check_new_dir
from embedtrain.models.resolve import resolve_model_path
from embedtrain.soup.average import build_soup, normalise_weights
from embedtrain.soup.greedy import greedy_select
from embedtrain.soup.ingredients import load_ingredients
from embedtrain.soup.metrics import Metric
from embedtrain.soup.output import write_soup

logger = logging.getLogger(__name__)

Method = Literal["uniform", "weighted", "greedy"]
#: Key of the soup itself in :attr:`SoupResult.report`.
SOUP_KEY = "soup"
METHODS = ("uniform", "weighted", "greedy")


@dataclass
class SoupResult:
    """What ``make_soup`` did: the folder, the members and their weights, and held-out scores if any."""

    output: Path
    method: str
    members: list[str]
    weights: list[float]
    individual_scores: dict[str, float] = field(default_factory=dict)
    soup_score: float | None = None
    greedy_steps: list[dict] = field(default_factory=list)
    #: Scores on the *report* metrics (held-out splits not used to pick the members):
    #: ``{metric: {checkpoint: score, ..., SOUP_KEY: score}}``.
    report: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"method": self.method, "members": self.members, "weights": self.weights,
                "individual_scores": self.individual_scores, "soup_score": self.soup_score,
                "greedy_steps": self.greedy_steps, "report": self.report}


def make_soup(checkpoints: Sequence[str | Path], out: str | Path, *, method: Method = "uniform",
              weights: Sequence[float] | None = None, metric: Metric | None = None, metric_name: str | None = None,
              report_metrics: dict[str, Metric] | None = None, overwrite: bool = False,
              trust_remote_code: bool = False) -> SoupResult:
    """Average ``checkpoints`` into ``out``; see the package docstring for the methods.

    ``metric`` picks the greedy soup's members (and is reported for the other methods); ``report_metrics``
    (name -> metric) score every ingredient and the soup on splits that played no part in building it, so
    the greedy soup's gain on its own selection split is not mistaken for a gain on unseen data.
    """
    if method not in METHODS:
        raise CheckpointError(f"unknown soup method '{method}'; choose from {list(METHODS)}", field="method")
    if method == "weighted" and weights is None:
        raise CheckpointError("--method weighted needs --weights (one per checkpoint)", field="weights")
    if method != "weighted" and weights is not None:
        raise CheckpointError(f"--weights only applies to --method weighted (got --method {method})", field="weights")
    if method == "greedy" and metric is None:
        raise CheckpointError("--method greedy needs a held-out metric (--held-out FILE or --mteb-task NAME)",
                              field="method")
    out = Path(out)
    check_new_dir(out, overwrite=overwrite, protect=[resolve_model_path(c) for c in checkpoints])
    ingredients = load_ingredients(list(checkpoints), trust_remote_code=trust_remote_code)
    individual: dict[str, float] = {}
    steps: list[dict] = []
    if method == "greedy":
        assert metric is not None
        picked = greedy_select(ingredients, metric)
        members = [ingredients[i] for i in picked.chosen]
        individual = {ing.name: s for ing, s in zip(ingredients, picked.individual)}
        steps = [vars(s) for s in picked.steps]
        w = normalise_weights(None, len(members))
    else:
        members = ingredients
        w = normalise_weights(weights, len(members))
    model = members[0].model if len(members) == 1 else build_soup(members, w)
    soup_score = None
    if method == "greedy":
        soup_score = picked.score  # already measured while picking
    elif metric is not None:
        for ing in ingredients:
            individual[ing.name] = float(metric(ing.model))
        soup_score = float(metric(model))
    if soup_score is not None:
        logger.info("soup scores %.3f on %s (best single: %.3f)", soup_score, metric_name or "held-out",
                    max(individual.values()))
    report: dict[str, dict[str, float]] = {}
    for name, report_metric in (report_metrics or {}).items():
        scores = {ing.name: float(report_metric(ing.model)) for ing in ingredients}
        scores[SOUP_KEY] = float(report_metric(model))
        report[name] = scores
        best = max((v for k, v in scores.items() if k != SOUP_KEY), default=float("nan"))
        logger.info("report %s: soup %.3f, best single ingredient %.3f", name, scores[SOUP_KEY], best)
    result = SoupResult(out, method, [m.name for m in members], w, individual, soup_score, steps, report)
    info = {**result.to_json(), "ingredients": [ing.name for ing in ingredients], "metric": metric_name}
    write_soup(model, ingredients[0].path, out, info)
    return result
