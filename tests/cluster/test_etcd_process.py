"""The etcd the cluster tests and ``serve --workers`` start: healthy on free ports,
restartable with its data, stopped cleanly."""

from __future__ import annotations

import base64
import json
import socket
import urllib.request
from pathlib import Path

import pytest

from smartbroker.cluster.etcd_process import EtcdProcess, etcd_binary

pytestmark = pytest.mark.skipif(etcd_binary() is None, reason="no etcd binary on PATH "
                                "(Debian: apt-get install etcd-server)")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _put(endpoint: str, key: bytes, value: bytes) -> None:
    """One write through etcd's v3 JSON gateway (keys and values are base64)."""
    body = json.dumps({"key": base64.b64encode(key).decode(),
                       "value": base64.b64encode(value).decode()}).encode()
    req = urllib.request.Request(f"{endpoint}/v3/kv/put", data=body, method="POST")
    with _DIRECT.open(req, timeout=5) as resp:
        assert resp.status == 200


def _get(endpoint: str, key: bytes) -> bytes | None:
    body = json.dumps({"key": base64.b64encode(key).decode()}).encode()
    req = urllib.request.Request(f"{endpoint}/v3/kv/range", data=body, method="POST")
    with _DIRECT.open(req, timeout=5) as resp:
        kvs = json.loads(resp.read()).get("kvs", [])
    return base64.b64decode(kvs[0]["value"]) if kvs else None


def test_start_restart_keeps_data_and_stop(tmp_path: Path) -> None:
    proc = EtcdProcess(tmp_path).start()
    try:
        assert proc.healthy()
        _put(proc.endpoint, b"/k", b"v")
        port = proc.client_port
        assert proc.stop() is not None
        assert not proc.alive() and not proc.healthy()
        with socket.socket() as other, pytest.raises(OSError):  # held for the restart
            other.bind((proc.host, port))
        proc.start()
        assert proc.client_port == port  # a restart keeps its ports and its data
        assert _get(proc.endpoint, b"/k") == b"v"
    finally:
        proc.stop()
    assert (tmp_path / "etcd-data").is_dir() and (tmp_path / "etcd.log").is_file()


def test_a_port_in_use_given_explicitly_fails_with_the_log(tmp_path: Path,
                                                           etcd: EtcdProcess) -> None:
    clash = EtcdProcess(tmp_path, client_port=etcd.client_port, peer_port=etcd.peer_port)
    with pytest.raises(RuntimeError, match="in use.*etcd.log"):
        clash.start(timeout=10)
    assert not clash.alive()
    assert etcd.healthy()  # the session's etcd is untouched
