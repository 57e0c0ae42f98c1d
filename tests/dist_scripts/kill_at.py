"""Train (or resume) a recipe and SIGKILL this process at a chosen instant; the kill-anywhere test drives it.

    python kill_at.py RECIPE [--resume] [--kill POINT:N]

POINT names an instant (the N-th time it happens in this process):
  step               before a training step runs (between steps)
  after_model        a checkpoint's model files are written
  after_optimizer    its optimizer and scheduler are written
  after_rng          its RNG states are written
  after_trainer_state  its trainer_state.json is written
  after_mining_state   its dynamic-mining state is written
  before_seal        every file is written, the completeness marker is not
  final_written      final.tmp is complete and sealed, not yet swapped into final/
"""

import argparse
import os
import signal

from transformers import Trainer, TrainerState

import embedtrain.io.checkpoints as checkpoints
import embedtrain.mining.table as table
import embedtrain.train.runner as runner
from embedtrain.api import train
from embedtrain.schema import load_recipe


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def patch(owner, name, point, kill_point, count, before=False):
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        if point == kill_point:
            calls["n"] += 1
            if before and calls["n"] == count:
                die()
        result = original(*args, **kwargs)
        if point == kill_point and not before and calls["n"] == count:
            die()
        return result

    setattr(owner, name, wrapper)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill", default=None)
    args = parser.parse_args()
    point, count = (args.kill.split(":") + ["1"])[:2] if args.kill else (None, "0")
    count = int(count)
    patch(Trainer, "training_step", "step", point, count, before=True)
    patch(Trainer, "save_model", "after_model", point, count)
    patch(Trainer, "_save_optimizer_and_scheduler", "after_optimizer", point, count)
    patch(Trainer, "_save_rng_state", "after_rng", point, count)
    patch(TrainerState, "save_to_json", "after_trainer_state", point, count)
    patch(table.NegativeTable, "save", "after_mining_state", point, count)
    patch(runner, "seal", "before_seal", point, count, before=True)  # checkpoint-N markers
    patch(checkpoints, "seal", "final_written", point, count)  # atomic_save's marker on final.tmp
    train(load_recipe(args.recipe), resume=args.resume)


if __name__ == "__main__":
    main()
