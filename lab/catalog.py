"""The catalog of suggested models (``models/catalog.toml``): small instruct models worth
right-sizing, with their Hub repo, parameter count, license and a line on each.

Installed wheels carry the file as the package ``lab._models``; a source checkout reads it from
``models/`` next to the package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError

CATALOG_FILE = "catalog.toml"


class CatalogError(LabError):
    """The catalog file is missing or malformed."""


@dataclass(frozen=True)
class CatalogEntry:
    """One suggested model."""

    name: str
    repo: str
    params: str
    license: str
    note: str
    family: str | None = None
    quant: str = "Q4_K_M"

    @property
    def spec(self) -> str:
        """What to give ``rightsizer models pull``."""
        return f"{self.repo}:{self.quant}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec
        return d


def catalog_text() -> tuple[str, str]:
    """The catalog's TOML text and where it was read from."""
    try:
        from importlib import resources

        resource = resources.files("lab._models").joinpath(CATALOG_FILE)
        return resource.read_text(encoding="utf-8"), str(resource)
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    import lab

    path = Path(lab.__file__).resolve().parents[1] / "models" / CATALOG_FILE
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise CatalogError(f"The model catalog {path} cannot be read: {exc.strerror or exc}") from None


def _toml_loads(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


def load(text: str | None = None) -> list[CatalogEntry]:
    """Every catalog entry, in file order. ``text`` overrides the packaged file (for tests)."""
    from lab.hub import validate_repo_id

    where = "the given text"
    if text is None:
        text, where = catalog_text()
    try:
        data = _toml_loads(text)
    except ValueError as exc:
        raise CatalogError(f"The model catalog {where} is not valid TOML: {exc}") from None
    rows = data.get("model")
    if not isinstance(rows, list):
        raise CatalogError(f"The model catalog {where} has no [[model]] entries")
    entries: list[CatalogEntry] = []
    seen: set[str] = set()
    for i, row in enumerate(rows, start=1):
        missing = [k for k in ("name", "repo", "params", "license", "note") if not isinstance(row.get(k), str) or not row[k]]
        if missing:
            raise CatalogError(f"Model {i} in the catalog lacks {', '.join(missing)}")
        try:
            validate_repo_id(row["repo"])
        except LabError:
            raise CatalogError(f"Model {i} in the catalog has an invalid repo id '{row['repo']}'") from None
        if row["repo"] in seen:
            raise CatalogError(f"The catalog lists {row['repo']} twice")
        seen.add(row["repo"])
        entries.append(CatalogEntry(
            name=row["name"], repo=row["repo"], params=row["params"], license=row["license"],
            note=row["note"], family=row.get("family"), quant=str(row.get("quant") or "Q4_K_M").upper(),
        ))
    return entries
