"""``stimd demo``: the whole stack on this machine, one protocol, then everything stopped."""

from __future__ import annotations

import argparse
from typing import Any

from protocols.capabilities import DEVICE_MODELS
from stimd.demo import DEFAULT_DEVICE, DEFAULT_PROTOCOL, demo_main


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run a simulated device, broker and daemon through one short protocol",
        description="Start a private mosquitto, a simulated stimulator and the daemon, load "
        "and run a short protocol with stimctl, print the session record, clean up.",
    )
    parser.add_argument("--device", choices=DEVICE_MODELS, default=DEFAULT_DEVICE,
                        help=f"simulated device model (default {DEFAULT_DEVICE})")
    parser.add_argument("--protocol", default=DEFAULT_PROTOCOL,
                        help=f"library protocol to run (default {DEFAULT_PROTOCOL})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return demo_main(args.device, args.protocol)
