"""Files on disk: data readers and training formats (:mod:`.readers`, :mod:`.formats`), UTF-8 text
(:mod:`.text`) and the checkpoint folder layout (:mod:`.checkpoints`).

A leaf package like :mod:`embedtrain.schema`: it imports no feature package. Import the submodules directly;
this ``__init__`` imports nothing so that reading a recipe does not pull in ``datasets``.
"""
