"""The compiled form of a validated protocol: what the daemon fires and records.

Everything is integer microseconds, onset to onset, so that a schedule compares,
hashes and records exactly; vendor units and semantics (MagVenture's last-pulse-to-
first-pulse ITI, Magstim's tenths of seconds) are converted by drivers only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TrainSpec:
    """One train as the device must deliver it.

    A conventional rTMS train has ``burst_pulses == 1`` and its pulses are
    ``pulse_interval_us`` apart. A theta-burst train is ``bursts`` bursts whose onsets
    are ``burst_interval_us`` apart, each of ``burst_pulses`` pulses
    ``pulse_interval_us`` apart. A single pulse is a train of one pulse.
    """

    index: int                 # 0-based position in the session
    onset_us: int              # planned onset of the first pulse, from the session start
    pulses: int                # total pulses in this train (bursts × burst_pulses)
    pulse_interval_us: int     # onset to onset of pulses (within a burst for TBS)
    burst_pulses: int          # 1 for conventional rTMS and single pulses
    bursts: int                # number of bursts; equals ``pulses`` when burst_pulses == 1
    burst_interval_us: int     # onset to onset of bursts; equals pulse_interval_us if not TBS
    intensity_pct_mso: int

    @property
    def duration_us(self) -> int:
        """First pulse to last pulse of the train."""
        if self.burst_pulses == 1:
            return (self.pulses - 1) * self.pulse_interval_us
        return (self.bursts - 1) * self.burst_interval_us + (
            self.burst_pulses - 1
        ) * self.pulse_interval_us

    @property
    def end_us(self) -> int:
        """Planned time of the last pulse, from the session start."""
        return self.onset_us + self.duration_us

    @property
    def frequency_hz(self) -> float:
        """Pulse rate within a train (within a burst for TBS)."""
        return 1_000_000 / self.pulse_interval_us


@dataclass(frozen=True, slots=True)
class PulseSchedule:
    """A whole session's trains, with totals and the digest of the canonical form.

    Only ``protocols.compile`` builds these, from a ``ValidatedPlan``.
    """

    protocol_name: str
    kind: str                  # "rtms" | "tbs" | "single"
    device_model: str
    intensity_pct_mso: int
    trains: tuple[TrainSpec, ...]
    total_pulses: int
    duration_us: int           # first pulse of the first train to last pulse of the last
    digest: str                # hex SHA-256 of the canonical form

    @property
    def duration_s(self) -> float:
        return self.duration_us / 1_000_000
