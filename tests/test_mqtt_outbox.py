"""The durable MQTT outbox and the hub config, without a broker."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from earwitness.config import ConfigError, parse_config
from earwitness.integrations.mqtt.discovery import device_class, discovery_messages
from earwitness.integrations.mqtt.outbox import Outbox, outbox_path


def test_outbox_keeps_order_across_reopen_and_deletes_on_ack(tmp_path: Path) -> None:
    path = outbox_path(tmp_path, "home")
    outbox = Outbox(path, "home", max_messages=100, max_age_s=3600)
    seqs = [outbox.add("t/events", f"m{i}".encode()) for i in range(5)]
    assert seqs == sorted(seqs)
    outbox.ack(seqs[1])
    outbox.close()
    reopened = Outbox(path, "home", max_messages=100, max_age_s=3600)
    assert [m.payload for m in reopened.after(0, 10)] == [b"m0", b"m2", b"m3", b"m4"]
    assert [m.payload for m in reopened.after(seqs[2], 10)] == [b"m3", b"m4"]
    assert [m.payload for m in reopened.after(0, 2)] == [b"m0", b"m2"]
    assert reopened.depth() == 4
    assert reopened._db is not None and reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_outbox_limits_drop_oldest_and_log_counts(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", "vehicle", max_messages=3, max_age_s=0.5)
    with capture_logs() as logs:
        for i in range(5):
            outbox.add("t", str(i).encode())
    assert [m.payload for m in outbox.after(0, 10)] == [b"2", b"3", b"4"]
    drops = [l for l in logs if l["event"] == "mqtt outbox dropped messages"]
    assert [(l["count"], l["reason"], l["hub"]) for l in drops] == [(1, "size limit", "vehicle")] * 2
    assert outbox.dropped == 2
    time.sleep(0.6)
    with capture_logs() as logs:
        outbox.add("t", b"5")
        assert [m.payload for m in outbox.after(0, 10)] == [b"5"]
    assert [(l["count"], l["reason"]) for l in logs] == [(3, "age limit")]
    assert outbox.dropped == 5


def test_outbox_ages_follow_the_monotonic_clock_not_the_wall_clock(tmp_path: Path) -> None:
    """A device without a battery-backed clock boots in 1970 and jumps to today when NTP answers."""
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path, "car", max_messages=10, max_age_s=3600)
    outbox.add("t", b"before the clock was set")
    outbox.add("t", b"an hour and a half ago")
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE outbox SET created_at = 86400 WHERE payload = ?", (b"before the clock was set",))
        db.execute("UPDATE outbox SET created_at = ? WHERE payload = ?", (time.time() - 5400, b"an hour and a half ago"))
    db.close()
    assert [m.payload for m in outbox.after(0, 10)] == [b"before the clock was set", b"an hour and a half ago"], \
        "while running, only the monotonic age counts"
    outbox.close()
    reopened = Outbox(path, "car", max_messages=10, max_age_s=3600)
    pending = reopened.after(0, 10)
    assert [m.payload for m in pending] == [b"before the clock was set"], "a plausible wall-clock age counts after a restart"
    assert pending[0].age_s < 60


def test_hub_config_keys_and_errors() -> None:
    config = parse_config({"device_id": "car1", "sources": [{"name": "cabin"}], "hubs": [
        {"name": "vehicle", "host": "10.0.0.1", "protocol": "3.1.1", "tls": {"ca_file": "/ca.crt"},
         "route": {"labels": ["scratch"], "sources": ["cabin"]}},
        {"name": "home", "host": "h", "protocol": 5, "password_env": "PW"},
    ]})
    vehicle, home = config.hubs
    assert (vehicle.effective_port, vehicle.qos, vehicle.prefix, vehicle.protocol) == (8883, 1, "earwitness", "3.1.1")
    assert (home.effective_port, home.protocol, home.discovery.enabled, home.allow_remote_control) == (1883, "5", True, False)
    assert parse_config({}).hubs == []
    bad = [
        ({"name": "a", "host": "h", "password_file": "/p", "password_env": "P"}, "not both"),
        ({"name": "a", "host": "h", "route": {"sources": ["nowhere"]}}, "unknown sources: nowhere"),
        ({"name": "a b", "host": "h"}, "hubs[0].name"),
        ({"name": "a", "host": "h", "prefix": "x/#"}, "hubs[0].prefix"),
        ({"name": "a", "host": "h", "protocol": "4"}, "hubs[0].protocol"),
        ({"name": "a", "host": "h", "password": "inline"}, "hubs[0].password"),
    ]
    for hub, message in bad:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_config({"hubs": [hub]})
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config({"hubs": [{"name": "a", "host": "h"}, {"name": "a", "host": "i"}]})


def test_discovery_ids_and_device_classes() -> None:
    hub = parse_config({"hubs": [{"name": "h", "host": "x"}]}).hubs[0]
    messages = discovery_messages(hub, "car.1", [("cabin", "vehicle")], ["glass_break", "scratch", "loud"])
    configs = [m for m in messages if m[1]]
    assert all(topic.startswith("homeassistant/") and topic.endswith("/config") for topic, _ in messages)
    assert all("/car_1/" in topic for topic, _ in messages)  # ids limited to [a-zA-Z0-9_-]
    assert len(configs) == 5
    assert [device_class(l) for l in ("glass_break", "scratch", "loud", "smoke_alarm")] == ["safety", "tamper", "sound", "smoke"]
