"""One broker connection's set-up: the paho client with its protocol, will, credentials and TLS.

Kept apart from the sink so that what is sent (the sink, the outbox) does not depend on how a
connection is made; the sink's thread asks for a fresh client for every connection.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from earwitness.config.mqtt import HubConfig

MAX_INFLIGHT = 20
CONNECT_TIMEOUT_S = 5.0
CREDENTIAL_REASONS = {134, 135}
"""MQTT 5 `Bad user name or password` and `Not authorized` (paho maps 3.1.1's 4 and 5 to them)."""


class Callbacks(NamedTuple):
    """paho's callbacks, run in its network thread."""

    on_connect: Callable[..., Any]
    on_disconnect: Callable[..., Any]
    on_publish: Callable[..., Any]
    on_message: Callable[..., Any]


class PasswordUnavailable(Exception):
    """The configured password file or environment variable cannot be read."""


class ConnectFailed(Exception):
    """A connection that could not be opened: `what` failed (the log message), and the error's `detail`."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what, self.detail = what, detail


def open_client(hub: HubConfig, client_id: str, will_topic: str, callbacks: Callbacks) -> paho.Client:
    """A client connected to the hub (its network loop not yet started); raises ConnectFailed."""
    try:
        client = new_client(hub, client_id, will_topic, callbacks)
    except PasswordUnavailable as error:
        raise ConnectFailed("mqtt password unavailable", str(error)) from None
    except (OSError, ssl.SSLError, ValueError) as error:
        raise ConnectFailed("mqtt TLS setup failed", f"{type(error).__name__}: {error}") from None
    try:
        connect(client, hub)
    except ssl.SSLError as error:
        raise ConnectFailed("mqtt TLS handshake failed", f"{type(error).__name__}: {error}") from None
    except (OSError, ValueError) as error:
        raise ConnectFailed("mqtt connect failed", f"{type(error).__name__}: {error}") from None
    return client


def new_client(hub: HubConfig, client_id: str, will_topic: str, callbacks: Callbacks) -> paho.Client:
    """A client ready to connect (the password is read now); raises PasswordUnavailable, or OSError,
    ssl.SSLError or ValueError for TLS files that cannot be used."""
    v5 = hub.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else True,
        reconnect_on_failure=False,
    )
    client.connect_timeout = CONNECT_TIMEOUT_S
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.max_queued_messages_set(0)
    client.will_set(will_topic, "offline", qos=1, retain=True)
    if hub.username is not None:
        client.username_pw_set(hub.username, read_password(hub))
    if hub.tls is not None:
        tls = hub.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(not tls.check_hostname)
    client.on_connect = callbacks.on_connect
    client.on_disconnect = callbacks.on_disconnect
    client.on_publish = callbacks.on_publish
    client.on_message = callbacks.on_message
    return client


def read_password(hub: HubConfig) -> str | None:
    """The hub's password, read at each connect so that a rotated one is used; never logged."""
    if hub.password_file is not None:
        try:
            return hub.password_file.expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise PasswordUnavailable(f"cannot read password_file {hub.password_file}: {error.strerror or error}") from None
    if hub.password_env is not None:
        value = os.environ.get(hub.password_env)
        if value is None:
            raise PasswordUnavailable(f"environment variable {hub.password_env} (password_env) is not set")
        return value
    return None


def connect(client: paho.Client, hub: HubConfig) -> None:
    """Open the connection (MQTT 5 with a clean start); raises what the socket or TLS handshake raises."""
    if hub.protocol == "5":
        client.connect(hub.host, hub.effective_port, hub.keepalive, clean_start=True)
    else:
        client.connect(hub.host, hub.effective_port, hub.keepalive)


def close_socket(client: paho.Client) -> None:
    """Release a finished connection's socket now rather than at garbage collection."""
    with contextlib.suppress(Exception):
        sock = client.socket()
        if sock is not None:
            sock.close()
