"""``stimd-sim``: serve one simulated stimulator on a pseudo-terminal.

Contract (scripts depend on it): creates a pty, makes ``--link`` a symlink to it,
prints exactly one line ``READY <link>`` on stdout once it accepts bytes, logs to
stderr, runs until SIGTERM or SIGINT and then removes the link and the control
socket. Bad arguments: a message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from protocols.capabilities import DEVICE_MODELS

from .app import ConfigError, Simulator, SimulatorConfig, parse_firmware
from .coils import COILS

log = logging.getLogger("simulator")

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stimd-sim",
        description="Simulated Magstim / MagVenture stimulator served on a pseudo-terminal.")
    parser.add_argument("--device", required=True, choices=DEVICE_MODELS,
                        help="device model to simulate")
    parser.add_argument("--link", required=True, type=Path,
                        help="path of the symlink to create, pointing at the pty")
    parser.add_argument("--mains", type=int, choices=(240, 115),
                        help="mains voltage in volts (Rapid frequency limits depend on it; "
                             "default 240 for Rapids)")
    parser.add_argument("--firmware", help="Rapid software version MAJOR.MINOR.PATCH "
                                           "(default 9.0.0)")
    parser.add_argument("--unlock-code", help="Rapid v9+ unlock code expected after 'Q'")
    parser.add_argument("--coil", choices=sorted(COILS), help="coil type plugged in")
    parser.add_argument("--pulse-log", type=Path,
                        help="JSON-lines ground-truth log of pulses and state changes")
    parser.add_argument("--control", type=Path, help="Unix socket for fault injection")
    parser.add_argument("--no-line-rate", dest="line_rate", action="store_false",
                        help="send and receive bytes without the baud-rate delay")
    parser.add_argument("--log-commands", action="store_true",
                        help="write a 'command' event for every received command "
                             "(disarm is always logged)")
    parser.add_argument("--parent-pid", type=int,
                        help="exit (cleanly) when this process is no longer our parent; "
                             "used by simulator.testing so no simulator outlives its test")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    firmware = parse_firmware(args.firmware) if args.firmware is not None else None
    return SimulatorConfig(
        device=args.device, link=args.link, mains=args.mains, firmware=firmware,
        unlock_code=args.unlock_code, coil=args.coil, pulse_log=args.pulse_log,
        control=args.control, line_rate=args.line_rate, log_commands=args.log_commands,
    )


async def serve(config: SimulatorConfig, parent_pid: int | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    simulator = Simulator(config)
    async with simulator.running():
        print(f"READY {config.link}", flush=True)
        log.info("simulating %s on %s (coil %s, line rate %s)", config.device, config.link,
                 config.coil_profile.name, "on" if config.line_rate else "off")
        while not stop.is_set():
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("parent %d is gone: stopping", parent_pid)
                break
            try:
                async with asyncio.timeout(0.5):
                    await stop.wait()
            except TimeoutError:
                pass
    log.info("stopped; link %s removed", config.link)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s stimd-sim[{os.getpid()}] %(name)s %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        parser.print_usage(sys.stderr)
        print(f"stimd-sim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    asyncio.run(serve(config, args.parent_pid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
