"""``rightsizer tui`` (and ``rightsizer`` alone): open the terminal app.

Only click is imported at module level; Textual is imported inside :func:`launch`, so that
``rightsizer --help`` and every other sub-command start without it.
"""

from __future__ import annotations

from pathlib import Path

import click

from lab.cli.db import db_option


def launch(db_path: Path | None) -> None:
    """Open the app on ``db_path`` (None: the group's ``--db``, then the default database)."""
    from lab.cli.db import resolve_db
    from lab.store import check_database
    from lab.tui.app import RightsizerApp

    path = resolve_db(db_path)
    check_database(path)  # a database that cannot be opened is one sentence, before the screen clears
    app = RightsizerApp(db_path=path)
    try:
        app.run()
    finally:
        # A run still going (the app crashed or was killed from outside) is cancelled; its
        # thread stops the engine child and records the run before the interpreter exits.
        app.stop_run()


@click.command()
@db_option
def tui(db_path: Path | None) -> None:
    """Open the terminal app: library, live runs, results and the machine."""
    launch(db_path)


COMMANDS = [tui]
