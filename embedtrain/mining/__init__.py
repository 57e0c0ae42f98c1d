"""Hard-negative mining: offline (``embedtrain mine``) and dynamic re-mining during training.

Modules, one concept each:

* :mod:`~embedtrain.schema.mining` - typed settings (offline run, recipe ``mining:`` section).
* :mod:`~embedtrain.mining.search` - batched encoding and memory-bounded top-k retrieval.
* :mod:`~embedtrain.mining.filtering` - rank window and false-negative (margin) filters.
* :mod:`~embedtrain.mining.rescore` - optional cross-encoder rescoring hook.
* :mod:`~embedtrain.mining.offline` - the offline mining job and its output files.
* :mod:`~embedtrain.mining.st_engine` - the same job run by ``sentence_transformers.util.mine_hard_negatives``.
* :mod:`~embedtrain.mining.collective` - sharding work across processes and gathering the results.
* :mod:`~embedtrain.mining.table` - the mutable per-example negatives table a training dataset reads through.
* :mod:`~embedtrain.mining.dynamic` - Conan-style re-mining rounds and the trainer callback.

This package's ``__init__`` stays import-light because the recipe schema imports its config.
"""
