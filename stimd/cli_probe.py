"""``stimd probe``: connect to a stimulator, say what it is, disconnect.

For the technician setting up a station and for the developer writing a driver: it
opens the port the way the daemon would (same registry, same driver, same handshake),
prints identity, capabilities, status and coil temperature, and closes cleanly. It
never arms. Exit 0 when the unit answered, 1 when it did not (or answered wrongly),
2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from drivers.base import Stimulator
from drivers.errors import DriverError, InvalidSetting
from drivers.registry import UnknownDriver, create_driver, driver_names

EXIT_OK, EXIT_NO_ANSWER, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT_S = 5.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "probe", help="connect to a stimulator, print identity/capabilities/status, disconnect",
        description=__doc__,
    )
    parser.add_argument("--driver", required=True, help=f"driver name: {', '.join(driver_names())}")
    parser.add_argument("--port", required=True,
                        help="device path, pty link, or pyserial URL (socket://host:port)")
    parser.add_argument("--mains", type=int, default=None, metavar="V",
                        help="mains voltage 240 or 115 (required by Rapid drivers)")
    parser.add_argument("--unlock-code", default=None, help="Magstim Rapid v9+ unlock code")
    parser.add_argument("--coil", default=None, help="coil the configuration says is attached")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"give up after S seconds (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=run)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def probe(driver: Stimulator, timeout_s: float) -> dict[str, Any]:
    """Connect, identify, read status; always close. Raises ``DriverError``/``TimeoutError``."""
    try:
        async with asyncio.timeout(timeout_s):
            identity = await driver.connect()
            status = await driver.read_status()
    finally:
        await driver.close()
    return {
        "identity": _plain(identity),
        "capabilities": _plain(driver.capabilities),
        "status": _plain(status),
        "coil_temperature_c": status.coil_temperature_c,
    }


def _print_text(driver: str, port: str, report: dict[str, Any]) -> None:
    identity, caps, status = report["identity"], report["capabilities"], report["status"]
    print(f"{caps['display_name']} on {port} (driver {driver})")
    print(f"  vendor {identity['vendor']}, dialect {identity['dialect']},"
          f" firmware {identity['firmware']}, serial number {identity['serial_number'] or '-'}")
    print("capabilities:")
    for key, value in caps.items():
        print(f"  {key}: {value}")
    print("status:")
    for key, value in status.items():
        print(f"  {key}: {value}")
    temperature = report["coil_temperature_c"]
    print(f"coil temperature: {'not reported' if temperature is None else f'{temperature} °C'}")


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        print(f"stimd probe: --timeout must be positive, got {args.timeout}", file=sys.stderr)
        return EXIT_USAGE
    try:
        driver = create_driver(args.driver, args.port, mains_voltage=args.mains,
                               unlock_code=args.unlock_code, coil=args.coil)
    except (UnknownDriver, InvalidSetting) as exc:
        print(f"stimd probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = asyncio.run(probe(driver, args.timeout))
    except TimeoutError:
        print(f"stimd probe: no complete answer from {args.driver} on {args.port} within"
              f" {args.timeout:g} s", file=sys.stderr)
        return EXIT_NO_ANSWER
    except DriverError as exc:
        print(f"stimd probe: {args.driver} on {args.port}: {exc.code}: {exc.reason}",
              file=sys.stderr)
        return EXIT_NO_ANSWER
    if args.json:
        print(json.dumps({"driver": args.driver, "port": args.port, **report}))
    else:
        _print_text(args.driver, args.port, report)
    return EXIT_OK
