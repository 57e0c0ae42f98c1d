"""Imports every module that registers a loss, so the registry is complete once this is imported.

Add a line here when adding a loss module.
"""

from embedtrain.losses import contrastive, scored  # noqa: F401
from embedtrain.losses import matryoshka, starbucks  # noqa: F401  (matryoshka, matryoshka2d, starbucks)
from embedtrain.losses import gist  # noqa: F401  (gist, cached_gist)
