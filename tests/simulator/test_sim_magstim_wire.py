"""Golden bytes of the simulated Magstim dialect: every command, every model family,
version-dependent widths, error replies and client-tolerance rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_harness import wire

from drivers.magstim.codec import encode_command
from simulator.magstim_dialect import MagstimDialect

# Checksums published in the reference (shared/reference/magstim-serial-protocol.md).
REFERENCE_CHECKSUMS = {
    b"Q@": b"n", b"R@": b"m", b"J@": b"u", b"F@": b"y", b"EA": b"y", b"EB": b"x",
    b"EH": b"r", b"ND": b"m", b"\\@": b"c", b"x@": b"G", b"I@": b"v", b"o@": b"P",
    b"@050": b"*",
}

# Status 0x89 = standby | coil present | remote; 0x8A = armed | coil | remote;
# Rapid status 0x38 = single-pulse mode | HV supply | coil ready.
RAPID_V9_SESSION = [
    (b"R@m", b"R\x09\xa4"),                 # remote off: status after (no remote bit)
    (b"@050*", b"@Sl"),                      # not in remote control → S
    (b"EBx", b"ESg"),                        # arming needs remote control
    (b"Q@n", b"Q\x89%"),                    # remote on: status after the command
    (b"@050*", b"@\x896"),
    (b"@101-", b"@?\x80"),                   # above 100 % without enhanced power
    (b"@5x0\xe2", b"@?\x80"),                # not digits
    (b"B0100\xfc", b"B\x898\xfc"),           # 10.0 Hz
    (b"D00040\xc7", b"D\x898\xfa"),          # 40 pulses, 5 digits on v9
    (b"[0040\xe0", b"[\x898\xe3"),           # 4.0 s, 4 digits on v9
    # 24 bytes: power 050, freq 0100 (10 Hz), 00040 pulses, duration 0040 (4 s), wait 0005
    (b"\\@c", b"\\\x89005001000004000400005\x17"),
    (b"NDm", b"N\x899.0.0\x003"),
    (b"F@y", b"F\x89220000\x0c"),            # 22.0 °C coil 1, 000 coil 2
    (b"I@v", b"I\x89000\x9d"),
    (b"x@G", b"x\x890\x00\x00\xce"),
    (b"n0050\xcc", b"n\x890\xd8"),           # charge delay 50 ms, v9: 4 bytes
    (b"o@P", b"o\x890050B"),
    (b"^@a", b"^SN"),                        # enhanced power: not in rTMS mode
    (b"[0000\xe4", b"[\x890\xeb"),           # back to single-pulse mode
    (b"^@a", b"^\x898\xe0"),                 # enhanced power on (status before)
    (b"_@`", b"_\x899\xde"),                 # off again: enhanced bit was set before
    (b"J@u", b"?"),                          # a Rapid has no J command
    (b"Zz", b"?"),                           # unknown command: a single '?'
    (b"EBx", b"E\x891"),                     # arm: status before (standby)
    (b"EBx", b"ESg"),                        # arm while armed
    (b"EHr", b"ESg"),                        # fire while still charging
    (b"EAy", b"E\x8a0"),                     # disarm: status before (armed)
    (b"EXb", b"E?{"),
    (b"Q@\x00", b"?"),                       # bad checksum: '?'
    (b"b@]", b"b\x89\x14"),
    (b"R@m", b"R\x09\xa4"),
]


@pytest.mark.parametrize(("body", "crc"), sorted(REFERENCE_CHECKSUMS.items()))
def test_reference_checksums(body: bytes, crc: bytes) -> None:
    assert encode_command(body[:1], body[1:]) == body + crc


async def test_rapid_v9_every_command_golden() -> None:
    async with wire("magstim-rapid2") as w:
        for sent, expected in RAPID_V9_SESSION:
            assert w.exchange(sent) == expected, f"reply to {sent!r}"


@pytest.mark.parametrize(("firmware", "parameters", "version"), [
    ((6, 0, 0), b"\\\x89800000100001000005\xab", b"N\x896.0.0\x006"),
    ((7, 2, 0), b"\\\x898000001000010000005{", b"N\x897.2.0\x003"),
    ((8, 0, 0), b"\\\x898000001000010000005{", b"N\x898.0.0\x004"),
    ((10, 0, 0), b"\\\x89800000100000100000005\x1b", b"N\x8910.0.0\x00\x0b"),
])
async def test_rapid_parameter_widths_by_version(
    firmware: tuple[int, int, int], parameters: bytes, version: bytes,
) -> None:
    async with wire("magstim-superrapid2-plus1", firmware=firmware) as w:
        w.exchange(b"Q@n")
        reply = w.exchange(b"\\@c")
        assert reply == parameters
        assert len(reply) == {6: 21, 7: 22, 8: 22, 10: 24}[firmware[0]]
        assert w.exchange(b"NDm") == version


async def test_rapid_v8_uses_four_digit_pulses_and_three_digit_duration() -> None:
    async with wire("magstim-rapid2", firmware=(8, 0, 0)) as w:
        w.exchange(b"Q@n")
        assert w.exchange(b"D0040\xf7") == b"D\x898\xfa"
        assert w.exchange(b"[040\x10") == b"[\x898\xe3"
        assert w.exchange(b"x@G") == b"?"   # system status is v9+
        assert w.exchange(b"o@P") == b"?"


async def test_rapid_v10_charge_delay_and_system_status_widths() -> None:
    async with wire("magstim-superrapid2-plus1", firmware=(10, 0, 0)) as w:
        w.exchange(b"Q@n")
        assert w.exchange(b"x@G") == b"x\x898\x00\x01\xc5"   # Plus1 module detected
        assert w.exchange(b"n00050\x9c") == b"n\x898\x00\x05\xcb"
        assert w.exchange(b"o@P") == b"o\x8900050\x12"


@pytest.mark.parametrize("model", ["magstim-200", "magstim-bistim"])
async def test_single_pulse_units_golden(model: str) -> None:
    bistim = model == "magstim-bistim"
    async with wire(model) as w:
        assert w.exchange(b"Q@n") == b"Q\x89%"
        assert w.exchange(b"@042)") == b"@\x896"
        assert w.exchange(b"A033(") == (b"A\x895" if bistim else b"?")
        assert w.exchange(b"C010+") == (b"C\x893" if bistim else b"?")
        assert w.exchange(b"J@u") == (
            b"J\x89042033010o" if bistim else b"J\x89042000000v")
        assert w.exchange(b"Y@f") == (b"Y\x89\x1d" if bistim else b"?")
        assert w.exchange(b"Z@e") == (b"Z\x89\x1c" if bistim else b"?")
        assert w.exchange(b"F@y") == b"F\x89220000\x0c"
        assert w.exchange(b"NDm") == b"?"       # no version query
        assert w.exchange(b"\\@c") == b"?"      # no Rapid parameters


async def test_unlock_code_is_required_when_configured() -> None:
    async with wire("magstim-rapid2", unlock_code="1234-12345678-ab") as w:
        assert w.exchange(b"Q@n") == b"Q?o"
        assert w.exchange(encode_command(b"Q", b"1234-12345678-ac")) == b"Q?o"
        assert not w.core.remote
        assert w.exchange(encode_command(b"Q", b"1234-12345678-ab")) == b"Q\x89%"
        assert w.core.remote
        assert w.exchange(b"x@G") == b"x\x898\x00\x00\xc6"


async def test_stray_nul_after_a_command_is_ignored() -> None:
    async with wire("magstim-rapid2") as w:
        assert w.exchange(b"Q@n\x00") == b"Q\x89%"   # MagPy's poke()
        assert w.exchange(b"\x00\x00F@y") == b"F\x89220000\x0c"


async def test_two_commands_in_one_write_get_two_replies() -> None:
    async with wire("magstim-rapid2") as w:
        assert w.exchange(b"Q@nF@y") == b"Q\x89%" + b"F\x89220000\x0c"


async def test_enhanced_power_allows_110_and_refuses_change_when_armed() -> None:
    async with wire("magstim-rapid2") as w:
        w.exchange(b"Q@n")
        assert w.exchange(encode_command(b"@", b"110")) == b"@?\x80"
        w.exchange(b"^@a")
        assert w.exchange(encode_command(b"@", b"110"))[1] == 0x89
        w.exchange(b"EBx")
        assert w.exchange(b"_@`") == b"_SM"     # only in standby


async def test_frequency_above_the_rapid_table_is_refused() -> None:
    async with wire("magstim-rapid2") as w:
        w.exchange(b"Q@n")
        w.exchange(encode_command(b"@", b"100"))
        assert isinstance(w.dialect, MagstimDialect) and w.dialect.energy is not None
        limit = w.dialect.energy.max_frequency_hz(100)   # the Rapid table at 100 %
        above = int(limit * 10) + 1
        assert w.exchange(encode_command(b"B", f"{above:04d}".encode())) == b"B?\x7e"
        at = int(limit * 10)
        assert w.exchange(encode_command(b"B", f"{at:04d}".encode()))[1] == 0x89


STATUS_FORBIDDEN = {0x3F, 0x53}


@settings(max_examples=200, deadline=None)
@given(armed=st.booleans(), charged=st.booleans(), coil=st.booleans(), hot=st.booleans(),
       error=st.booleans(), remote=st.booleans(), train=st.booleans(), waiting=st.booleans())
async def test_status_byte_never_reads_as_an_error(
    *, armed: bool, charged: bool, coil: bool, hot: bool, error: bool, remote: bool,
    train: bool, waiting: bool,
) -> None:
    async with wire("magstim-rapid2") as w:
        core = w.core
        core.armed, core.charged, core.coil_present = armed, charged and armed, coil
        core.remote, core.train_running, core.waiting = remote, train, waiting
        core.error_code = "E01" if error else None
        if hot:
            core.coil_overtemp_pin_c = 45.0
        assert isinstance(w.dialect, MagstimDialect)
        assert w.dialect.instrument_status() not in STATUS_FORBIDDEN
        for command in (b"F@y", b"\\@c", b"I@v", b"NDm"):
            reply = w.exchange(command)
            assert reply[1] not in STATUS_FORBIDDEN, f"{command!r} → {reply!r}"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=12))
async def test_any_input_gets_a_bounded_answer(raw: bytes) -> None:
    """Garbage never crashes the unit and never produces more than one reply per byte."""
    async with wire("magstim-rapid2") as w:
        reply = w.exchange(raw)
        assert len(reply) <= 24 * len(raw)
