"""Imports every module that registers a loss, so the registry is complete once this is imported.

Add a line here when adding a loss module.
"""

from embedtrain.losses import (  # noqa: F401
    angle,
    cached_gist,
    cached_mnrl,
    cosent,
    embed_ranking,
    embed_similarity,
    embedding_distill,
    gist,
    listwise_kl,
    margin_mse,
    matryoshka,
    matryoshka2d,
    mnrl,
    self_distill,
    starbucks,
)
