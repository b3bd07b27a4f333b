"""The driver registry: built-in names, options checked, plugins from entry points.

Plugins are real: a temporary ``*.dist-info`` directory with an ``entry_points.txt`` is
put on ``sys.path``, which is exactly how an installed distribution is discovered.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.errors import InvalidSetting
from drivers.magstim.driver import MagstimDriver
from drivers.magventure.driver import MagVentureDriver
from drivers.registry import (
    BUILTIN_NAMES,
    DriverRegistryError,
    UnknownDriver,
    create_driver,
    driver_names,
)

PLUGIN_MODULE = textwrap.dedent(
    '''
    from drivers.base import Stimulator

    class AcmeDriver(Stimulator):
        """A minimal third-party driver: only construction is exercised here."""

        def __init__(self, port, *, mains_voltage=None, unlock_code=None, coil=None,
                     **options):
            self.name = "acme-coil9"
            self.port = port
            self.options = options

        async def connect(self): raise NotImplementedError
        identity = property(lambda self: None)
        capabilities = property(lambda self: None)
        def on_fault(self, listener): pass
        async def set_intensity(self, pct_mso): pass
        async def configure_train(self, train): pass
        async def arm(self): pass
        async def fire_train(self): pass
        async def disarm(self): pass
        async def read_status(self): raise NotImplementedError
        async def close(self): pass

    def not_a_driver(port, **kwargs):
        return object()
    '''
)


def install_plugin(root: Path, dist: str, entries: dict[str, str]) -> None:
    """Write a distribution's metadata (and the plugin module) under ``root``."""
    (root / "acme_stim_plugin.py").write_text(PLUGIN_MODULE)
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[stimd.drivers]\n{lines}\n")


@pytest.fixture
def plugin_root(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("acme_stim_plugin", None)


def test_builtin_names_come_first_and_complete() -> None:
    assert driver_names()[: len(BUILTIN_NAMES)] == [
        "magstim-200", "magstim-bistim", "magstim-rapid2", "magstim-superrapid2",
        "magstim-superrapid2-plus1", "magventure-r30", "magventure-x100",
    ]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_each_builtin_creates_its_driver_without_touching_the_port(name: str) -> None:
    driver = create_driver(name, "/nonexistent/port", mains_voltage=240)
    assert driver.name == name
    assert driver.capabilities.model == name
    expected = MagVentureDriver if name.startswith("magventure") else MagstimDriver
    assert isinstance(driver, expected)


def test_unknown_name_lists_what_exists() -> None:
    with pytest.raises(
        UnknownDriver, match=r"no driver named 'magstim-9000'; available: magstim-200"
    ):
        create_driver("magstim-9000", "/dev/null")


def test_unknown_option_for_a_builtin_is_an_error() -> None:
    with pytest.raises(InvalidSetting, match=r"driver 'magstim-200' has no option\(s\) baud"):
        create_driver("magstim-200", "/dev/null", baud=115200)


def test_unlock_code_for_a_magventure_is_an_error() -> None:
    with pytest.raises(InvalidSetting, match="unlock_code: magventure-r30 has no unlock code"):
        create_driver("magventure-r30", "/dev/null", unlock_code="1234")


@pytest.mark.parametrize("mains", [None, 230, -240, 0])
def test_rapid_needs_a_known_mains_voltage(mains: int | None) -> None:
    with pytest.raises(InvalidSetting, match=rf"mains_voltage={mains!r}: .*240 or 115"):
        create_driver("magstim-rapid2", "/dev/null", mains_voltage=mains)


@pytest.mark.parametrize("code", ["", "x" * 33, "code\n", "kód", 1234])
def test_unlock_code_must_be_printable_ascii(code: object) -> None:
    with pytest.raises(InvalidSetting, match=r"unlock_code=.*: must be 1..32 printable ASCII"):
        create_driver("magstim-rapid2", "/dev/null", mains_voltage=240,
                      unlock_code=code)  # type: ignore[arg-type]


def test_plugin_driver_is_loaded_with_its_options(plugin_root: Path) -> None:
    install_plugin(plugin_root, "acme-stim", {"acme-coil9": "acme_stim_plugin:AcmeDriver"})
    assert driver_names()[-1] == "acme-coil9"
    driver = create_driver("acme-coil9", "/dev/ttyACME", baud=115200)
    assert type(driver).__name__ == "AcmeDriver"
    assert driver.options == {"baud": 115200}  # type: ignore[attr-defined]


def test_plugin_cannot_replace_a_builtin_name(plugin_root: Path) -> None:
    install_plugin(plugin_root, "evil-stim", {"magstim-rapid2": "acme_stim_plugin:AcmeDriver"})
    with pytest.raises(
        DriverRegistryError, match=r"registers the built-in driver name 'magstim-rapid2'"
    ):
        driver_names()
    with pytest.raises(DriverRegistryError, match="cannot replace a built-in driver"):
        create_driver("magstim-rapid2", "/dev/null", mains_voltage=240)


def test_plugin_factory_must_return_a_stimulator(plugin_root: Path) -> None:
    install_plugin(plugin_root, "acme-stim", {"acme-broken": "acme_stim_plugin:not_a_driver"})
    with pytest.raises(
        DriverRegistryError, match=r"returned object, not a drivers\.base\.Stimulator"
    ):
        create_driver("acme-broken", "/dev/null")
