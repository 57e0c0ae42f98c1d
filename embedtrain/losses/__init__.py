"""Losses selectable from recipes by name; see :mod:`embedtrain.losses.registry`."""

from embedtrain.losses.registry import (
    LOSSES,
    LossContext,
    LossSpec,
    available_losses,
    build_loss,
    check_loss_config,
    get_loss_spec,
    register_loss,
)

__all__ = ["LOSSES", "LossContext", "LossSpec", "available_losses", "build_loss", "check_loss_config",
           "get_loss_spec", "register_loss"]
