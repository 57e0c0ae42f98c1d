"""Training orchestration: recipe -> validated data -> SentenceTransformerTrainer -> checkpoint."""

from embedtrain.training.prepare import prepare_data
from embedtrain.training.trainer import TrainResult, train

__all__ = ["TrainResult", "prepare_data", "train"]
