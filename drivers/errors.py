"""Typed driver errors: the daemon's safety supervisor trips on each of them."""

from __future__ import annotations

from enum import StrEnum


class DriverError(Exception):
    """Base of every error a driver raises; ``reason`` is what the technician sees."""

    code = "DRIVER_ERROR"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkLost(DriverError):
    """The port went away (unplugged, pty closed, socket reset)."""

    code = "LINK_LOST"


class DeviceTimeout(DriverError):
    """No complete reply within the bound for that request."""

    code = "DEVICE_TIMEOUT"


class FramingError(DriverError):
    """A reply with a bad checksum, CRC, length or echo."""

    code = "FRAMING_ERROR"


class DeviceRejected(DriverError):
    """The device refused a command; ``reason`` carries the device's own answer."""

    code = "DEVICE_REJECTED"


class DeviceCondition(StrEnum):
    """What a ``DeviceFault`` found, machine-readable, so a trip names the real cause
    ("coil removed") whichever exchange happened to see it first."""

    DEVICE_ERROR = "device_error"
    DEVICE_DISARMED = "device_disarmed"
    COIL_NOT_PRESENT = "coil_not_present"
    COIL_OVER_TEMPERATURE = "coil_over_temperature"


class DeviceFault(DriverError):
    """The device reports an error condition; ``condition`` says which."""

    code = "DEVICE_FAULT"

    def __init__(
        self, reason: str, condition: DeviceCondition = DeviceCondition.DEVICE_ERROR
    ) -> None:
        super().__init__(reason)
        self.condition = condition


class KeepAliveGap(DriverError):
    """The keep-alive was late enough to risk the device's own remote-control timeout."""

    code = "KEEPALIVE_GAP"


class IdentityMismatch(DriverError):
    """The device that answered is not the one the configuration says is attached."""

    code = "IDENTITY_MISMATCH"


class InvalidSetting(DriverError, ValueError):
    """A value the driver refuses before sending it: out of the device's range, of the
    wrong type, or not exactly representable in the device's units (never rounded)."""

    code = "INVALID_SETTING"


class ReadbackMismatch(DriverError):
    """The device reports parameters other than those the driver set; arming is refused."""

    code = "READBACK_MISMATCH"
