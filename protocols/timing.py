"""A protocol's timing in the integer microseconds the device will actually run.

Validation checks these values and compilation lays out exactly these values, so what
was checked is what is fired. Every interval is rounded *up* to the microsecond
(rates round down), so rounding can never shorten a gap or raise a rate below or above
what was validated; it can lengthen a train by a few µs, and the checks see that too.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from protocols.exact import ceil_us, exact, period_us
from protocols.model import ProtocolSpec, RtmsParams, TbsParams


@dataclass(frozen=True, slots=True)
class ProtocolTiming:
    """One protocol's trains, all alike, in integer µs.

    A single-pulse protocol is ``pulses`` trains of one pulse each, ``interval_s`` apart.
    """

    trains: int
    pulses_per_train: int
    pulse_interval_us: int      # onset to onset of pulses (within a burst for TBS)
    burst_pulses: int           # 1 unless TBS
    bursts: int                 # bursts per train; == pulses_per_train unless TBS
    burst_interval_us: int      # onset to onset of bursts; == pulse_interval_us unless TBS
    iti_us: int | None          # last pulse of a train → first pulse of the next; None: 1 train
    nominal_frequency_hz: Fraction  # the written pulse rate (≥ the µs-rounded rate)

    @property
    def train_duration_us(self) -> int:
        """First pulse to last pulse of one train."""
        if self.burst_pulses == 1:
            return (self.pulses_per_train - 1) * self.pulse_interval_us
        return (self.bursts - 1) * self.burst_interval_us + (
            self.burst_pulses - 1
        ) * self.pulse_interval_us

    @property
    def train_period_us(self) -> int:
        """Onset to onset of consecutive trains."""
        return self.train_duration_us + (self.iti_us or 0)

    @property
    def total_pulses(self) -> int:
        return self.trains * self.pulses_per_train

    @property
    def session_duration_us(self) -> int:
        """First pulse of the first train to the last pulse of the last train."""
        return (self.trains - 1) * self.train_period_us + self.train_duration_us

    def train_onsets_us(self) -> tuple[int, ...]:
        """Onset of each train from the session start."""
        return tuple(k * self.train_period_us for k in range(self.trains))

def protocol_timing(protocol: ProtocolSpec) -> ProtocolTiming:
    """The µs timing of a well-formed protocol (see the module docstring on rounding)."""
    p = protocol.params
    if isinstance(p, RtmsParams):
        interval = period_us(exact(p.frequency_hz))
        return ProtocolTiming(
            trains=p.trains,
            pulses_per_train=p.pulses_per_train,
            pulse_interval_us=interval,
            burst_pulses=1,
            bursts=p.pulses_per_train,
            burst_interval_us=interval,
            iti_us=_iti(p.trains, p.inter_train_interval_s),
            nominal_frequency_hz=exact(p.frequency_hz),
        )
    if isinstance(p, TbsParams):
        return ProtocolTiming(
            trains=p.trains,
            pulses_per_train=p.pulses_per_burst * p.bursts_per_train,
            pulse_interval_us=period_us(exact(p.intra_burst_hz)),
            burst_pulses=p.pulses_per_burst,
            bursts=p.bursts_per_train,
            burst_interval_us=period_us(exact(p.burst_hz)),
            iti_us=_iti(p.trains, p.inter_train_interval_s),
            nominal_frequency_hz=exact(p.intra_burst_hz),
        )
    interval = ceil_us(exact(p.interval_s))
    return ProtocolTiming(
        trains=p.pulses,
        pulses_per_train=1,
        pulse_interval_us=interval,
        burst_pulses=1,
        bursts=1,
        burst_interval_us=interval,
        iti_us=interval if p.pulses > 1 else None,
        nominal_frequency_hz=1 / exact(p.interval_s),
    )


def _iti(trains: int, seconds: float | None) -> int | None:
    if trains == 1:
        return None
    if seconds is None:  # parse_protocol makes this impossible; never guess a gap
        raise ValueError("inter_train_interval_s is required when trains > 1")
    return ceil_us(exact(seconds))
