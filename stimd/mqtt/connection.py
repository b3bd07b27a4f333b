"""Building broker connections the same way for the daemon, stimctl and the demo.

Every connection is MQTT 5 with a clean start and no session expiry: the broker keeps
nothing for us while we are away, so commands sent during an outage can never be
delivered late. TCP_NODELAY is set on the socket; without it Nagle's algorithm holds
small command and reply packets back for tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from stimd.mqtt.config import MqttConfig

NODELAY_OPTION = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    if config.ca_file is None:
        return None
    context = ssl.create_default_context(cafile=str(config.ca_file))
    if config.cert_file is not None and config.key_file is not None:
        context.load_cert_chain(certfile=str(config.cert_file), keyfile=str(config.key_file))
    return context


def build_client(
    config: MqttConfig,
    *,
    client_id: str,
    will: aiomqtt.Will | None = None,
    max_queued_incoming: int = 0,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> aiomqtt.Client:
    """An unconnected client; the password file is read now, at connect time."""
    connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    connect_properties.SessionExpiryInterval = 0
    return aiomqtt.Client(
        config.host,
        config.port,
        username=config.username,
        password=config.read_password(),
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        clean_start=True,
        keepalive=config.keepalive_s,
        timeout=config.io_timeout_s,
        tls_context=tls_context(config),
        socket_options=(NODELAY_OPTION,),
        max_queued_incoming_messages=max_queued_incoming,
        queue_type=queue_type,
        properties=connect_properties,
    )


def nodelay_enabled(client: aiomqtt.Client) -> bool:
    """Whether the connected client's socket really has TCP_NODELAY set."""
    # aiomqtt does not expose the paho client; its socket is the only place to look.
    sock = client._client.socket()
    if not isinstance(sock, socket.socket):
        return False
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
