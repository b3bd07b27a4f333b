"""Golden bytes for unit rules the public client toolboxes document (MagPy 1.4's
``magstim.py`` notes, MAGIC's ``rapid.m``), found while testing MagPy against the
simulator (tests/compat). Status 0x89 = standby | coil present | remote."""

from __future__ import annotations

import pytest
from sim_harness import wire

from drivers.magstim.codec import encode_command


@pytest.mark.parametrize("phase", ["train_running", "waiting"])
async def test_rapid_train_settings_are_frozen_during_a_train_and_its_wait(phase: str) -> None:
    async with wire("magstim-rapid2") as w:
        w.exchange(b"Q@n")
        w.exchange(b"[0010\xe3")                         # rTMS mode, 1.0 s
        setattr(w.core, phase, True)
        assert w.exchange(b"B0050\xf8") == b"BSj"         # frequency
        assert w.exchange(b"D00010\xca") == b"DSh"        # pulses
        assert w.exchange(b"[0000\xe4") == b"[SQ"         # duration / single-pulse mode
        setattr(w.core, phase, False)
        assert w.exchange(b"B0050\xf8") == b"B\x890\x04"  # accepted once it is over


async def test_rapid_power_may_change_during_the_post_train_wait() -> None:
    async with wire("magstim-rapid2") as w:
        w.exchange(b"Q@n")
        w.core.waiting = True
        assert w.exchange(b"@050*") == b"@\x896"
        assert w.core.power_a == 50


async def test_rapid_enhanced_power_only_from_single_pulse_mode() -> None:
    async with wire("magstim-rapid2") as w:
        w.exchange(b"Q@n")
        w.exchange(b"[0010\xe3")                         # rTMS mode
        assert w.exchange(b"^@a") == b"^SN"
        assert not w.core.enhanced
        w.exchange(b"[0000\xe4")                         # back to single-pulse mode
        assert w.exchange(b"^@a") == b"^\x898\xe0"
        assert w.core.enhanced


async def test_rapid_leaving_enhanced_power_brings_110_down_to_100() -> None:
    async with wire("magstim-rapid2") as w:
        w.exchange(b"Q@n")
        w.exchange(b"^@a")
        assert w.exchange(encode_command(b"@", b"110")) == b"@\x896"
        assert w.exchange(b"_@`") == b"_\x899\xde"       # status before: enhanced bit set
        assert (w.core.enhanced, w.core.power_a) == (False, 100)


async def test_rapid_v9_charge_delay_is_at_most_two_seconds() -> None:
    async with wire("magstim-rapid2", firmware=(9, 0, 0)) as w:
        w.exchange(b"Q@n")
        assert w.exchange(b"n2000\xcf") == b"n\x898\xd0"
        assert w.exchange(b"n2001\xce") == b"n?R"


async def test_bistim_resolution_change_resets_the_interval_and_needs_standby() -> None:
    async with wire("magstim-bistim") as w:
        w.exchange(b"Q@n")
        w.exchange(b"C250%")                              # 250 ms
        assert w.exchange(b"Y@f") == b"Y\x89\x1d"
        assert w.exchange(b"J@u") == b"J\x89000000010{"   # 10 × 0.1 ms = 1 ms
        w.exchange(b"C025%")                              # 2.5 ms
        assert w.exchange(b"Y@f") == b"Y\x89\x1d"         # no change of mode: kept
        assert w.exchange(b"J@u") == b"J\x89000000025u"
        assert w.exchange(b"Z@e") == b"Z\x89\x1c"
        assert w.exchange(b"J@u") == b"J\x89000000010{"   # 10 ms
        w.exchange(b"EBx")
        assert w.exchange(b"Y@f") == b"YSS"               # not while armed
        assert w.exchange(b"Z@e") == b"ZSR"
        assert not w.dialect.high_resolution  # type: ignore[union-attr]
