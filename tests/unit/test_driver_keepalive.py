"""The keep-alive task on its own: renewal period, watchdog, failure reporting."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.errors import DeviceTimeout, DriverError, KeepAliveGap, LinkLost
from drivers.keepalive import KeepAlive, KeepAlivePolicy

FAST = KeepAlivePolicy(armed_period_s=0.05, idle_period_s=0.2, gap_limit_s=0.15)


class Device:
    """Stands in for the link: records renewals, can fail or hang."""

    def __init__(self) -> None:
        self.renewed_at = time.monotonic()
        self.renewals: list[float] = []
        self.armed = False
        self.fail_with: DriverError | None = None
        self.hang = False
        self.reports: list[DriverError] = []

    async def renew(self) -> None:
        if self.hang:
            await asyncio.sleep(10)
        if self.fail_with is not None:
            raise self.fail_with
        self.renewed_at = time.monotonic()
        self.renewals.append(self.renewed_at)

    def keepalive(self) -> KeepAlive:
        return KeepAlive(
            name="test unit", policy=FAST, renew=self.renew,
            last_renewal=lambda: self.renewed_at, may_be_armed=lambda: self.armed,
            report=self.reports.append,
        )


async def test_renews_faster_while_armed() -> None:
    device = Device()
    keepalive = device.keepalive()
    keepalive.start()
    try:
        await asyncio.sleep(0.5)
        idle = len(device.renewals)
        device.armed = True
        keepalive.nudge()
        await asyncio.sleep(0.5)
        armed = len(device.renewals) - idle
    finally:
        await keepalive.stop()
    assert 1 <= idle <= 3           # 0.5 s at a 0.2 s period
    assert armed > idle             # 0.5 s at a 0.05 s period: about 10
    assert device.reports == []
    assert not keepalive.running


async def test_failed_renewal_is_reported_and_retried() -> None:
    device = Device()
    device.armed = True
    device.fail_with = DeviceTimeout("no reply")
    keepalive = device.keepalive()
    keepalive.start()
    await asyncio.sleep(0.3)
    await keepalive.stop()
    timeouts = [r for r in device.reports if isinstance(r, DeviceTimeout)]
    assert len(timeouts) >= 2
    assert any(isinstance(r, KeepAliveGap) for r in device.reports)


async def test_link_loss_ends_the_renewals() -> None:
    device = Device()
    device.fail_with = LinkLost("gone")
    keepalive = device.keepalive()
    keepalive.start()
    await asyncio.sleep(0.5)
    assert [type(r) for r in device.reports] == [LinkLost]
    await keepalive.stop()


async def test_watchdog_sees_a_hung_renewal_while_armed() -> None:
    device = Device()
    device.armed = True
    device.hang = True
    keepalive = device.keepalive()
    keepalive.start()
    await asyncio.sleep(0.4)
    await keepalive.stop()
    gaps = [r for r in device.reports if isinstance(r, KeepAliveGap)]
    assert len(gaps) == 1  # one report per gap, not one per watchdog tick
    assert "limit 0.15 s" in gaps[0].reason


async def test_a_crashed_keepalive_is_reported() -> None:
    device = Device()
    device.fail_with = None

    async def broken() -> None:
        raise RuntimeError("bug in renew")

    keepalive = KeepAlive(
        name="test unit", policy=FAST, renew=broken, last_renewal=lambda: 0.0,
        may_be_armed=lambda: False, report=device.reports.append,
    )
    keepalive.start()
    await asyncio.sleep(0.1)
    assert [type(r) for r in device.reports] == [KeepAliveGap]
    assert "stopped: " in device.reports[0].reason
    assert not keepalive.running
    await keepalive.stop()


async def test_a_caller_cancelled_while_stopping_stays_cancelled() -> None:
    """A renewal can take a while to unwind (a command is always written whole); the
    task that stops the keep-alive and is itself cancelled meanwhile must not carry on
    as if nothing happened."""
    device = Device()
    unwinding = asyncio.Event()

    async def slow_to_unwind() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            unwinding.set()
            await asyncio.sleep(0.2)

    keepalive = KeepAlive(
        name="test unit", policy=FAST, renew=slow_to_unwind, last_renewal=lambda: 0.0,
        may_be_armed=lambda: False, report=device.reports.append,
    )
    keepalive.start()
    await asyncio.sleep(0.05)  # the renewal is under way
    stopping = asyncio.create_task(keepalive.stop())
    await unwinding.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert stopping.cancelled()
    await keepalive.stop()
    assert not keepalive.running


@pytest.mark.parametrize(("armed", "idle", "gap"), [(0.0, 1.0, 0.75), (0.8, 1.0, 0.75),
                                                    (0.4, 0.2, 0.75)])
def test_policy_rejects_inconsistent_periods(armed: float, idle: float, gap: float) -> None:
    with pytest.raises(ValueError, match="period"):
        KeepAlivePolicy(armed_period_s=armed, idle_period_s=idle, gap_limit_s=gap)
