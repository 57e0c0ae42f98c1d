"""Knowledge distillation: teacher embedding stores, cached teacher scores, label columns, the projection.

* :mod:`embedtrain.distill.teachers`: pre-compute one or several teachers' embeddings of every text of a
  dataset once (sharded across processes), kept on disk as a memory-mapped ``.npy`` plus a JSON index,
  reused across runs while the teachers' fingerprint is unchanged; teacher scores of (query, document)
  pairs from a cross-encoder or bi-encoder, each pair scored once and cached on disk.
* :mod:`embedtrain.distill.columns`: the ``label`` column the distillation losses read (teacher scores,
  teacher store rows), added to a training dataset.
* :mod:`embedtrain.distill.projection`: the trained student -> teacher projection, saved beside the student
  or appended to it.

The losses live in :mod:`embedtrain.losses` (``margin_mse``, ``listwise_kl``, ``embed_distill``,
``embed_similarity``, ``embed_ranking``, ``self_distill``), the ``stage: distill`` runner in
:mod:`embedtrain.train.distill`, smaller students in :func:`embedtrain.models.truncate.select_layers`
(``model.keep_layers``). See docs/distillation.md.
"""
