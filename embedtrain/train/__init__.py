"""Training: one runner (:mod:`.runner`) and one mode per recipe stage (:mod:`.contrastive`, :mod:`.tasks`,
:mod:`.smae`); training arguments (:mod:`.args`), dataset preparation (:mod:`.prepare`) and progress display
(:mod:`.progress`)."""

from embedtrain.train.runner import TrainingMode, TrainResult, mode_for, prepare, run

__all__ = ["TrainResult", "TrainingMode", "mode_for", "prepare", "run"]
