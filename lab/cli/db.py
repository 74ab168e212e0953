"""``--db PATH``: the option every command and group takes, and the database it names.

Its own module so that the command modules import it without importing the group that
registers them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import click


def _remember_db(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    # Kept on the shared context object, where resolve_db looks after the command's own value.
    if value is not None:
        ctx.ensure_object(dict)["db_path"] = value
    return value


def db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--db PATH`` on a command or group, so it can follow any command name as well as precede
    it. A function with a ``db_path`` parameter receives the value; every command finds it with
    :func:`resolve_db` (its own ``--db``, then the nearest group's, then the default)."""
    takes_it = "db_path" in inspect.signature(func).parameters
    return click.option(
        "--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
        expose_value=takes_it, callback=_remember_db,
        help="SQLite database (default: $RIGHTSIZER_DB or <lab home>/rightsizer.db).",
    )(func)


def resolve_db(db_path: Path | None) -> Path:
    """The database a command uses: ``db_path`` (its own ``--db``), else the ``--db`` given on
    the command line nearest to it, else ``$RIGHTSIZER_DB`` or ``<lab home>/rightsizer.db``."""
    from lab import config

    if db_path is not None:
        return db_path
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.obj and ctx.obj.get("db_path"):
            return ctx.obj["db_path"]
        ctx = ctx.parent
    return config.default_db_path()


def open_store(db_path: Path | None):  # -> lab.store.Store
    """The store at :func:`resolve_db`'s path (created when missing)."""
    from lab.store import Store

    return Store(resolve_db(db_path))
