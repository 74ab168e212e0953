"""The ``rightsizer`` command: a click group; every sub-command is a thin call into the domain.

Sub-commands live in one module per area (``bench``, ``models``, ``hub``, ``quality``) and keep
their heavy imports (llama.cpp, huggingface_hub, Textual) inside the functions, so that
``rightsizer --help`` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lab import __version__
from lab.cli.db import db_option, open_store, resolve_db
from lab.errors import Cancelled, LabError

# The --db helpers live in lab.cli.db; these names stay importable from the group's module too.
__all__ = ["cli", "db_option", "main", "open_store", "resolve_db"]


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite database for every sub-command.")
@click.version_option(__version__, prog_name="rightsizer")
@click.pass_context
def cli(ctx: click.Context, db_path: Path | None) -> None:
    """Rightsizer: which local model, at which quantization, should I deploy on this hardware?

    With no command, opens the terminal app.
    """
    ctx.ensure_object(dict)
    ctx.obj["db_path"] = db_path
    if ctx.invoked_subcommand is None:
        from lab.cli.tui import launch

        launch(db_path)


def _register() -> None:
    from lab.cli import bench, cost, doctor, endpoints, fleet, hub, load, models, plan, quality, report, rightsize, tui

    for module in (bench, models, tui, doctor, hub, quality, report, fleet, endpoints, cost, plan, rightsize, load):
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)
        for command in getattr(module, "MODEL_COMMANDS", []):
            models.models.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one sentence and exit non-zero; bugs raise."""
    try:
        # standalone_mode=False turns ctx.exit(n) into a return value: pass it on.
        code = cli.main(args=argv, prog_name="rightsizer", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("Cancelled.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Cancelled as exc:
        click.echo(f"Cancelled: {exc}" if str(exc) else "Cancelled.", err=True)
        sys.exit(exc.exit_code)
    except LabError as exc:
        message = str(exc).rstrip(".")
        click.echo(f"error: {message}.", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Cancelled.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
