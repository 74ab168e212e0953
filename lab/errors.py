"""Errors a user can cause. The CLI prints their message as one sentence and exits non-zero;
the TUI shows it in a notification. Anything else is a bug and is allowed to raise."""

from __future__ import annotations


class LabError(Exception):
    """A problem the user can fix (bad path, bad file, no memory, no network)."""

    exit_code = 1


class ModelError(LabError):
    """A model argument that does not name a usable GGUF file."""


class NotEnoughMemory(LabError):
    """The memory estimate exceeds what the machine has; refused unless forced."""


class HubError(LabError):
    """The Hugging Face Hub could not be reached or refused a request."""


class RunFailed(LabError):
    """The engine child process died or reported an error."""


class Cancelled(LabError):
    """The user cancelled (Ctrl-C or the cancel key)."""

    exit_code = 130
