"""The safety tables: next stricter cell, no interpolation, a monotone envelope."""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path

import pytest

from protocols.safety_tables import safety_tables

DATA = Path(__file__).parents[2] / "protocols/data/safety_tables.toml"


def test_the_data_file_cites_both_tables_and_says_it_is_unverified() -> None:
    text = DATA.read_text()
    data = tomllib.loads(text)
    assert "UNVERIFIED" in text
    assert data["rossi_2009_table3"]["verified"] is False
    assert data["wassermann_1998_table4"]["verified"] is False
    assert "Clin Neurophysiol 2009" in data["rossi_2009_table3"]["citation"]
    assert "1998" in data["wassermann_1998_table4"]["citation"]


@pytest.mark.parametrize(
    ("hz", "row"),
    [(Fraction(1, 10), 1), (1, 1), (Fraction(11, 10), 5), (10, 10), (18, 20), (25, 25),
     (Fraction(2501, 100), None), (100, None)],
)
def test_rows_are_the_next_stricter_frequency(hz: Fraction | int, row: int | None) -> None:
    assert safety_tables().row_for(Fraction(hz)) == row


@pytest.mark.parametrize(
    ("pct", "column"),
    [(10, 90), (90, 90), (Fraction(901, 10), 100), (120, 120), (121, 130), (131, 140),
     (220, 220), (Fraction(22001, 100), None)],
)
def test_columns_are_the_next_stricter_intensity(pct: Fraction | int, column: int | None) -> None:
    assert safety_tables().column_for(Fraction(pct)) == column


@pytest.mark.parametrize(
    ("row", "column", "pulses", "text"),
    [
        (10, 120, 42, "4.2 (42)"),     # the FDA protocol's cell
        (20, 120, 20, "1.0 (20)"),     # the deep TMS cell
        (1, 110, 1800, ">1800 (>1800)"),
        (25, 130, 6, "0.24 (6)"),
        (5, 140, 38, "7.6"),           # Wassermann: seconds × Hz
        (25, 220, 2, "0.08"),
    ],
)
def test_cells_give_their_printed_pulse_count(row: int, column: int, pulses: int,
                                              text: str) -> None:
    limit = safety_tables().train_limit(row, column)
    assert (limit.pulses, limit.cell.text) == (pulses, text)
    assert limit.limiting is limit.cell


def test_a_non_monotonic_cell_is_lowered_to_the_stricter_neighbour() -> None:
    # Wassermann allows 0.9 s at 10 Hz / 160 % but only 0.8 s at 150 %
    limit = safety_tables().train_limit(10, 160)
    assert limit.cell.pulses == 9
    assert limit.pulses == 8
    assert limit.limiting.label == "Wassermann 1998 Table 4 cell 10 Hz / 150 % MT"


def test_no_cell_allows_more_than_a_cell_at_lower_rate_and_intensity() -> None:
    tables = safety_tables()
    for f in tables.frequencies_hz:
        for i in tables.intensities_pct_mt:
            here = tables.train_limit(f, i).pulses
            for f2 in tables.frequencies_hz:
                for i2 in tables.intensities_pct_mt:
                    if f2 <= f and i2 <= i:
                        assert here <= tables.train_limit(f2, i2).pulses
