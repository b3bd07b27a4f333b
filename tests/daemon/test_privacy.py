"""Dashboards never receive a patient reference: not in ``state``, not in any event.

Every event the controller emits goes to the MQTT ``evt/*`` topics or (``state_changed``)
to the retained ``state`` topic, both readable by every dashboard. Only the session
record and the reply to the operator who loaded the plan may carry the reference.
"""

from __future__ import annotations

import json

from daemon.conftest import Rig
from stimd.commands import Verb

# distinctive, so that a substring search cannot hit anything else by accident
PATIENT = "PX-7731-QZ"


async def test_state_and_events_of_a_full_session_carry_no_patient_reference(
    rig: Rig,
) -> None:
    loaded = await rig.load(patient_ref=PATIENT)
    assert loaded.ok, loaded.error
    assert loaded.result is not None and loaded.result["patient_ref"] == PATIENT  # its reply
    started = await rig.command(Verb.START)
    assert started.ok and started.result is not None, started.error
    await rig.sim.await_event("pulse", 1)
    assert (await rig.command(Verb.PAUSE)).ok               # session_paused
    await rig.wait_state("PAUSED")
    assert (await rig.command(Verb.RESUME)).ok
    assert await rig.wait_state("COMPLETED", "FAULT") == "COMPLETED"
    resync = await rig.command(Verb.RESYNC)                  # returns the snapshot

    published = [json.dumps({"type": e.type, "payload": e.payload}) for e in rig.events]
    kinds = {e.type for e in rig.events}
    assert {"state_changed", "command", "train_started", "train_completed", "session_paused",
            "session_completed"} <= kinds
    leaks = [text for text in published if PATIENT in text]
    assert leaks == []
    assert PATIENT not in json.dumps(rig.controller.snapshot())
    assert PATIENT not in json.dumps(resync.result)
    # the record keeps it: the daily budget and the history need it
    session = rig.record.session(started.result["session_id"])
    assert session["patient_ref"] == PATIENT
