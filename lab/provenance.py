"""Where a stored figure comes from: the machine it was measured on and the versions that
measured it. Every domain job that writes a ``runs`` row (quality, quantize, eval) takes both
from here, so none of them has to import another."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.store import Store


def record_machine(store: "Store") -> str:
    """Store this machine's fingerprint; returns its id (every run links to it)."""
    from lab import hardware

    return store.upsert_machine(hardware.fingerprint())


def run_extra() -> dict[str, Any]:
    """Version columns every ``runs`` row carries."""
    from lab import __version__, hardware

    fp = hardware.fingerprint()
    return {"lab_version": __version__, "llama_cpp_version": fp.get("llama_cpp_version"),
            "build_commit": fp.get("build_commit")}
