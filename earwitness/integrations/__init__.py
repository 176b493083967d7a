"""Where events go: sinks (JSON lines, MQTT hubs, captions, clips)."""
