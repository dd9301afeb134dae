"""The `selfheal` command. Each command imports its (possibly heavy) module only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from selfheal.errors import SelfHealError, fail

app = typer.Typer(
    help="selfheal: a DVC pipeline that fixes bad data, refuses bad models, retrains on drift and keeps its service up.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]


@app.command()
def synth(
    params: ParamsOpt = Path("params.yaml"),
    force: Annotated[bool, typer.Option(help="Rewrite the files even when present")] = False,
) -> None:
    """Write the embedded default data (data.raw and data.current) from the synth params; skipped when present."""
    from selfheal.config import load_params
    from selfheal.synth import write_default_data

    for line in write_default_data(load_params(params), force=force):
        typer.echo(line)


def main() -> None:
    """Console entry point: user errors are one line on stderr with exit code 2, never a traceback."""
    try:
        app()
    except SelfHealError as exc:
        fail(str(exc), exc.exit_code)
