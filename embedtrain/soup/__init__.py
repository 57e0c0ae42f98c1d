"""Model souping: parameter averaging of fine-tuned checkpoints that share an architecture.

``uniform`` averages all checkpoints, ``weighted`` uses given weights, ``greedy`` adds checkpoints
best-first and keeps each only if a held-out metric improves (:mod:`embedtrain.soup.greedy`).
Checkpoints are checked for compatibility first (:mod:`embedtrain.soup.ingredients`); task-adapter
checkpoints average their base weights and, per adapter, their LoRA deltas exactly
(:mod:`embedtrain.soup.average`). The output keeps the first checkpoint's configuration files
exactly (:mod:`embedtrain.soup.output`).

Plain tensor averaging is done here rather than through sentence-transformers' ``merge`` (mergekit):
that path rejects models with peft adapters, and uniform/weighted averaging is a few lines.
"""

from __future__ import annotations

from embedtrain.soup.api import SoupResult, make_soup

__all__ = ["SoupResult", "make_soup"]
