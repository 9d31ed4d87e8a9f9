"""Tiny HTTP helpers (stdlib only) for health checks and ClickHouse admin statements."""

from __future__ import annotations

import urllib.error
import urllib.request

# Loopback health checks must never go through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    url: str, *, data: bytes | None = None, timeout: float = 2.0, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """GET (or POST when `data` is given) `url`: (status, body), or (0, reason) when it cannot connect."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def answers(url: str, expect: str | None = None, timeout: float = 2.0) -> bool:
    """True when GET `url` is 200 (and its body, stripped, equals `expect` if given)."""
    status, body = http(url, timeout=timeout)
    return status == 200 and (expect is None or body.strip() == expect)
