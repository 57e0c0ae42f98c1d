"""The typer application object and shared CLI plumbing (logging, error printing)."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from embedtrain.errors import EmbedtrainError

app = typer.Typer(name="embedtrain", help="Train, evaluate and ship text embedding models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)
#: Tables and results go to stdout so they can be piped; logs go to stderr. ``soft_wrap`` keeps plain lines
#: (paths, scores) unbroken in narrow or non-tty terminals so scripts can grep them.
out = Console(soft_wrap=True)


def setup_logging(verbose: bool = False) -> None:
    """Rich logging on stderr; ``-v`` shows debug messages."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
                        force=True)
    for noisy in ("httpx", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs.")) -> None:
    setup_logging(verbose)


def run_app(argv: list[str] | None = None) -> None:
    """Entry point: run the app, printing :class:`EmbedtrainError` as one red line with exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except EmbedtrainError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise
