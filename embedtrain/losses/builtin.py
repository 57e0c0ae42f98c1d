"""Imports every module that registers a loss, so the registry is complete once this is imported.

Add a line here when adding a loss module.
"""

from embedtrain.losses import angle, cached_gist, cached_mnrl, cosent, gist, matryoshka, matryoshka2d, mnrl, starbucks  # noqa: F401  # noqa: F401
from embedtrain.losses import (  # noqa: F401  (distillation)
    embed_ranking,
    embed_similarity,
    embedding_distill,
    listwise_kl,
    margin_mse,
    self_distill,
)
