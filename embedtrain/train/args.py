"""Training arguments: one table of defaults, the recipe's ``training:`` section on top, checked before use.

Every stage builds its arguments here: ``TRAINING_DEFAULTS`` (shared by all stages), then the stage's own
few differences (:attr:`embedtrain.train.runner.TrainingMode.defaults`), then the recipe's ``training:``
values, which always win. Names and values are checked first (:mod:`embedtrain.schema.training_args`), so
a bad value is one located error at ``embedtrain validate`` time.
"""

from __future__ import annotations

import os
from typing import Any

from embedtrain.schema.training_args import check_training_section, training_argument_error

#: Defaults under every recipe's ``training:`` section (the recipe wins).
TRAINING_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 32,
    "num_train_epochs": 1,
    "learning_rate": 2e-5,
    "warmup_steps": 0.1,  # a float < 1 is a fraction of the run (transformers 5; replaces warmup_ratio)
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 3,
    # curves without extra work: <output_dir>/runs/ for `tensorboard --logdir` (none when it is not installed)
    "report_to": "tensorboard",
}

#: Defaults that only sentence-transformers' trainer knows (contrastive and task stages).
ST_TRAINING_DEFAULTS: dict[str, Any] = {
    "batch_sampler": "no_duplicates",
    "dataloader_drop_last": False,
}


def world_size() -> int:
    """Number of processes in this launch (1 outside ``accelerate launch`` / ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def tensorboard_available() -> bool:
    """Whether transformers can log to TensorBoard (the ``tensorboard`` package, or ``tensorboardX``)."""
    from transformers.integrations import is_tensorboard_available

    return bool(is_tensorboard_available())


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def training_kwargs(recipe, args_class: type, stage_defaults: dict[str, Any]) -> dict[str, Any]:
    """Defaults + stage defaults + the checked ``training:`` section (keys the class does not know dropped)."""
    from embedtrain.schema.training_args import argument_fields

    known = argument_fields(args_class)
    kwargs = {k: v for k, v in {**TRAINING_DEFAULTS, **stage_defaults}.items() if k in known}
    if kwargs.get("report_to") == "tensorboard" and not tensorboard_available():
        kwargs["report_to"] = "none"
    kwargs.update(check_training_section(recipe, args_class))
    if world_size() > 1 and "use_cpu" not in recipe.training and not has_accelerator():
        # Under torchrun/accelerate without GPUs the trainer must be told to use gloo on the CPU,
        # otherwise every process trains alone on the whole dataset.
        kwargs["use_cpu"] = True
    return kwargs


def build_training_args(recipe, args_class: type, stage_defaults: dict[str, Any],
                        extra: dict[str, Any] | None = None):
    """The arguments object for ``recipe``; any problem is a located :class:`~embedtrain.errors.RecipeError`.

    ``extra`` holds values the stage derives from the recipe (prompts, samplers) that the recipe's own
    ``training:`` values override.
    """
    kwargs = training_kwargs(recipe, args_class, stage_defaults)
    for key, value in (extra or {}).items():
        if key not in recipe.training:
            kwargs[key] = value
    token = kwargs.pop("hub_token", None)
    if token:
        # The trainer pickles its arguments into every checkpoint (training_args.bin): the token goes to the
        # environment, where huggingface_hub reads it, and never to disk.
        os.environ["HF_TOKEN"] = token
    try:
        return args_class(output_dir=recipe.output_dir, seed=recipe.seed, **kwargs)
    except (TypeError, ValueError) as exc:
        raise training_argument_error(recipe, exc) from None
