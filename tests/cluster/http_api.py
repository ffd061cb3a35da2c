"""The management API of a test node over real HTTP (no proxy): ``call`` gives the status
and the decoded JSON, refusals included, for the cluster tests that check both."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from smartbroker.launcher import BrokerProcess

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(proc: BrokerProcess, path: str, body: Any = None, method: str = "GET",
         timeout: float = 20.0) -> tuple[int, Any]:
    """``(status, JSON body or None)`` of one request to ``proc``'s API."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{proc.host}:{proc.management_port}{path}",
                                 data=data, method=method,
                                 headers={"Authorization": AUTH,
                                          "Content-Type": "application/json"})
    try:
        with _DIRECT.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw) if raw else None


def get(proc: BrokerProcess, path: str) -> Any:
    """The JSON of a GET that must succeed."""
    status, body = call(proc, path)
    assert status == 200, (path, status, body)
    return body
