"""Golden bytes of the simulated MagVenture dialect and the rules third-party
clients rely on: exact reply lengths, no 0xFF inside a frame, silence when idle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_harness import wire

from drivers.magventure.codec import END, burst_ipi_index, crc8, encode_frame
from simulator.magventure_dialect import MagVentureDialect


def frames_of(data: bytes) -> list[bytes]:
    """Split at 0xFF like the strictest clients do."""
    return [part + b"\xff" for part in data.split(b"\xff")[:-1]]


async def test_status_frames_golden() -> None:
    async with wire("magventure-x100") as w:
        # S = 0x24: model X100 (1 << 5) | Biphasic (1 << 2); serial 02 46 8A; 22 °C;
        # coil 0x48 (Cool-B65, simulator's code); amplitude A 0, B 0
        assert w.exchange(encode_frame(b"\x00")) == bytes.fromhex(
            "fe 09 00 24 02 46 8a 16 48 00 00 53 ff")
        assert w.exchange(encode_frame(b"\x05")) == bytes.fromhex(
            "fe 0f 05 24 02 46 8a 16 48 00 00 00 00 64 64 01 00 a4 ff")


async def test_r30_status_carries_its_own_serial_and_model() -> None:
    async with wire("magventure-r30", coil="mcf-b65") as w:
        reply = w.exchange(encode_frame(b"\x00"))
        assert len(reply) == 13
        assert reply[3] == 0x04            # model R30 (0), Standard, Biphasic, disabled
        assert reply[4:7] == bytes([0x01, 0x23, 0x45])
        assert reply[8] == 60              # MCF-B65


async def test_commands_answered_with_eight_byte_reports_golden() -> None:
    async with wire("magventure-x100") as w:
        assert w.exchange(encode_frame(b"\x01\x32")) == bytes.fromhex(
            "fe 04 01 32 00 24 5c ff")                       # amplitude 50 %
        assert w.exchange(encode_frame(b"\x01\x65")) == bytes.fromhex(
            "fe 04 01 32 00 24 5c ff")                       # 101 %: refused, unchanged
        assert w.exchange(encode_frame(b"\x02\x01")) == bytes.fromhex(
            "fe 04 01 32 00 34 c1 ff")                       # enabled bit set
        assert w.exchange(encode_frame(b"\x03\x01")) == bytes.fromhex(
            "fe 04 01 32 00 34 c1 ff")                       # still charging: no pulse
        assert w.exchange(encode_frame(bytes.fromhex("06 00 64 00 28 00 4b 00 1a"))) == \
            bytes.fromhex("fe 04 08 02 00 34 8c ff")         # 10 pps, 40 × 75, ITI 2.6 s
        assert isinstance(w.dialect, MagVentureDialect)
        assert (w.dialect.rate_tenths_pps, w.dialect.pulses_per_train, w.dialect.trains,
                w.dialect.iti_tenths_s) == (100, 40, 75, 26)
        assert w.exchange(encode_frame(b"\x07\x01\x00")) == bytes.fromhex(
            "fe 04 08 01 00 34 68 ff")                       # page Main
        assert w.exchange(encode_frame(b"\x02\x00")) == bytes.fromhex(
            "fe 04 01 32 00 24 5c ff")                       # disabled


async def test_mode_get_and_set_golden() -> None:
    async with wire("magventure-x100") as w:
        get = encode_frame(b"\x09\x00" + bytes(9))
        # model 1, Standard, Normal, Biphasic, burst index 3 (2 pulses), IPI index 80
        # (20 ms), B/A index 80 (ratio 1.0)
        assert w.exchange(get) == bytes.fromhex("fe 0a 09 00 01 00 00 01 03 50 00 50 4e ff")
        # Biphasic Burst, 3 pulses (index 2), IPI 20 ms (200 tenths), ratio 1.00
        set_tbs = encode_frame(bytes.fromhex("09 01 01 00 00 03 02 00 c8 00 64"))
        reply = w.exchange(set_tbs)
        assert len(reply) == 14
        assert reply[7:9] == b"\x03\x02"
        assert isinstance(w.dialect, MagVentureDialect)
        assert (w.dialect.waveform, w.dialect.burst_pulses) == (3, 3)


@pytest.mark.parametrize(("tenths_ms", "index"), [
    (1000, 0), (200, 80), (100, 100), (150, 90), (5, 195), (95, 105), (205, None), (4, None),
])
def test_burst_ipi_index_follows_the_magpro_steps(tenths_ms: int, index: int | None) -> None:
    assert burst_ipi_index(tenths_ms) == index


async def test_idle_unit_is_silent_and_bad_frames_are_ignored() -> None:
    async with wire("magventure-r30") as w:
        assert w.exchange(b"") == b""
        bad_crc = b"\xfe\x01\x00\x01\xff"
        assert w.exchange(bad_crc) == b""
        assert w.exchange(b"\x12\x34" + encode_frame(b"\x00"))[:3] == b"\xfe\x09\x00"
        assert w.exchange(encode_frame(b"\x0b")) == b""       # unknown command: ignored


async def test_theta_burst_sequence_timing_is_vendor_semantics() -> None:
    async with wire("magventure-x100") as w:
        assert isinstance(w.dialect, MagVentureDialect)
        w.exchange(encode_frame(bytes.fromhex("09 01 01 00 00 03 02 00 c8 00 64")))
        # 5 bursts/s, 10 bursts per train, 2 trains, ITI 8 s (last pulse → first pulse)
        w.exchange(encode_frame(bytes.fromhex("06 00 32 00 0a 00 02 00 50")))
        onsets, trains = w.dialect.train_onsets()
        assert len(onsets) == 60 and trains.count(0) == 30
        assert onsets[:4] == pytest.approx([0.0, 0.02, 0.04, 0.2])
        last_of_first = onsets[29]
        assert last_of_first == pytest.approx(9 * 0.2 + 0.04)
        assert onsets[30] == pytest.approx(last_of_first + 8.0)


@settings(max_examples=300, deadline=None)
@given(amp_a=st.integers(0, 100), temp=st.floats(0, 120), enabled=st.booleans(),
       waveform=st.integers(0, 3), model=st.sampled_from(["magventure-r30",
                                                          "magventure-x100"]))
async def test_no_0xff_inside_any_frame(
    amp_a: int, temp: float, enabled: bool, waveform: int, model: str,
) -> None:
    async with wire(model) as w:
        assert isinstance(w.dialect, MagVentureDialect)
        w.core.power_a = amp_a
        w.core.armed = enabled
        w.core.thermal.set_temperature(0.0, temp)
        w.dialect.waveform = waveform
        for frame in (w.dialect.status_frame(0x00), w.dialect.status_frame(0x05),
                      w.dialect.amplitude_report(), w.dialect.temperature_report(),
                      w.dialect.page_report(), w.dialect.didt_report(), w.dialect.mode_frame()):
            assert END not in frame[:-1], frame.hex(" ")
            assert frame[-2] == crc8(frame[2:-2])
        assert frames_of(w.dialect.status_frame(0x00)) == [w.dialect.status_frame(0x00)]
