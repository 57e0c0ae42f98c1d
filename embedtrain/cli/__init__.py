"""Command-line interface (typer): parses arguments, calls :mod:`embedtrain.api`, prints the result.

One module per command group; every command module registers its commands on :data:`app` when imported.
"""

from embedtrain.cli import (  # noqa: F401
    adapters_cmd,
    env_cmd,
    eval_cmd,
    export_cmd,
    mine_cmd,
    push_cmd,
    soup_cmd,
    train_cmd,  # noqa: F401
)
from embedtrain.cli.app import app, run_app


def main() -> None:
    """Console-script entry point (``embedtrain``)."""
    run_app()


__all__ = ["app", "main", "run_app"]
