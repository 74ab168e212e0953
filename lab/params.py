"""llama-bench's parameter syntax, parsed once for both faces (the CLI's flags, the app's Run form).

* A list is comma-separated: ``-p 128,512`` runs both sizes; spaces around items are ignored and
  an empty text is an empty list.
* ``-pg P,N`` is one prompt+generation pair, as in llama-bench; the flag repeats
  (``-pg 512,128 -pg 1024,256``). One value may also hold several pairs separated by ``;``
  (``-pg "512,128;1024,256"``), which is what the app's single pg field takes.

Errors are :class:`~lab.errors.LabError` with one sentence naming the field.
"""

from __future__ import annotations

from lab.errors import LabError

PAIR_SEPARATOR = ";"

# The integer axes of a sweep (BenchOptions field -> lowest, highest value allowed), so both
# faces accept exactly the same values.
AXIS_LIMITS: dict[str, tuple[int | None, int | None]] = {
    "n_prompt": (0, None), "n_gen": (0, None), "n_depth": (0, None), "threads": (1, None),
    "n_gpu_layers": (-1, None), "n_batch": (1, None), "n_ubatch": (1, None), "mmap": (0, 1), "repack": (0, 1),
    "n_pp": (1, None), "n_tg": (1, None), "n_pl": (1, None),
}


def parse_words(text: str) -> list[str]:
    """``"F16, q8_0"`` -> ``["f16", "q8_0"]``: a comma list of lower-cased words."""
    return [v.strip().lower() for v in text.split(",") if v.strip()]


def parse_ints(text: str, name: str, *, minimum: int | None = None, maximum: int | None = None) -> list[int]:
    """``"128, 512"`` -> ``[128, 512]``; every value within ``minimum``..``maximum`` when given."""
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            values.append(int(item))
        except ValueError:
            raise LabError(f"{name} takes a comma list of integers, e.g. 128,256 ('{item}' is not one)") from None
    _check_range(values, name, minimum, maximum)
    return values


def parse_axis(key: str, text: str, name: str) -> list[int]:
    """A comma list for the sweep axis ``key`` (a :class:`~lab.bench.BenchOptions` field),
    within that axis's limits; ``name`` is what the user typed it into (``-t``, ``threads``)."""
    minimum, maximum = AXIS_LIMITS[key]
    return parse_ints(text, name, minimum=minimum, maximum=maximum)


def parse_pairs(text: str, name: str = "-pg") -> list[tuple[int, int]]:
    """``"512,128"`` -> ``[(512, 128)]``; ``"512,128; 1024,256"`` -> two pairs. Both numbers of a
    pair are token counts of at least 1."""
    pairs = []
    for part in text.split(PAIR_SEPARATOR):
        if not part.strip():
            continue
        try:
            values = parse_ints(part, name, minimum=1)
        except LabError:
            values = []
        if len(values) != 2 or part.count(",") != 1:
            raise LabError(
                f"{name} takes P,N pairs of token counts of at least 1 (several separated by "
                f"'{PAIR_SEPARATOR}'), e.g. 512,128 ('{part.strip()}' is not one)"
            )
        pairs.append((values[0], values[1]))
    return pairs


def _check_range(values: list[int], name: str, minimum: int | None, maximum: int | None) -> None:
    if minimum is not None and any(v < minimum for v in values):
        raise LabError(f"{name} values must be at least {minimum}")
    if maximum is not None and any(v > maximum for v in values):
        raise LabError(f"{name} values must be at most {maximum}")
