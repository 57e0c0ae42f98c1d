"""Task-specific LoRA adapters (jina-embeddings-v3 style): one frozen base, one adapter and prompt per task.

* :mod:`~embedtrain.schema.tasks`: the recipe's ``tasks:`` section.
* :mod:`~embedtrain.adapters.module`: :class:`TaskAdapterTransformer`, the sentence-transformers module
  that holds the adapters and picks one per ``encode(..., task=...)`` call.
* :mod:`~embedtrain.adapters.checkpoint`: turning a model into a task model, loading task checkpoints.
* :mod:`~embedtrain.train.tasks`: training all adapters in one run, one task per batch.
* :mod:`~embedtrain.adapters.export`: merging one adapter into a plain checkpoint.
* :mod:`~embedtrain.adapters.mteb_map`: which adapter an MTEB task type uses.

"""

from embedtrain.env import require_compatible

# peft and transformers must be versions that work together; fail here with one line if they do not.
require_compatible("peft", "transformers")
