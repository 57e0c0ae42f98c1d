"""Losses recipes can name (``embedtrain losses`` lists them), one class per module, and their registry.

====================  =====================================  ==========================================
name                  class                                  module
====================  =====================================  ==========================================
``mnrl``              MultipleNegativesRankingLoss           :mod:`.mnrl`
``cached_mnrl``       CachedMultipleNegativesRankingLoss     :mod:`.cached_mnrl`
``cosent``            CoSENTLoss                             :mod:`.cosent`
``angle``             AnglELoss                              :mod:`.angle`
``gist``              MultiNegativeGISTEmbedLoss             :mod:`.gist`
``cached_gist``       CachedGISTEmbedLoss                    :mod:`.cached_gist`
``matryoshka``        MatryoshkaLoss                         :mod:`.matryoshka`
``matryoshka2d``      Matryoshka2dLoss                       :mod:`.matryoshka2d`
``starbucks``         StarbucksLoss                          :mod:`.starbucks`
``margin_mse``        MarginMSEDistillLoss                   :mod:`.margin_mse`
``listwise_kl``       ListwiseDistillLoss                    :mod:`.listwise_kl`
``embed_distill``     EmbeddingDistillLoss                   :mod:`.embedding_distill`
``embed_similarity``  SimilarityMatrixDistillLoss            :mod:`.embed_similarity`
``embed_ranking``     RelativeRankingDistillLoss             :mod:`.embed_ranking`
``self_distill``      SelfDistillLoss                        :mod:`.self_distill`
====================  =====================================  ==========================================
"""

from embedtrain.losses.build import LossContext, available_losses, build_loss, check_loss_config, get_loss_spec
from embedtrain.losses.registry import LOSSES, LossSpec, register_loss

__all__ = ["LOSSES", "LossContext", "LossSpec", "available_losses", "build_loss", "check_loss_config",
           "get_loss_spec", "register_loss"]
