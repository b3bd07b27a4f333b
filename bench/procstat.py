"""CPU time and resident memory of processes, from /proc (Linux only, no extra package).

CPU is measured as the process's own user + system time over a wall-clock window, in
percent of one core: the number the ≤ 1 % idle target is stated in.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# proc(5) numbers the fields of /proc/<pid>/stat from 1; utime is 14 and stime 15. The
# split below starts at field 3 (the state), after the command name.
_UTIME = 14 - 3
_STIME = 15 - 3


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        text = stat.read()
    # the command name may contain spaces and parentheses; it ends at the last ")"
    fields = text[text.rindex(")") + 2:].split()
    ticks = int(fields[_UTIME]) + int(fields[_STIME])
    return ticks / CLOCK_TICKS_PER_S


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line (a zombie?)")


def pid_with_argument(argument: str) -> int:
    """The one process of ours whose command line contains ``argument`` (e.g. a config
    file path that only one child was started with)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                arguments = cmdline.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if argument.encode() in arguments:
            found.append(int(entry))
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} processes have {argument!r} on their command line")
    return found[0]


@dataclass(frozen=True, slots=True)
class Usage:
    """One process over one window: mean CPU in % of a core, largest RSS seen."""

    cpu_pct: float
    rss_mb: float


async def measure_usage(pids: Sequence[int], seconds: float,
                        rss_every_s: float = 1.0) -> list[Usage]:
    """CPU over ``seconds`` and the peak RSS sampled every ``rss_every_s``, per pid."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    before = [cpu_seconds(pid) for pid in pids]
    peak = [rss_mb(pid) for pid in pids]
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(rss_every_s, left))
        peak = [max(p, rss_mb(pid)) for p, pid in zip(peak, pids, strict=True)]
    elapsed = time.monotonic() - started
    after = [cpu_seconds(pid) for pid in pids]
    return [Usage(round(100 * (b - a) / elapsed, 3), round(p, 1))
            for a, b, p in zip(before, after, peak, strict=True)]


def summarise(usages: Sequence[Usage]) -> dict[str, float]:
    """Mean and max over processes, for a fleet's report."""
    cpu = [u.cpu_pct for u in usages]
    rss = [u.rss_mb for u in usages]
    return {
        "cpu_pct_mean": round(sum(cpu) / len(cpu), 3),
        "cpu_pct_max": round(max(cpu), 3),
        "rss_mb_mean": round(sum(rss) / len(rss), 1),
        "rss_mb_max": round(max(rss), 1),
    }
