"""The student -> teacher projection of embedding distillation: saved beside the student, or appended to it.

When the student's width differs from the teachers' (concatenated) width, the cosine term of
:class:`~embedtrain.losses.embedding_distill.EmbeddingDistillLoss` trains a linear projection that lives on
the loss (sentence-transformers' design), so a plain ``model.save`` would drop it. The distill stage keeps it
in one of two ways (``distill.append_projection``):

* beside the student (default): ``<final>/distill_projection/`` is a sentence-transformers ``Dense`` module
  folder (``config.json`` + ``model.safetensors``); the saved model is the student at its own width.
  :func:`load_projection` reads it back as an ``nn.Linear`` (e.g. to map student queries into the teacher's
  space, or to continue distilling);
* appended to the student: the saved model ends in that ``Dense`` layer (before its ``Normalize``, if any), so
  it outputs vectors in the teachers' space and width (Jasper style).

The same folder is written into every ``checkpoint-N`` so ``--resume`` restores the trained projection.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: Folder of the projection, inside a final model folder or a ``checkpoint-N`` folder.
PROJECTION_DIR = "distill_projection"


def projection_module(linear: nn.Linear):
    """A sentence-transformers ``Dense`` module (no activation) holding a copy of ``linear``'s weights."""
    from sentence_transformers.sentence_transformer.modules import Dense

    dense = Dense(linear.in_features, linear.out_features, bias=linear.bias is not None, activation_function=None)
    with torch.no_grad():
        dense.linear.weight.copy_(linear.weight.detach().cpu())
        if linear.bias is not None:
            dense.linear.bias.copy_(linear.bias.detach().cpu())
    return dense


def save_projection(linear: nn.Linear, folder: str | Path) -> Path:
    """Write ``linear`` to ``folder`` as a ``Dense`` module folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    projection_module(linear).save(str(folder))
    return folder


def load_projection(folder: str | Path) -> nn.Linear:
    """The projection saved by :func:`save_projection` (a model's ``distill_projection`` folder) as ``nn.Linear``."""
    from sentence_transformers.sentence_transformer.modules import Dense

    folder = Path(folder)
    if folder.is_dir() and (folder / PROJECTION_DIR).is_dir():
        folder = folder / PROJECTION_DIR
    return Dense.load(str(folder)).linear


def restore_projection(target: nn.Linear, folder: str | Path) -> None:
    """Copy the weights saved in ``folder`` into ``target`` (shapes must match)."""
    saved = load_projection(folder)
    if saved.weight.shape != target.weight.shape:
        raise ValueError(f"the saved projection maps {saved.in_features} -> {saved.out_features} dims, the run's "
                         f"{target.in_features} -> {target.out_features}")
    with torch.no_grad():
        target.weight.copy_(saved.weight.to(target.weight.device))
        if target.bias is not None and saved.bias is not None:
            target.bias.copy_(saved.bias.to(target.bias.device))


def append_projection(model, linear: nn.Linear) -> None:
    """Make ``linear`` the model's last linear layer, in place: before a final ``Normalize``, else at the end."""
    from sentence_transformers.sentence_transformer.modules import Normalize

    dense = projection_module(linear).to(next(model.parameters()).device)
    modules = list(model)
    index = len(modules) - 1 if modules and isinstance(modules[-1], Normalize) else len(modules)
    model.insert(index, dense)
