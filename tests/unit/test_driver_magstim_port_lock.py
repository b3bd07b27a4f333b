"""The Magstim port lock: one holder, the disarm first, nobody interrupted."""

from __future__ import annotations

import asyncio

from drivers.magstim.link import PortLock


async def _take(lock: PortLock, name: str, order: list[str], *, urgent: bool = False) -> None:
    async with lock.hold(urgent=urgent):
        order.append(name)
        await asyncio.sleep(0)


async def test_an_urgent_request_goes_before_every_waiting_one_but_after_the_holder() -> None:
    lock, order = PortLock(), []
    release = asyncio.Event()

    async def holder() -> None:
        async with lock.hold():
            order.append("holder")
            await release.wait()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(holder())
        await asyncio.sleep(0)
        tg.create_task(_take(lock, "poll", order))
        tg.create_task(_take(lock, "keep-alive", order))
        await asyncio.sleep(0)
        tg.create_task(_take(lock, "disarm", order, urgent=True))
        await asyncio.sleep(0)
        release.set()
    assert order == ["holder", "disarm", "poll", "keep-alive"]
    assert not lock.locked


async def test_a_cancelled_waiter_passes_the_port_on() -> None:
    lock, order = PortLock(), []
    release = asyncio.Event()

    async def holder() -> None:
        async with lock.hold():
            await release.wait()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(holder())
        await asyncio.sleep(0)
        doomed = tg.create_task(_take(lock, "cancelled", order, urgent=True))
        tg.create_task(_take(lock, "next", order))
        await asyncio.sleep(0)
        release.set()
        await asyncio.sleep(0)   # the port is granted to the doomed waiter ...
        doomed.cancel()          # ... which is cancelled before it runs
    assert order == ["next"]
    assert not lock.locked
