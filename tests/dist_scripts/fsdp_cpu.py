"""Run embedtrain training (or the gathered-loss check) with FSDP2 on CPU processes (gloo), for the tests.

accelerate enables FSDP only on accelerators (on CPUs it falls back to DDP), although torch's FSDP2
(``fully_shard``) runs on CPU with gloo. This wrapper makes accelerate's state report FSDP when the launch
config asks for it and the processes are CPU ones, so the code paths a GPU FSDP run takes (accelerate's
``fully_shard`` wrapping, gathered state dicts, sharded saving) run in the CPU test suite. It changes nothing
else; the training itself is ``embedtrain.api.train``.

Usage (under ``accelerate launch --config_file tests/dist_scripts/fsdp_cpu_2proc.yaml``):
    fsdp_cpu.py train RECIPE.yaml OUT_JSON
    fsdp_cpu.py gather MODEL_DIR OUT_JSON LOSS_NAME [PARAMS_JSON]
"""

import json
import sys

import accelerate.state as accelerate_state
from accelerate.utils import DistributedType

_init = accelerate_state.AcceleratorState.__init__


def _cpu_fsdp_init(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        # later AcceleratorState() calls copy the process state's type over their own: set it there too
        accelerate_state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


accelerate_state.AcceleratorState.__init__ = _cpu_fsdp_init


def train(recipe_path: str, out_file: str) -> None:
    import torch.distributed as dist

    from embedtrain.api import train as run
    from embedtrain.mining.collective import sharding_engine

    result = run(recipe_path)
    engine = sharding_engine()
    if dist.get_rank() == 0:
        with open(out_file, "w") as fh:
            json.dump({"engine": engine, "global_step": result.global_step, "final": str(result.final_dir),
                       "scores_after": result.scores_after}, fh)


def gather(model_dir: str, out_file: str, loss_name: str, params: dict) -> None:
    """The gathered-negatives loss of an FSDP-wrapped model on each rank's half batch vs one process."""
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator
    from sentence_transformers import SentenceTransformer

    from embedtrain.losses import LossContext, build_loss
    from embedtrain.mining.collective import sharding_engine
    from embedtrain.schema import LossConfig

    accelerator = Accelerator(cpu=True)  # as transformers does on a machine without accelerators
    rank, world = dist.get_rank(), dist.get_world_size()
    reference = SentenceTransformer(model_dir, device="cpu")  # unsharded copy: the one-process loss
    reference.eval()
    model = SentenceTransformer(model_dir, device="cpu")
    model, _ = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))  # FSDP2 wants both
    model.eval()
    anchors = [f"question {i} about subject {i * 3}" for i in range(8)]
    positives = [f"answer {i} talking of subject {i * 3}" for i in range(8)]
    per = len(anchors) // world
    mine = slice(rank * per, (rank + 1) * per)

    def features(m, texts):
        return [m.preprocess(texts)]

    gathered = build_loss(LossConfig(name=loss_name, params={**params, "gather_across_devices": True}), model,
                          LossContext())
    with torch.no_grad():
        loss = gathered(features(model, anchors[mine]) + features(model, positives[mine]), None).item()
    local = build_loss(LossConfig(name=loss_name, params=params), reference, LossContext())
    with torch.no_grad():
        full = local(features(reference, anchors) + features(reference, positives), None).item()
        half = local(features(reference, anchors[mine]) + features(reference, positives[mine]), None).item()
    losses = [None] * world
    dist.all_gather_object(losses, {"gathered": loss, "full": full, "local_only": half,
                                    "engine": sharding_engine(), "wrapped": type(model).__name__})
    if rank == 0:
        with open(out_file, "w") as fh:
            json.dump(losses, fh)


if __name__ == "__main__":
    from embedtrain import api

    if sys.argv[1] == "train":
        train(sys.argv[2], sys.argv[3])
    else:
        gather(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]) if len(sys.argv) > 5 else {})
    api.end_processes()  # as the CLI does: an open gloo group can abort the process at exit
