"""The pulse-protocol model: what a clinician's TOML file means, checked key by key.

A protocol file is a user-facing contract (``docs/protocols.md``). Parsing rejects
everything that is not exactly that contract — unknown or missing keys, wrong types,
booleans posing as numbers, NaN, infinities, zero or negative values — and reports
every problem at once, each naming its key, so an author fixes a file in one pass.
Safety limits are not checked here; that is ``protocols.validation``'s job.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from protocols.exact import exact, fmt_number, period_us

Kind = Literal["rtms", "tbs", "single"]
KINDS: tuple[Kind, ...] = ("rtms", "tbs", "single")

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
NAME_MAX_LENGTH = 64


class ProtocolError(ValueError):
    """Unusable protocol, motor threshold or site input; ``problems`` name each key."""

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class RtmsParams:
    """Conventional rTMS: trains of evenly spaced pulses."""

    frequency_hz: float
    pulses_per_train: int
    trains: int
    inter_train_interval_s: float | None  # last pulse → first pulse of the next; None if 1 train


@dataclass(frozen=True, slots=True)
class TbsParams:
    """Theta burst: trains of bursts of closely spaced pulses."""

    pulses_per_burst: int
    intra_burst_hz: float
    burst_hz: float
    bursts_per_train: int
    trains: int
    inter_train_interval_s: float | None  # last pulse → first pulse of the next; None if 1 train


@dataclass(frozen=True, slots=True)
class SingleParams:
    """Single pulses, ``interval_s`` onset to onset."""

    pulses: int
    interval_s: float


KindParams = RtmsParams | TbsParams | SingleParams


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """A well-formed protocol (not yet checked against any safety limit).

    Construction re-checks the fields, so a spec built in code obeys the same
    contract as one parsed from a file.
    """

    name: str
    kind: Kind
    intensity_pct_mt: float
    description: str
    reference: str
    params: KindParams

    def __post_init__(self) -> None:
        problems = _check_tables(self.to_tables())[0]
        if problems:
            raise ProtocolError(problems, source=f"protocol {self.name!r}")

    @property
    def rtms(self) -> RtmsParams | None:
        return self.params if isinstance(self.params, RtmsParams) else None

    @property
    def tbs(self) -> TbsParams | None:
        return self.params if isinstance(self.params, TbsParams) else None

    @property
    def single(self) -> SingleParams | None:
        return self.params if isinstance(self.params, SingleParams) else None

    def to_tables(self) -> dict[str, dict[str, Any]]:
        """The file's tables as a dict; ``parse_protocol(spec.to_tables())`` round-trips."""
        header: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "reference": self.reference,
            "kind": self.kind,
            "intensity_pct_mt": self.intensity_pct_mt,
        }
        params: dict[str, Any]
        p = self.params
        if isinstance(p, RtmsParams):
            params = {
                "frequency_hz": p.frequency_hz,
                "pulses_per_train": p.pulses_per_train,
                "trains": p.trains,
                "inter_train_interval_s": p.inter_train_interval_s,
            }
            table = "rtms"
        elif isinstance(p, TbsParams):
            params = {
                "pulses_per_burst": p.pulses_per_burst,
                "intra_burst_hz": p.intra_burst_hz,
                "burst_hz": p.burst_hz,
                "bursts_per_train": p.bursts_per_train,
                "trains": p.trains,
                "inter_train_interval_s": p.inter_train_interval_s,
            }
            table = "tbs"
        else:
            params = {"pulses": p.pulses, "interval_s": p.interval_s}
            table = "single"
        return {
            "protocol": header,
            table: {k: v for k, v in params.items() if v is not None},
        }


# --- the contract, one entry per key ------------------------------------------------

_Rule = Literal["text", "name", "kind", "positive", "count", "iti"]

