"""Locating and loading models from local paths (never from a hub at run time)."""

from embedtrain.models.resolve import PACKAGED_MODELS, load_model, resolve_model_path

__all__ = ["PACKAGED_MODELS", "load_model", "resolve_model_path"]
