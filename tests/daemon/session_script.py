"""``python -m daemon.session_script CONFIG``: the daemon of ``stimd run`` plus an operator.

The signal tests need a session running inside a real daemon process without a broker:
this runs ``run_daemon`` (the same composition root ``stimd run`` uses, with its signal
handling, record and watchdog) next to a task that loads and starts the short protocol,
and prints ``RUNNING <session id>`` once the session runs.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from daemon.conftest import OPERATOR, SHORT_PROTOCOL, eventually
from stimd.commands import LoadCommand, MotorThresholdPayload, PlainCommand, Verb
from stimd.config import load_config
from stimd.controller import SessionController
from stimd.daemon import build_driver_factory, run_daemon
from stimd.instance_lock import InstanceLock
from stimd.logging_setup import configure_logging
from stimd.record import SessionRecord
from stimd.sdnotify import SystemdNotifier


async def operate(controller: SessionController) -> None:
    await eventually(lambda: controller.state.value == "IDLE", 60.0)
    mt = MotorThresholdPayload(pct_mso=50, method="emg", measured_at=datetime.now(UTC))
    load = LoadCommand(id="load-1", protocol=SHORT_PROTOCOL, motor_threshold=mt,
                       patient_ref="patient-0001")
    loaded = await controller.execute(OPERATOR, load, Verb.LOAD)
    started = await controller.execute(OPERATOR, PlainCommand(id="start-1"), Verb.START)
    if not (loaded.ok and started.ok and started.result):
        print(f"FAILED {loaded.error} {started.error}", flush=True)
        return
    print(f"RUNNING {started.result['session_id']}", flush=True)


async def main(config_path: Path) -> int:
    config = load_config(config_path)
    with InstanceLock(Path(config.storage.state_dir), config.device.id), \
            SessionRecord.open(Path(config.storage.state_dir)) as record:
        record.recover_interrupted()
        controller = SessionController(
            config=config, driver_factory=build_driver_factory(config), record=record
        )
        async with asyncio.TaskGroup() as tg:
            daemon = tg.create_task(
                run_daemon(config, record, SystemdNotifier(), controller=controller)
            )
            tg.create_task(operate(controller))
        return daemon.result()


if __name__ == "__main__":
    configure_logging(json=True, level="info")
    sys.exit(asyncio.run(main(Path(sys.argv[1]))))
