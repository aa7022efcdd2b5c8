"""The embedded Redis of ``make run`` and the tests: it starts whatever the folder and the
port hold, and says why when it cannot."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import redis

from app.cli.embedded_broker import EmbeddedRedis


def test_a_taken_port_it_picked_is_replaced() -> None:
    broker = EmbeddedRedis()
    taken = broker.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()  # something listens there, but it is not Redis
        broker.start()
        try:
            assert broker.port != taken
            assert redis.Redis.from_url(broker.url).ping() is True
        finally:
            broker.stop()
        with pytest.raises(RuntimeError, match="Address already in use"):
            EmbeddedRedis(port=taken).start(timeout=5)  # a given port is kept


def test_a_dump_file_in_the_current_folder_is_not_loaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What another Redis may leave behind: here not even a valid RDB file.
    (tmp_path / "dump.rdb").write_bytes(b"REDIS0099 not a dump this server can read")
    monkeypatch.chdir(tmp_path)
    with EmbeddedRedis() as broker:
        client = redis.Redis.from_url(broker.url)
        assert client.dbsize() == 0
        client.set("k", "v")
        broker.stop()
        broker.start()  # a restart (the broker-outage test does this) on the same port
        assert redis.Redis.from_url(broker.url).ping() is True
    assert os.listdir(tmp_path) == ["dump.rdb"]
