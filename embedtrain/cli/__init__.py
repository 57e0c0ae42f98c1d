"""Command-line interface (typer). Each command lives in its own ``*_cmd`` module."""

from embedtrain.cli import train_cmd  # noqa: F401  (registers commands)
from embedtrain.cli import export_cmd  # noqa: F401
from embedtrain.cli import mine_cmd  # noqa: F401
from embedtrain.cli import eval_cmd  # noqa: F401
from embedtrain.cli import adapters_cmd, push_cmd, soup_cmd  # noqa: F401
from embedtrain.cli.app import app, run_app


def main() -> None:
    """Console-script entry point (``embedtrain``)."""
    run_app()


__all__ = ["app", "main"]
