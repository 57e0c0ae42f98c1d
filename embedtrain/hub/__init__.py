"""Publishing checkpoints to the Hugging Face Hub: model card generation and upload (``embedtrain push``)."""

from embedtrain.hub.card import build_card
from embedtrain.hub.push import PushResult, push, stage_folder

__all__ = ["PushResult", "build_card", "push", "stage_folder"]
