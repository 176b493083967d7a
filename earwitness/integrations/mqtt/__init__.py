"""MQTT hubs: one sink per configured broker.

`sink` (the sink interface, the outbox writer and the hub's publishing thread), `outbox` (durable,
ordered storage of alerts), `connection` (the paho client: protocol, credentials, TLS), `topics`
(every topic, in one place), `discovery` (Home Assistant configs), `commands` (remote sensor switching).
"""

from earwitness.integrations.mqtt.sink import MqttHubSink

__all__ = ["MqttHubSink"]
