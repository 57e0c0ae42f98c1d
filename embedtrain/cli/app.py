"""The typer application object and shared CLI plumbing (logging, error printing, usage errors)."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from embedtrain.errors import EmbedtrainError

app = typer.Typer(name="embedtrain", help="Train, evaluate and ship text embedding models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)
#: Tables and results go to stdout so they can be piped; logs go to stderr. ``soft_wrap`` keeps plain lines
#: (paths, scores) unbroken in narrow or non-tty terminals so scripts can grep them.
out = Console(soft_wrap=True)


def setup_logging(verbose: bool = False) -> None:
    """Logging on stderr: rich in a terminal, one plain line per record in a log file; ``-v`` shows debug."""
    level = logging.DEBUG if verbose else logging.INFO
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        fmt, datefmt = "%(message)s", "[%X]"
    else:  # redirected: no wrapping, no colour, timestamps a log file can be grepped by
        handler = logging.StreamHandler(sys.stderr)
        fmt, datefmt = "%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"
    handler.setFormatter(logging.Formatter(fmt, datefmt=datefmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("httpx", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs.")) -> None:
    setup_logging(verbose)


def int_list(value: str | None, option: str) -> list[int] | None:
    """``"32,64,128"`` -> ``[32, 64, 128]``; anything else is a usage error naming ``option``."""
    if not value:
        return None
    try:
        numbers = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers such as 32,64,128, got '{value}'",
                                 param_hint=option) from None
    if any(n < 1 for n in numbers):
        raise typer.BadParameter(f"values must be positive, got '{value}'", param_hint=option)
    return numbers or None


def run_app(argv: list[str] | None = None) -> None:
    """Entry point. Usage mistakes get click's short usage message and exit code 2; an
    :class:`EmbedtrainError` (a bad recipe, data row, checkpoint...) is one red line, also exit code 2."""
    try:
        app(args=argv, prog_name="embedtrain", standalone_mode=True)
        _close_process_group()
    except EmbedtrainError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except SystemExit as exc:  # click ends every standalone run with sys.exit; success returns normally
        if exc.code not in (0, None):
            raise
        _close_process_group()


def _close_process_group() -> None:
    """After a successful command under ``accelerate launch``: end the process group on every rank."""
    if "torch.distributed" in sys.modules:  # nothing to close (and nothing to import) otherwise
        from embedtrain import api

        api.end_processes()
