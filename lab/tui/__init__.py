"""The terminal app: a Textual face over the same domain functions the CLI uses.

Only this package imports Textual (``tests/tui/test_import_hygiene.py`` proves it). Modules here
that do not render anything (``data``, ``live``, ``format``) do not import Textual either, so
they can be tested and reused without it.
"""
