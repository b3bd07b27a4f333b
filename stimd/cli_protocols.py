"""``stimd protocols`` and ``stimd validate``: the protocol library and validation on a terminal.

Exit codes: 0 accepted (or listed), 1 rejected by a check, 2 unusable input — a missing
file, malformed TOML, an unknown device, a bad motor threshold — always with a message
naming the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TextIO

from protocols.capabilities import (
    DEVICE_MODELS,
    RAPID_MODELS,
    DeviceCapabilities,
    device_profile,
)
from protocols.checks import Check
from protocols.exact import fmt_duration_us, fmt_number
from protocols.library import library_names, load_library_protocol, resolve_protocol
from protocols.model import ProtocolError
from protocols.motor_threshold import MT_METHODS, MotorThreshold
from protocols.site import SiteLimits, load_site
from protocols.timing import protocol_timing
from protocols.validation import ValidationResult, validate

EXIT_ACCEPTED = 0
EXIT_REJECTED = 1
EXIT_UNUSABLE = 2

_STRICTER_MAINS = 115  # the lower Rapid frequency table, used when --mains is not given


class _UnusableInput(Exception):
    """Input the command cannot work with; the message says why."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listing = subparsers.add_parser(
        "protocols", help="list the protocol library",
        description="List the shipped protocol library: name, kind, pulses, duration, reference.",
    )
    listing.set_defaults(func=run_protocols)

    check = subparsers.add_parser(
        "validate", help="validate a protocol for a patient, device and site",
        description="Check a protocol against the safety tables, the device and the site; "
                    "print every check. Exit 0 accepted, 1 rejected, 2 unusable input.",
    )
    check.add_argument("protocol", metavar="FILE_OR_LIBRARY_NAME",
                       help="a library name (see `stimd protocols`) or a path to a .toml file")
    check.add_argument("--mt", required=True, metavar="PCT_MSO",
                       help="resting motor threshold, integer %%MSO 1-100")
    check.add_argument("--mt-method", default="emg", metavar="METHOD",
                       help=f"how the MT was found: {' or '.join(MT_METHODS)} (default emg)")
    check.add_argument("--mt-measured-at", metavar="ISO8601",
                       help="when the MT was measured, with a UTC offset (default: now)")
    check.add_argument("--device", required=True, metavar="MODEL",
                       help=f"device model: {', '.join(DEVICE_MODELS)}")
    check.add_argument("--mains", metavar="VOLTS",
                       help="mains voltage, 240 or 115 (Rapids; default: the stricter 115)")
    check.add_argument("--site", metavar="SITE_TOML",
                       help="site limits file (default: the built-in conservative limits)")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(func=run_validate)


def run_protocols(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    rows = [("NAME", "KIND", "PULSES", "DURATION", "REFERENCE")]
    try:
        for name in library_names():
            spec = load_library_protocol(name)
            timing = protocol_timing(spec)
            rows.append((name, spec.kind, str(timing.total_pulses),
                         fmt_duration_us(timing.session_duration_us), spec.reference))
    except ProtocolError as exc:
        print(f"stimd protocols: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) if i != 2 else row[i].rjust(widths[i])
                 for i in range(4)]
        print("  ".join([*cells, row[4]]), file=stream)
    return EXIT_ACCEPTED


def _motor_threshold(args: argparse.Namespace, now: datetime) -> MotorThreshold:
    try:
        pct = int(args.mt)
    except ValueError:
        raise _UnusableInput(f"--mt: must be an integer %MSO 1-100, got {args.mt!r}") from None
    measured = now
    if args.mt_measured_at is not None:
        try:
            measured = datetime.fromisoformat(args.mt_measured_at)
        except ValueError:
            raise _UnusableInput(
                f"--mt-measured-at: must be an ISO 8601 date-time, got {args.mt_measured_at!r}"
            ) from None
    return MotorThreshold(pct_mso=pct, method=args.mt_method, measured_at=measured)


def _device(args: argparse.Namespace) -> tuple[DeviceCapabilities, str | None]:
    """The device profile, and a note when the stricter mains voltage was assumed."""
    mains: int | None = None
    if args.mains is not None:
        if args.mains not in ("240", "115"):
            raise _UnusableInput(f"--mains: must be 240 or 115, got {args.mains!r}")
        mains = int(args.mains)
    note = None
    if mains is None and args.device in RAPID_MODELS:
        mains = _STRICTER_MAINS
        note = (f"--mains not given: using the stricter {_STRICTER_MAINS} V limits of "
                f"{args.device}")
    try:
        return device_profile(args.device, mains), note
    except ValueError as exc:
        raise _UnusableInput(f"--device: {exc}") from None


def _site(args: argparse.Namespace) -> SiteLimits:
    return SiteLimits() if args.site is None else load_site(args.site)


def run_validate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    now = datetime.now(UTC)
    try:
        protocol = resolve_protocol(args.protocol)
        mt = _motor_threshold(args, now)
        device, note = _device(args)
        site = _site(args)
    except ProtocolError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        where = f" ({exc.source})" if exc.source else ""
        print(f"stimd validate: unusable input{where}:\n{lines}", file=sys.stderr)
        return EXIT_UNUSABLE
    except _UnusableInput as exc:
        print(f"stimd validate: unusable input: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if note:
        print(f"note: {note}", file=sys.stderr)
    result = validate(protocol, mt, device, site, now=now)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False), file=stream)
    else:
        _print_report(result, f"{protocol.name} ({protocol.kind}, "
                      f"{fmt_number(protocol.intensity_pct_mt)} % MT) for MT {mt.pct_mso} %MSO "
                      f"({mt.method}) on {device.display_name}", stream)
    return EXIT_ACCEPTED if result.accepted else EXIT_REJECTED


def _status(check: Check) -> str:
    if not check.ok:
        return "FAIL"
    return "WARN" if check.severity == "warning" else "ok"


def _print_report(result: ValidationResult, title: str, stream: TextIO) -> None:
    print(f"Validating {title}", file=stream)
    width = max(len(c.code) for c in result.checks)
    for check in result.checks:
        print(f"  {_status(check):<4}  {check.code:<{width}}  {check.message}  "
              f"[{check.source}]", file=stream)
    plan = result.plan
    if plan is None:
        failed = len(result.rejections)
        print(f"REJECTED: {failed} check{'s' if failed != 1 else ''} failed", file=stream)
        return
    schedule = plan.schedule
    print(f"ACCEPTED: {schedule.total_pulses} pulses in {len(schedule.trains)} "
          f"train{'s' if len(schedule.trains) != 1 else ''}, "
          f"{fmt_duration_us(schedule.duration_us)}, {plan.intensity_pct_mso} %MSO", file=stream)
    print(f"  digest {schedule.digest}", file=stream)
    for warning in plan.warnings:
        print(f"  warning: {warning.message}", file=stream)
