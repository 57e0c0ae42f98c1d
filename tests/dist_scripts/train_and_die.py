"""Train a recipe and SIGKILL this process once step ``argv[2]`` is checkpointed (no clean-up runs)."""

import os
import signal
import sys

from transformers import TrainerCallback

from embedtrain.api import train
from embedtrain.schema import load_recipe


class KillAfterSave(TrainerCallback):
    """Dies at the start of the step after ``step``: the checkpoint of ``step`` is complete by then."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    train(load_recipe(sys.argv[1]), callbacks=[KillAfterSave(int(sys.argv[2]))])