_HEADER_KEYS: dict[str, _Rule] = {
    "name": "name",
    "description": "text",
    "reference": "text",
    "kind": "kind",
    "intensity_pct_mt": "positive",
}
_PARAM_KEYS: dict[Kind, dict[str, _Rule]] = {
    "rtms": {
        "frequency_hz": "positive",
        "pulses_per_train": "count",
        "trains": "count",
        "inter_train_interval_s": "iti",
    },
    "tbs": {
        "pulses_per_burst": "count",
        "intra_burst_hz": "positive",
        "burst_hz": "positive",
        "bursts_per_train": "count",
        "trains": "count",
        "inter_train_interval_s": "iti",
    },
    "single": {"pulses": "count", "interval_s": "positive"},
}


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _check_value(key: str, rule: _Rule, value: object) -> str | None:
    """The problem with one present value, or None."""
    if rule in ("text", "name", "kind"):
        if not isinstance(value, str):
            return f"{key}: must be a string, got {_type_name(value)}"
        if rule == "text" and not value.strip():
            return f"{key}: must not be empty"
        if rule == "name" and (
            len(value) > NAME_MAX_LENGTH or not NAME_PATTERN.fullmatch(value)
        ):
            return (
                f"{key}: must be 1-{NAME_MAX_LENGTH} characters of lowercase letters, digits, "
                f"'.', '_' or '-', starting with a letter or digit, got {value!r}"
            )
        if rule == "kind" and value not in KINDS:
            return f"{key}: must be one of {', '.join(KINDS)}, got {value!r}"
        return None
    if rule == "count":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{key}: must be an integer, got {_type_name(value)}"
        if value < 1:
            return f"{key}: must be >= 1, got {value}"
        return None
    # "positive" and "iti": a finite number > 0; ints are accepted where floats are expected
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{key}: must be a number, got {_type_name(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key}: must be finite, got {value!r}"
    if value <= 0:
        return f"{key}: must be > 0, got {fmt_number(value)}"
    return None


def _check_table(
    table_name: str, table: object, keys: Mapping[str, _Rule], problems: list[str]
) -> dict[str, Any] | None:
    """Check one table's keys and values; return it when usable."""
    if not isinstance(table, Mapping):
        problems.append(f"{table_name}: must be a table, got {_type_name(table)}")
        return None
    for key in table:
        if key not in keys:
            problems.append(
                f"{table_name}.{key}: unknown key (allowed: {', '.join(sorted(keys))})"
            )
    checked: dict[str, Any] = {}
    for key, rule in keys.items():
        if key not in table:
            if rule != "iti":  # optional for a single train, see _check_iti
                problems.append(f"{table_name}.{key}: missing")
            continue
        problem = _check_value(f"{table_name}.{key}", rule, table[key])
        if problem:
            problems.append(problem)
        else:
            checked[key] = table[key]
    return checked


def _check_iti(table_name: str, table: Mapping[str, Any], raw: Mapping[str, Any],
               problems: list[str]) -> None:
    trains = table.get("trains")
    if isinstance(trains, int) and trains > 1 and "inter_train_interval_s" not in raw:
        problems.append(f"{table_name}.inter_train_interval_s: missing (required when trains > 1)")


def _check_burst_fits(table: Mapping[str, Any], problems: list[str]) -> None:
    """A burst must end before the next one starts, in the µs the device will run."""
    needed = ("pulses_per_burst", "intra_burst_hz", "burst_hz")
    if not all(k in table for k in needed):
        return
    if table["pulses_per_burst"] < 2:
        problems.append(
            f"tbs.pulses_per_burst: must be >= 2 for theta burst (use kind = \"rtms\" for "
            f"evenly spaced pulses), got {table['pulses_per_burst']}"
        )
        return
    burst_us = (table["pulses_per_burst"] - 1) * period_us(exact(table["intra_burst_hz"]))
    cycle_us = period_us(exact(table["burst_hz"]))
    if burst_us >= cycle_us:
        problems.append(
            f"tbs.burst_hz: a burst of {table['pulses_per_burst']} pulses at "
            f"{fmt_number(table['intra_burst_hz'])} Hz lasts {burst_us} µs, which does not "
            f"end before the next burst starts {cycle_us} µs later "
            f"(burst_hz {fmt_number(table['burst_hz'])})"
        )


def _check_tables(data: object) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Every problem in ``data`` and the checked tables (complete only when no problems)."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        return [f"protocol: must be a table of tables, got {_type_name(data)}"], {}
    header = None
    if "protocol" not in data:
        problems.append("protocol: missing table")
    else:
        header = _check_table("protocol", data["protocol"], _HEADER_KEYS, problems)
    kind = header.get("kind") if header else None
    for table_name in data:
        if table_name == "protocol":
            continue
        if table_name not in KINDS:
            problems.append(
                f"{table_name}: unknown table (allowed: protocol and one of {', '.join(KINDS)})"
            )
        elif kind is not None and table_name != kind:
            problems.append(f"{table_name}: table does not belong to kind {kind!r}")
    checked: dict[str, dict[str, Any]] = {}
    if header is not None:
        checked["protocol"] = header
    if kind:
        if kind not in data:
            problems.append(f"{kind}: missing table (kind = {kind!r} needs it)")
        else:
            raw = data[kind]
            params = _check_table(kind, raw, _PARAM_KEYS[kind], problems)
            if params is not None:
                if kind in ("rtms", "tbs"):
                    _check_iti(kind, params, raw, problems)
                if kind == "tbs":
                    _check_burst_fits(params, problems)
                checked[kind] = params
    return problems, checked


def parse_protocol(data: Mapping[str, Any], *, source: str) -> ProtocolSpec:
    """A ``ProtocolSpec`` from a file's tables, or ``ProtocolError`` listing every problem.

    ``source`` says where the data came from (a path, "inline", a library name) and
    prefixes the error message.
    """
    problems, checked = _check_tables(data)
    if problems:
        raise ProtocolError(problems, source=source)
    header = checked["protocol"]
    kind: Kind = header["kind"]
    p = checked[kind]
    params: KindParams
    if kind == "rtms":
        params = RtmsParams(
            frequency_hz=p["frequency_hz"],
            pulses_per_train=p["pulses_per_train"],
            trains=p["trains"],
            inter_train_interval_s=p.get("inter_train_interval_s"),
        )
    elif kind == "tbs":
        params = TbsParams(
            pulses_per_burst=p["pulses_per_burst"],
            intra_burst_hz=p["intra_burst_hz"],
            burst_hz=p["burst_hz"],
            bursts_per_train=p["bursts_per_train"],
            trains=p["trains"],
            inter_train_interval_s=p.get("inter_train_interval_s"),
        )
    else:
        params = SingleParams(pulses=p["pulses"], interval_s=p["interval_s"])
    return ProtocolSpec(
        name=header["name"],
        kind=kind,
        intensity_pct_mt=header["intensity_pct_mt"],
        description=header["description"],
        reference=header["reference"],
        params=params,
    )


def load_protocol_file(path: str | Path) -> ProtocolSpec:
    """Read and parse one protocol file; unreadable or malformed TOML is a ``ProtocolError``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtocolError(["file: not found"], source=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError([f"file: cannot be read ({exc})"], source=str(file)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError([f"file: not valid TOML ({exc})"], source=str(file)) from None
    return parse_protocol(data, source=str(file))

