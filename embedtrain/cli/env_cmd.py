"""``embedtrain env``: versions of the core libraries, the tested combination, known clashes."""

from __future__ import annotations

from rich.table import Table

from embedtrain.cli.app import app, out


@app.command("env")
def env() -> None:
    """Print the installed versions of the core libraries and whether they are the tested combination."""
    from embedtrain import api

    report = api.environment()
    table = Table(title=f"embedtrain {report.embedtrain} on Python {report.python}")
    for col in ("library", "installed", "tested"):
        table.add_column(col)
    for name, version in report.versions.items():
        tested = report.tested.get(name, "-")
        mark = "" if version and tested != "-" and version.split("+")[0] == tested else " *"
        table.add_row(name, (version or "not installed") + mark, tested)
    out.print(table)
    if report.matches_tested:
        out.print("this is the tested combination (constraints.txt)")
    else:
        out.print("* differs from the tested combination; install it with: "
                  'pip install -c constraints.txt -e ".[dev,llm]"')
    for line in report.clashes:
        out.print(f"[bold red]known problem:[/] {line}", highlight=False)
