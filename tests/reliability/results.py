"""Where the reliability tests leave what they measured, for the report to render.

One JSON file per measurement: ``fault-<id>.json`` for a fault-matrix row,
``crash-<name>.json`` for crash-consistency runs, ``fuzz-<name>.json`` for fuzzing
volume, ``security-<name>.json`` for the security checks. A run overwrites its own
files, so the directory always holds the latest result of each.

The directory is ``$STIMD_RELIABILITY_RESULTS`` or ``.pytest_cache/reliability`` at the
repository root (ignored by git; results are evidence of a run, not source).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "STIMD_RELIABILITY_RESULTS"
_NAME = re.compile(r"^(fault|crash|fuzz|security)-[a-z0-9_]+$")


def results_dir() -> Path:
    configured = os.environ.get(ENV_VAR)
    return Path(configured) if configured else REPO_ROOT / ".pytest_cache" / "reliability"


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``<name>.json`` atomically (a report never reads half a file)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"result name {name!r} must match {_NAME.pattern}")
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.json"
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(temporary, target)
    return target


def read_results(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every result in ``directory`` by name (``fault-serial_unplug`` …)."""
    where = directory or results_dir()
    found: dict[str, dict[str, Any]] = {}
    if not where.is_dir():
        return found
    for path in sorted(where.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and _NAME.fullmatch(path.stem):
            found[path.stem] = data
    return found
