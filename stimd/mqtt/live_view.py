"""Text renderings of the device topics for a technician's terminal (``stimctl``)."""

from __future__ import annotations

from typing import Any

BAR_WIDTH = 30
#: Session states after which a followed session is over.
FINAL_STATES = frozenset({"COMPLETED", "ABORTED", "FAULT", "IDLE"})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def clock(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "--:--"
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def progress_bar(done: Any, total: Any, width: int = BAR_WIDTH) -> str:
    if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
        return "[" + "?" * width + "]"
    filled = min(width, max(0, done * width // total))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def render_state(state: dict[str, Any], status: dict[str, Any] | None = None) -> list[str]:
    """The live view: state, train i of n, pulses, time left, coil, interlocks, faults."""
    device = _dict(state.get("device"))
    protocol = _dict(state.get("protocol"))
    progress = _dict(state.get("progress"))
    online = "" if status is None else ("online" if status.get("online") else "OFFLINE")
    name = protocol.get("name") or "no protocol"
    digest = str(protocol.get("digest") or "")[:12]
    lines = [
        " ".join(part for part in (
            str(device.get("id") or ""), online, str(state.get("state", "?")), "·", str(name),
            f"({digest})" if digest else "",
        ) if part)
    ]
    if progress:
        delivered, planned = progress.get("pulses_delivered"), progress.get("pulses_planned")
        lines.append(
            f"train {progress.get('train')}/{progress.get('trains')}  "
            f"pulses {delivered}/{planned}  {progress_bar(delivered, planned)}  "
            f"time left {clock(progress.get('time_left_s'))}"
        )
    temperature = device.get("coil_temperature_c")
    coil = f"{temperature:.1f} °C" if isinstance(temperature, int | float) else "unknown"
    lines.append(
        f"coil {coil}  present {_yes(device.get('coil_present'))}  "
        f"armed {_yes(device.get('armed'))}  ready {_yes(device.get('ready'))}"
    )
    interlocks = [i for i in state.get("interlocks") or [] if isinstance(i, dict)]
    failing = [i for i in interlocks if not i.get("ok")]
    if failing:
        lines += [f"interlock {i.get('name')}: {i.get('reason')}" for i in failing]
    elif interlocks:
        lines.append(f"interlocks: all {len(interlocks)} ok")
    if state.get("paused_reason"):
        lines.append(f"paused: {state['paused_reason']}")
    fault = _dict(state.get("fault"))
    if fault:
        lines.append(f"FAULT {fault.get('cause')}: {fault.get('detail')}")
    return lines


def _yes(value: Any) -> str:
    if not isinstance(value, bool):
        return "?"
    return "yes" if value else "no"


def render_reasons(details: Any) -> list[str]:
    """Every reason in a reply's error details, one line each."""
    if isinstance(details, dict):
        details = [details]
    if not isinstance(details, list):
        return []
    lines = []
    for item in details:
        if isinstance(item, dict):
            if item.get("ok") is True:
                continue
            label = item.get("field") or item.get("code") or item.get("name")
            text = item.get("problem") or item.get("message") or item.get("reason") or item
            lines.append(f"{label}: {text}" if label else str(text))
        else:
            lines.append(str(item))
    return lines
