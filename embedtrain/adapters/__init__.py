"""Task-specific LoRA adapters (jina-embeddings-v3 style): one frozen base, one adapter and prompt per task.

* :mod:`~embedtrain.adapters.config`: the recipe's ``tasks:`` section.
* :mod:`~embedtrain.adapters.module`: :class:`TaskAdapterTransformer`, the sentence-transformers module
  that holds the adapters and picks one per ``encode(..., task=...)`` call.
* :mod:`~embedtrain.adapters.checkpoint`: turning a model into a task model, loading task checkpoints.
* :mod:`~embedtrain.adapters.training`: training all adapters in one run, one task per batch.
* :mod:`~embedtrain.adapters.export`: merging one adapter into a plain checkpoint.
* :mod:`~embedtrain.adapters.mteb_map`: which adapter an MTEB task type uses.

This package is imported by :mod:`embedtrain.config.recipe` (for the ``tasks`` field), so importing it
must stay light: no torch or sentence-transformers at import time.
"""

# The recipe module must be fully imported before our config module (which subclasses its sections)
# whichever of the two a user imports first; importing it here settles the order.
import embedtrain.config.recipe  # noqa: F401,E402
