"""The query that keeps chDB's server alive, and the HTTP KILL QUERY that ends it (and so the server)."""

from __future__ import annotations

import urllib.parse

from .web import http

KEEPALIVE = (
    "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
    "SELECT /* {tag} */ sleepEachRow(1) FROM numbers(1000000000000) FORMAT Null SETTINGS max_block_size = 1"
)


def kill_statement(tag: str) -> str:
    """The KILL QUERY that ends the keep-alive query tagged `tag` (and not itself, which also holds it)."""
    return f"KILL QUERY WHERE query LIKE '%{tag}%' AND query NOT LIKE '%KILL QUERY%' ASYNC"


def request_stop(http_port: int, tag: str, timeout: float = 5.0) -> bool:
    """POST the KILL QUERY to the server on `http_port` (GET would be read-only); True if it was accepted."""
    url = f"http://127.0.0.1:{http_port}/?" + urllib.parse.urlencode({"user": "default"})
    status, _ = http(url, data=kill_statement(tag).encode(), timeout=timeout)
    return status == 200
