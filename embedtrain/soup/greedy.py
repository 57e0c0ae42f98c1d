"""Greedy soup (Wortsman et al., 2022): add ingredients best-first, keep one only if the metric improves.

Ingredients are scored alone on the held-out metric and sorted best first; the soup starts as the
best one. Each next ingredient is tried in a uniform average with the current soup's members and
kept only when the held-out score goes up strictly; otherwise it is left out. The result is never
worse on the held-out metric than the best single ingredient (it *is* that ingredient when nothing
helps), which is the point of the greedy recipe over a plain uniform soup.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

from embedtrain.soup.average import build_soup
from embedtrain.soup.ingredients import Ingredient
from embedtrain.soup.metrics import Metric

logger = logging.getLogger(__name__)


@dataclass
class GreedyStep:
    """One tried ingredient: the score of the soup with it, and whether it was kept."""

    ingredient: str
    score: float
    kept: bool


@dataclass
class GreedyResult:
    chosen: list[int]
    individual: list[float]
    steps: list[GreedyStep] = field(default_factory=list)
    score: float = float("nan")


def greedy_select(ingredients: list[Ingredient], metric: Metric) -> GreedyResult:
    """Pick the members of a greedy soup; returns their indices (into ``ingredients``) and the trace."""
    individual = []
    for ing in ingredients:
        score = float(metric(ing.model))
        individual.append(score)
        logger.info("greedy soup: %s alone scores %.3f", ing.name, score)
    order = sorted(range(len(ingredients)), key=lambda i: individual[i], reverse=True)
    chosen = [order[0]]
    best = individual[order[0]]
    steps = [GreedyStep(ingredients[order[0]].name, best, True)]
    template = copy.deepcopy(ingredients[0].model)
    for i in order[1:]:
        candidate = chosen + [i]
        members = [ingredients[j] for j in candidate]
        score = float(metric(build_soup(members, [1.0 / len(members)] * len(members), template=template)))
        kept = score > best
        logger.info("greedy soup: + %s -> %.3f (%s; best so far %.3f)", ingredients[i].name, score,
                    "kept" if kept else "left out", best)
        steps.append(GreedyStep(ingredients[i].name, score, kept))
        if kept:
            chosen, best = candidate, score
    return GreedyResult(chosen, individual, steps, best)
