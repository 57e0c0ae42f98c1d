"""Run under a 2-process launch: a gathered contrastive loss must equal the single-process loss on the full batch.

Usage: ``gather_check.py MODEL_DIR OUT_JSON [LOSS_NAME [PARAMS_JSON]]`` (default ``mnrl``; e.g. ``gist`` with
``{"guide": MODEL_DIR}``). Each rank takes its half of a fixed 8-pair batch. With ``gather_across_devices``
every anchor sees all 8 positives (and, for GIST, the guide's mask over all of them), so the mean of the
per-rank losses equals the loss of one process on all 8 pairs; without gathering it would not. Writes
``{rank: losses}`` JSON to OUT_JSON.
"""

import json
import sys

import torch
import torch.distributed as dist
from sentence_transformers import SentenceTransformer

from embedtrain.losses import LossContext, build_loss
from embedtrain.schema import LossConfig
from embedtrain.train.distributed import close_collective


def main() -> None:
    model_dir, out_file = sys.argv[1], sys.argv[2]
    loss_name = sys.argv[3] if len(sys.argv) > 3 else "mnrl"
    params = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    anchors = [f"question {i} about subject {i * 3}" for i in range(8)]
    positives = [f"answer {i} talking of subject {i * 3}" for i in range(8)]
    per = len(anchors) // world
    mine = slice(rank * per, (rank + 1) * per)

    def features(texts):
        return [model.preprocess(texts)]

    gathered = build_loss(LossConfig(name=loss_name, params={**params, "gather_across_devices": True}), model,
                          LossContext())
    with torch.no_grad():
        loss = gathered(features(anchors[mine]) + features(positives[mine]), None).item()
    local = build_loss(LossConfig(name=loss_name, params=params), model, LossContext())
    with torch.no_grad():
        full = local(features(anchors) + features(positives), None).item()
        half = local(features(anchors[mine]) + features(positives[mine]), None).item()
    losses = [None] * world
    dist.all_gather_object(losses, {"gathered": loss, "full": full, "local_only": half})
    if rank == 0:
        with open(out_file, "w") as fh:
            json.dump(losses, fh)
    close_collective()  # as the CLI ends: every rank waits, then the group goes (see its docstring)


if __name__ == "__main__":
    main()
