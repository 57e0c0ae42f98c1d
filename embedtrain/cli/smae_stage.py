"""``embedtrain train`` / ``validate`` for recipes with ``stage: smae`` (SMAE pre-training).

The train/validate commands call these first; they return False for ordinary contrastive recipes.
"""

from __future__ import annotations

from pathlib import Path

from embedtrain.cli.app import out


def run_smae_stage(recipe: Path, overrides: list[str] | None, *, resume: bool, overwrite: bool) -> bool:
    """Train ``recipe`` if it is an SMAE recipe (and print the result); False if it is not one."""
    from embedtrain.training.smae_recipe import is_smae_recipe, load_smae_recipe

    if not is_smae_recipe(recipe, overrides):
        return False
    from embedtrain.training.smae import train_smae

    result = train_smae(load_smae_recipe(recipe, overrides), resume=resume, overwrite=overwrite)
    if result.is_main_process:
        losses = ", ".join(f"({layer},{dim}) {value:.3f}" for (layer, dim), value in result.pair_losses.items())
        out.print(f"SMAE mean MLM loss per (layers, dims): {losses}")
        out.print(f"final model: {result.final_dir} ({result.global_step} steps)")
    return True


def validate_smae_stage(recipe: Path, overrides: list[str] | None) -> bool:
    """Check an SMAE recipe and its data without training; False if it is not one."""
    from embedtrain.training.smae_recipe import is_smae_recipe, load_smae_recipe

    if not is_smae_recipe(recipe, overrides):
        return False
    from embedtrain.models.resolve import recipe_model_path
    from embedtrain.training.smae import load_text_data

    r = load_smae_recipe(recipe, overrides)
    recipe_model_path(r)
    texts = load_text_data(r)
    out.print(f"SMAE stage: {len(texts)} texts")
    out.print("[green]recipe OK[/]")
    return True
