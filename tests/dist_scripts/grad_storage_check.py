"""Train a recipe with ``embedtrain.api.train`` under ``accelerate launch`` and record, after the first optimizer
step, how many distinct storages the parameters' gradients live in (for the tests).

With DDP's ``gradient_as_bucket_view`` the gradients are views into a few flat all-reduce buckets; without it
each parameter's gradient has its own storage.

Usage: grad_storage_check.py RECIPE.yaml OUT_JSON
"""

import json
import sys

import torch.distributed as dist
from transformers import TrainerCallback


class GradStorages(TrainerCallback):
    def __init__(self) -> None:
        self.record = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.record is None:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            self.record = {"gradients": len(grads),
                           "storages": len({g.untyped_storage().data_ptr() for g in grads})}


def main(recipe_path: str, out_file: str) -> None:
    from embedtrain.api import train

    check = GradStorages()
    train(recipe_path, callbacks=[check])
    if dist.get_rank() == 0:
        with open(out_file, "w") as fh:
            json.dump({**check.record, "world_size": dist.get_world_size()}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
