"""The MQTT interface v1 of DESIGN.md: how technicians and dashboards reach the daemon."""

from stimd.mqtt.config import MqttConfig
from stimd.mqtt.service import serve_mqtt

__all__ = ["MqttConfig", "serve_mqtt"]
