"""``docs/performance.md``: the results of one ``python -m bench`` run, with its machine.

The file is generated, never edited by hand: numbers without the machine and the date
they were taken on mean nothing, and a hand-edited number cannot be trusted.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stimd.mqtt.private_broker import BrokerError, find_mosquitto

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mosquitto_version() -> str:
    try:
        result = subprocess.run([str(find_mosquitto()), "-h"], capture_output=True,
                                text=True, timeout=10, check=False)
    except (BrokerError, OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("mosquitto version"):
            return line.removeprefix("mosquitto version").strip()
    return "unknown"


def machine() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": mosquitto_version(),
        "load_average_at_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }


@dataclass(frozen=True, slots=True)
class Section:
    """One benchmark's part of the report: how it measures, and what it found."""

    name: str
    method: str          # the module's docstring: the definition of what is measured
    sentence: str | None
    result: dict[str, Any] | None
    error: str | None = None


def _targets_table(targets: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | limit | met |", "|---|---|---|---|"]
    for target in targets:
        lines.append(f"| {target['name']} | {target['measured']} {target['unit']} | "
                     f"{target['limit']} {target['unit']} | "
                     f"{'yes' if target['met'] else '**no**'} |")
    return lines


def render(info: dict[str, Any], sections: Sequence[Section]) -> str:
    lines = [
        "# Performance",
        "",
        "Written by `make bench` (`python -m bench`); do not edit by hand, run it again.",
        "Every benchmark drives the real stack on loopback: a private mosquitto, `stimd run`",
        "daemons and `stimd-sim` simulators with line-rate emulation on. Ground truth is the",
        "simulator's pulse log, on the same monotonic clock as the benchmark.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key.replace('_', ' ')} | {value} |" for key, value in info.items()),
        "",
        "## Summary",
        "",
        "| benchmark | target | measured | limit | met |",
        "|---|---|---|---|---|",
    ]
    for section in sections:
        if section.result is None:
            lines.append(f"| {section.name} | (did not run to the end) | | | **no** |")
            continue
        for target in section.result.get("targets", []):
            lines.append(f"| {section.name} | {target['name']} | {target['measured']} "
                         f"{target['unit']} | {target['limit']} {target['unit']} | "
                         f"{'yes' if target['met'] else '**no**'} |")
    for section in sections:
        lines += ["", f"## {section.name.replace('_', ' ')}", "", section.method.strip(), ""]
        if section.error is not None:
            lines += ["**Failed:**", "", "```", section.error.strip(), "```"]
            continue
        assert section.result is not None and section.sentence is not None
        lines += [section.sentence, "", *_targets_table(section.result.get("targets", [])),
                  "", "```json", json.dumps(section.result, indent=2, sort_keys=True,
                                            ensure_ascii=False), "```"]
    return "\n".join(lines) + "\n"


def write(path: Path, info: dict[str, Any], sections: Sequence[Section]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(render(info, sections), encoding="utf-8")
    temporary.replace(path)
