"""Drivers by name: the built-ins and third-party plugins (entry-point group ``stimd.drivers``).

A plugin's entry point names a callable — usually its ``Stimulator`` subclass — called
as ``factory(port, mains_voltage=..., unlock_code=..., coil=..., **options)``. A plugin
that claims a built-in name, or a name another plugin already claims, is an error and
no driver is created under that name: the daemon must never drive a unit with code
other than the one its configuration names.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from protocols.capabilities import MAGSTIM_MODELS, MAGVENTURE_MODELS

from .base import Stimulator
from .errors import InvalidSetting
from .magstim.driver import MagstimDriver
from .magventure.driver import MagVentureDriver

ENTRY_POINT_GROUP = "stimd.drivers"
BUILTIN_NAMES: tuple[str, ...] = MAGSTIM_MODELS + MAGVENTURE_MODELS


class UnknownDriver(LookupError):
    """No built-in or plugin driver has this name."""


class DriverRegistryError(RuntimeError):
    """The installed plugins are inconsistent (a name claimed twice, a bad factory)."""


def _plugin_entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in BUILTIN_NAMES:
            raise DriverRegistryError(
                f"plugin {entry.value!r} ({_distribution(entry)}) registers the built-in"
                f" driver name {entry.name!r}; a plugin cannot replace a built-in driver"
            )
        previous = found.get(entry.name)
        if previous is not None and previous.value != entry.value:
            raise DriverRegistryError(
                f"driver name {entry.name!r} is registered twice: {previous.value!r}"
                f" ({_distribution(previous)}) and {entry.value!r} ({_distribution(entry)})"
            )
        found[entry.name] = entry
    return found


def _distribution(entry: EntryPoint) -> str:
    dist = entry.dist
    if dist is None:
        return "unknown distribution"
    return f"distribution {dist.name} {dist.version}"


def driver_names() -> list[str]:
    """Every name ``create_driver`` accepts, built-ins first."""
    return list(BUILTIN_NAMES) + sorted(_plugin_entry_points())


def create_driver(
    name: str,
    port: str,
    *,
    mains_voltage: int | None = None,
    unlock_code: str | None = None,
    coil: str | None = None,
    **options: Any,
) -> Stimulator:
    """A driver for the unit ``name`` on ``port`` (device path, pty link or pyserial URL).

    Built-in drivers take no extra ``options``; an unknown option is an error, not ignored.
    The installed plugins are checked first, so a plugin claiming a built-in name stops
    every driver from being created rather than being ignored.
    """
    plugins = _plugin_entry_points()
    if name in BUILTIN_NAMES:
        if options:
            raise InvalidSetting(
                f"driver {name!r} has no option(s) {', '.join(sorted(options))}"
            )
        if name in MAGSTIM_MODELS:
            return MagstimDriver(
                name, port, mains_voltage=mains_voltage, unlock_code=unlock_code, coil=coil
            )
        if unlock_code is not None:
            raise InvalidSetting(f"unlock_code: {name} has no unlock code (Magstim Rapid only)")
        return MagVentureDriver(name, port, mains_voltage=mains_voltage, coil=coil)
    entry = plugins.get(name)
    if entry is None:
        raise UnknownDriver(
            f"no driver named {name!r}; available: {', '.join(driver_names())}"
        )
    factory: Callable[..., object] = entry.load()
    driver = factory(
        port, mains_voltage=mains_voltage, unlock_code=unlock_code, coil=coil, **options
    )
    if not isinstance(driver, Stimulator):
        raise DriverRegistryError(
            f"plugin {entry.value!r} for {name!r} returned {type(driver).__name__},"
            " not a drivers.base.Stimulator"
        )
    return driver
