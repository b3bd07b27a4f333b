"""The published single-train limits for conventional rTMS (``data/safety_tables.toml``).

Rossi 2009 Table 3 (90–130 % MT) and Wassermann 1998 Table 4 (140–220 % MT) share the
frequency rows 1, 5, 10, 20, 25 Hz and together form one grid. The rules, decided in
``docs/protocols.md``:

* A prescription uses the *next stricter* cell: the smallest tabulated frequency at or
  above its rate and the smallest tabulated intensity at or above its %MT. Never
  interpolate; rates below 1 Hz use the 1 Hz row, intensities below 90 % the 90 % column.
  Above 25 Hz or 220 % MT there is no data: the caller rejects.
* The limit is a pulse count. A cell's pulses are what it prints, else seconds × Hz; a
  slower train than the row's rate spreads the same pulses over more time, so the
  count stays conservative where a duration would not be comparable.
* The measured tables are not monotonic (10 Hz allows 0.8 s at 150 % but 0.9 s at 160 %).
  A higher intensity or rate must never allow more, so a cell's limit is the minimum over
  itself and every cell at a lower-or-equal frequency and intensity; the message names
  the cell that set it.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from importlib import resources
from typing import Any

_TABLES = ("rossi_2009_table3", "wassermann_1998_table4")
_CELL = re.compile(r"^(>?)(\d+(?:\.\d+)?)(?: \((>?)(\d+)\))?$")


@dataclass(frozen=True, slots=True)
class TableCell:
    """One printed cell."""

    table: str                 # short citation, e.g. "Rossi 2009 Table 3"
    frequency_hz: int
    intensity_pct_mt: int
    text: str                  # as printed, e.g. ">5 (>50)"
    seconds: Fraction
    pulses: int                # printed pulses, or seconds × Hz; the smaller if both

    @property
    def label(self) -> str:
        return f"{self.table} cell {self.frequency_hz} Hz / {self.intensity_pct_mt} % MT"


@dataclass(frozen=True, slots=True)
class TrainLimit:
    """The limit for one (row, column): the looked-up cell and the cell that sets it."""

    cell: TableCell
    limiting: TableCell

    @property
    def pulses(self) -> int:
        return self.limiting.pulses


@dataclass(frozen=True, slots=True)
class SafetyTables:
    frequencies_hz: tuple[int, ...]
    intensities_pct_mt: tuple[int, ...]
    cells: dict[tuple[int, int], TableCell]
    citations: dict[str, str]   # short → full citation

    def row_for(self, frequency_hz: Fraction) -> int | None:
        """The next stricter tabulated frequency, or None above the last row."""
        return next((f for f in self.frequencies_hz if frequency_hz <= f), None)

    def column_for(self, intensity_pct_mt: Fraction) -> int | None:
        """The next stricter tabulated intensity, or None above the last column."""
        return next((i for i in self.intensities_pct_mt if intensity_pct_mt <= i), None)

    def train_limit(self, row_hz: int, column_pct_mt: int) -> TrainLimit:
        cell = self.cells[(row_hz, column_pct_mt)]
        candidates = [
            c for (f, i), c in self.cells.items() if f <= row_hz and i <= column_pct_mt
        ]
        smallest = min(c.pulses for c in candidates)
        limiting = cell if cell.pulses == smallest else next(
            c for c in candidates if c.pulses == smallest
        )
        return TrainLimit(cell=cell, limiting=limiting)


def _parse_cell(table: str, frequency: int, intensity: int, text: object) -> TableCell:
    match = _CELL.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise RuntimeError(
            f"safety_tables.toml: {table} cell {frequency} Hz / {intensity} % MT "
            f"must look like '4.2 (42)', '>5 (>50)' or '0.8', got {text!r}"
        )
    seconds = Fraction(match.group(2))
    from_seconds = math.floor(seconds * frequency)
    printed = int(match.group(4)) if match.group(4) else None
    pulses = from_seconds if printed is None else min(printed, from_seconds)
    return TableCell(table, frequency, intensity, str(text), seconds, pulses)


def _parse(data: dict[str, Any]) -> SafetyTables:
    frequencies: tuple[int, ...] | None = None
    intensities: list[int] = []
    cells: dict[tuple[int, int], TableCell] = {}
    citations: dict[str, str] = {}
    for key in _TABLES:
        section = data[key]
        short = str(section["short"])
        citations[short] = str(section["citation"])
        rows = tuple(int(f) for f in section["frequencies_hz"])
        if frequencies is not None and rows != frequencies:
            raise RuntimeError("safety_tables.toml: the tables must share their frequency rows")
        frequencies = rows
        columns = [int(i) for i in section["intensities_pct_mt"]]
        grid = section["cells"]
        if len(grid) != len(rows) or any(len(r) != len(columns) for r in grid):
            raise RuntimeError(f"safety_tables.toml: {key} cells must be rows × columns")
        for f, row in zip(rows, grid, strict=True):
            for i, text in zip(columns, row, strict=True):
                cells[(f, i)] = _parse_cell(short, f, i, text)
        intensities.extend(columns)
    if frequencies is None or intensities != sorted(set(intensities)):
        raise RuntimeError("safety_tables.toml: intensity columns must ascend without overlap")
    if list(frequencies) != sorted(set(frequencies)):
        raise RuntimeError("safety_tables.toml: frequency rows must ascend")
    return SafetyTables(frequencies, tuple(intensities), cells, citations)


@cache
def safety_tables() -> SafetyTables:
    """The packaged tables, parsed once."""
    text = resources.files("protocols").joinpath("data/safety_tables.toml").read_text(
        encoding="utf-8"
    )
    return _parse(tomllib.loads(text))

