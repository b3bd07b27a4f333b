"""``python -m bench`` (``make bench``): every benchmark at its full size, then the report.

Benchmarks run one after another (they would disturb each other's timing otherwise);
one that fails is reported as failed in ``docs/performance.md`` and the others still
run. Exit status 0 when all ran (met or not: CI does not gate on benchmarks), 1 when one
could not run, 130 when interrupted (the report is then not written).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from bench import fleet, keepalive_load, onset_accuracy, report, startup, stop_latency
from bench.cli import bounded, run_main

BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (stop_latency, onset_accuracy, keepalive_load, fleet, startup)
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--fleet-n", type=bounded(int, 1, 100), default=10,
                        help="daemons in the fleet benchmark (default 10; 50 opt-in)")
    parser.add_argument("--smoke", action="store_true",
                        help="each benchmark in its smallest configuration (seconds, not "
                             "minutes): checks that they run, measures nothing worth keeping")
    parser.add_argument("--output", type=Path, default=report.DOC_PATH,
                        help=f"report file (default {report.DOC_PATH})")
    return parser


async def run_all(args: argparse.Namespace) -> int:
    """Run the chosen benchmarks and write the report; 1 when one failed, else 0."""
    info = report.machine()
    sections = []
    for name, module in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        if args.smoke:
            argv = module.SMOKE_ARGV
        else:
            argv = ["--n", str(args.fleet_n)] if module is fleet else []
        method = module.__doc__ or ""
        try:
            result = await module.run(module.build_parser().parse_args(argv))
        except Exception:
            error = traceback.format_exc()
            print(f"{name}: FAILED\n{error}", file=sys.stderr, flush=True)
            sections.append(report.Section(name, method, None, None, error))
            continue
        sections.append(report.Section(name, method, module.describe(result), result))
    report.write(args.output, info, sections)
    print(f"report written to {args.output}", flush=True)
    return 0 if all(section.error is None for section in sections) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: run_all(args))


if __name__ == "__main__":
    sys.exit(main())
