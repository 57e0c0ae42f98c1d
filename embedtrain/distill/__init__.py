"""Knowledge distillation: teacher embedding stores, cached teacher scores, data columns, smaller students.

* :mod:`embedtrain.distill.teachers`: pre-compute one or several teachers' embeddings of every text of a
  dataset once (sharded across processes), kept on disk as a memory-mapped ``.npy`` plus a JSON index,
  reused across runs while the teachers' fingerprint is unchanged; teacher scores of (query, document)
  pairs from a cross-encoder or bi-encoder, each pair scored once and cached on disk.
* :mod:`embedtrain.distill.columns`: pure functions from data rows to the columns the distillation
  losses read (teacher scores, teacher store rows).
* :mod:`embedtrain.distill.student`: a student made from a layer-truncated teacher.

The losses themselves live in :mod:`embedtrain.losses` (``margin_mse``, ``listwise_kl``,
``embedding_distill``, ``self_distill``).
"""
