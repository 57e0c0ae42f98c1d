"""Losses recipes can name (``embedtrain losses`` lists them), one class per module, and their registry.

=================  =====================================  ==========================================
name               class                                  module
=================  =====================================  ==========================================
``mnrl``           MultipleNegativesRankingLoss           :mod:`.mnrl`
``cached_mnrl``    CachedMultipleNegativesRankingLoss     :mod:`.cached_mnrl`
``cosent``         CoSENTLoss                             :mod:`.cosent`
``angle``          AnglELoss                              :mod:`.angle`
``gist``           MultiNegativeGISTEmbedLoss             :mod:`.gist`
``cached_gist``    CachedGISTEmbedLoss                    :mod:`.cached_gist`
``matryoshka``     MatryoshkaLoss                         :mod:`.matryoshka`
``matryoshka2d``   Matryoshka2dLoss                       :mod:`.matryoshka2d`
``starbucks``      StarbucksLoss                          :mod:`.starbucks`
=================  =====================================  ==========================================
"""

from embedtrain.losses.build import LossContext, available_losses, build_loss, check_loss_config, get_loss_spec
from embedtrain.losses.registry import LOSSES, LossSpec, register_loss

__all__ = ["LOSSES", "LossContext", "LossSpec", "available_losses", "build_loss", "check_loss_config",
           "get_loss_spec", "register_loss"]
