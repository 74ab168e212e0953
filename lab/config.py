"""Where Rightsizer keeps its things: the lab home, the database, the models folder.

Every path can be overridden by an environment variable, so tests and scripts can point the
whole lab at a temporary folder:

* ``RIGHTSIZER_HOME``    the lab home (default: ``$XDG_DATA_HOME/rightsizer`` or
  ``~/.local/share/rightsizer``)
* ``RIGHTSIZER_DB``      the SQLite database (default: ``<home>/rightsizer.db``)
* ``RIGHTSIZER_MODELS``  the local models folder (default: ``<home>/models``)
* ``HF_HUB_CACHE`` / ``HF_HOME``  the Hugging Face cache, as huggingface_hub reads them
* ``RIGHTSIZER_PROBE_TIMEOUT``  seconds the extra-CPU-buffer-types probe may take (default 300)
* ``RIGHTSIZER_POWERCAP``  where the CPU energy counters (RAPL) are read (default:
  ``/sys/class/powercap``; a copy of that tree elsewhere, e.g. from a privileged exporter)
* ``RIGHTSIZER_SYSFS``  the sysfs tree where CPU clocks, temperatures, throttle counters, board
  power rails (hwmon, INA3221) and the device-tree board model are read (default: ``/sys``)
* ``RIGHTSIZER_MACHINE_NAME``  the name this machine's figures are stored under, in place of
  its hostname (default: the hostname). For fleets of devices cloned from one image, which
  share a hostname and hardware and would otherwise be one machine once merged.

User settings live in ``<home>/settings.json`` (optional).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def lab_home() -> Path:
    """The folder that holds the database, the models folder and caches."""
    env = os.environ.get("RIGHTSIZER_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "rightsizer"


def machine_name() -> str | None:
    """The name this machine goes by in the lab: ``RIGHTSIZER_MACHINE_NAME``, else the
    hostname (None when neither is known)."""
    return os.environ.get("RIGHTSIZER_MACHINE_NAME", "").strip() or socket.gethostname() or None


def default_db_path() -> Path:
    """The database used when no ``--db`` is given."""
    env = os.environ.get("RIGHTSIZER_DB")
    return Path(env).expanduser() if env else lab_home() / "rightsizer.db"


def models_dir() -> Path:
    """The local models folder: downloaded-by-hand files and quant ladders live here."""
    env = os.environ.get("RIGHTSIZER_MODELS")
    return Path(env).expanduser() if env else lab_home() / "models"


def cache_dir() -> Path:
    """Caches that can be rebuilt (reference logits, tokenized texts)."""
    return lab_home() / "cache"


def powercap_root() -> Path:
    """The Linux powercap tree that holds the RAPL energy counters (``intel-rapl:N/energy_uj``)."""
    env = os.environ.get("RIGHTSIZER_POWERCAP")
    return Path(env).expanduser() if env else Path("/sys/class/powercap")


def sysfs_root() -> Path:
    """The sysfs tree the sensors are read from (``devices/system/cpu``, ``class/thermal``,
    ``class/hwmon``, ``bus/i2c``, ``firmware/devicetree``)."""
    env = os.environ.get("RIGHTSIZER_SYSFS")
    return Path(env).expanduser() if env else Path("/sys")


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, resolved the way huggingface_hub resolves it.

    Computed here rather than imported so that commands which never touch the Hub stay fast.
    """
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


@dataclass
class Settings:
    """User settings read from ``<home>/settings.json``; unknown keys are ignored."""

    context: int = 4096
    threads: int | None = None  # None: physical cores
    repetitions: int = 5
    extra_model_dirs: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None = None) -> "Settings":
        path = path or lab_home() / "settings.json"
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Cannot read settings file {path}: {exc}") from exc
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class ConfigError(Exception):
    """A settings problem the user can fix."""
