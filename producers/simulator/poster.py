"""POST the simulator's HTTP events to the ingest API in batches, paced to a target rate for benchmarks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import PupilflowError


class PostError(PupilflowError):
    """The ingest API refused a batch for a reason retrying cannot fix (401, 403, 413, 422...)."""


@dataclass
class PostSummary:
    """What posting did: events sent, accepted and recognised as duplicates, batches, retries after 503."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    batches: int = 0
    retries: int = 0


Send = Callable[[str, bytes, dict[str, str], float], tuple[int, bytes]]
"""(url, body, headers, timeout) -> (status, response body)."""


def urllib_send(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """One POST with the standard library; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _batches(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in lines:
        if line.strip():
            batch.append(line.strip())
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


def _lines(source: Path | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(source, Path):
        with source.open("rb") as handle:
            yield from handle
    else:
        yield from source


def post_events(
    source: Path | Iterable[bytes],
    url: str,
    token: str,
    *,
    rate: float | None = None,
    batch_size: int = 500,
    max_retries: int = 8,
    timeout: float = 30.0,
    send: Send = urllib_send,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> PostSummary:
    """POST JSON lines (a file, or the lines) to `<url>/v1/events/batch` as `{"events": [...]}` with a token.

    A 503 (Kafka not reachable yet) is retried with backoff; a 202 counts its `accepted` and `duplicates`;
    anything else raises `PostError` with the API's answer. With `rate` (events/s), sending is paced so that
    event n leaves no earlier than n / rate seconds after the first: pacing never changes what is sent.
    """
    endpoint = url.rstrip("/") + "/v1/events/batch"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    summary = PostSummary()
    started = clock()
    if rate is not None and rate > 0:
        batch_size = max(1, min(batch_size, int(rate)))  # a batch never carries more than a second's worth
    for batch in _batches(_lines(source), batch_size):
        if rate is not None and rate > 0:
            due = started + summary.sent / rate
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        body = b'{"events":[' + b",".join(batch) + b"]}"
        attempt = 0
        while True:
            status, answer = send(endpoint, body, headers, timeout)
            if status == 503 and attempt < max_retries:
                attempt += 1
                summary.retries += 1
                sleep(min(0.25 * 2**attempt, 10.0))
                continue
            break
        if status != 202:
            raise PostError(f"POST {endpoint}: HTTP {status}: {answer[:500].decode('utf-8', 'replace')}")
        counts: Any = json.loads(answer or b"{}")
        summary.accepted += int(counts.get("accepted", 0))
        summary.duplicates += int(counts.get("duplicates", 0))
        summary.sent += len(batch)
        summary.batches += 1
    return summary
