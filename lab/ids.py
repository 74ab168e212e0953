"""Globally unique ids for runs and results, so databases from many machines merge."""

from __future__ import annotations

import datetime as _dt
import uuid


def new_id() -> str:
    """A globally unique, time-ordered id (UUIDv7 layout) as 32 hex characters."""
    ms = int(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000)
    rand = uuid.uuid4().int & ((1 << 80) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand & ((1 << 76) - 1))
    return f"{value:032x}"


def short_id(full_id: str) -> str:
    """The id as shown in tables: its random tail (the head is a timestamp, shared by ids
    made in the same millisecond). Filters accept a short id or a prefix of the full one."""
    return full_id[-10:]
