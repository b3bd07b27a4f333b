"""The shipped library: every file loads, names match files, lookups fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.library import library_names, load_library_protocol, resolve_protocol
from protocols.model import ProtocolError
from protocols.timing import protocol_timing

REQUIRED = {
    "fda-10hz-ldlpfc", "10hz-19min", "deep-tms-18hz-h1", "1hz-rdlpfc", "itbs-600",
    "ctbs-600", "saint-itbs-1800", "demo-10hz-short",
}


def test_the_library_holds_the_required_protocols_sorted() -> None:
    names = library_names()
    assert set(names) >= REQUIRED
    assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_library_protocol_loads_under_its_file_name(name: str) -> None:
    assert load_library_protocol(name).name == name


@pytest.mark.parametrize(
    ("name", "kind", "pct_mt", "pulses"),
    [
        ("fda-10hz-ldlpfc", "rtms", 120, 3000),
        ("10hz-19min", "rtms", 120, 3000),
        ("deep-tms-18hz-h1", "rtms", 120, 1980),
        ("1hz-rdlpfc", "rtms", 110, 720),
        ("itbs-600", "tbs", 120, 600),
        ("ctbs-600", "tbs", 80, 600),
        ("saint-itbs-1800", "tbs", 90, 1800),
    ],
)
def test_library_values_match_the_reference_table(
    name: str, kind: str, pct_mt: int, pulses: int
) -> None:
    spec = load_library_protocol(name)
    assert (spec.kind, spec.intensity_pct_mt) == (kind, pct_mt)
    assert protocol_timing(spec).total_pulses == pulses


def test_the_demo_protocol_is_short_and_gentle() -> None:
    spec = load_library_protocol("demo-10hz-short")
    seconds = protocol_timing(spec).session_duration_us / 1e6
    assert 20 <= seconds <= 30
    assert spec.intensity_pct_mt <= 100


def test_an_unknown_library_name_lists_the_known_ones() -> None:
    with pytest.raises(ProtocolError) as info:
        load_library_protocol("fda")
    assert info.value.problems == [
        f"unknown library protocol 'fda' (known: {', '.join(library_names())})"
    ]


def test_resolve_takes_library_names_and_file_paths(tmp_path: Path) -> None:
    assert resolve_protocol("itbs-600") == load_library_protocol("itbs-600")
    copy = tmp_path / "mine.toml"
    copy.write_text(
        (Path(__file__).parents[2] / "protocols/library/itbs-600.toml").read_text()
    )
    assert resolve_protocol(str(copy)) == load_library_protocol("itbs-600")
    with pytest.raises(ProtocolError, match="not a library protocol"):
        resolve_protocol("itbs")
    with pytest.raises(ProtocolError) as info:
        resolve_protocol(str(tmp_path / "absent.toml"))
    assert info.value.problems == ["file: not found"]
