"""Events per second through the HTTP ingest API's batch endpoint, into Kafka, confirmed.

Run: `.venv/bin/python bench/ingest.py [--seconds 20] [--clients 4] [--batch 1000]` with the local stack up.
It starts `pupilflow ingest serve` on topics and a home of its own (deleted afterwards), issues a token, and
has a few clients POST batches of realistic flows and facts (every event_id fresh, so nothing is deduped) for
`--seconds`. Or point it at a running server with `--url URL --token TOKEN` (events name connector `bench`).
Prints sustained events/s and the request latency p50 / p99; the target is >= 5,000 events/s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka.admin import KafkaAdminClient  # noqa: E402

from producers.ingest import TokenStore  # noqa: E402
from pupilflow import children  # noqa: E402
from pupilflow.topics import ensure_topics  # noqa: E402
from schemas.events import Event, Source  # noqa: E402
from schemas.settings import Settings, Topics  # noqa: E402
from streams import builders as b  # noqa: E402

CONNECTOR = "bench"
_PLACEHOLDER = "bench-event-id-placeholder"


def sample_events() -> list[Event]:
    """A school's everyday mix: single-subject flows, a bulk sync, consents, agreements and pupil facts."""
    when = "2025-03-03T09:00Z"
    events: list[Event] = [
        b.flow(when, "sims", "mis_sync", ["identity", "attendance"], subjects=["p-1"], channel="encrypted_api"),
        b.flow(
            when, "parentpay", "parent_payments", ["identity.name", "parent_contact", "financial"], subjects=["p-2"]
        ),
        b.flow(when, "peripatetic-music", "music_tuition", ["identity", "contact"], subjects=["p-3"]),
        b.flow(when, "meal-provider", "school_meals", ["identity.name", "health.allergy"], subjects=["p-4"]),
        b.flow(
            when,
            "edtech-software",
            "edtech",
            ["identity.name", "edtech_account"],
            subjects=[f"p-{i}" for i in range(30)],
        ),
        b.flow(when, "local-authority", "safeguarding", ["identity", "safeguarding"], subjects=["p-5"]),
        b.consent("2025-03-01T09:00Z", "p-3", "peripatetic-music", "music_tuition", ["identity"], by="mum-3", pr=True),
        b.agreement("2025-01-01T00:00Z", "parentpay"),
        b.enrolled("2024-09-01T08:00Z", "p-6"),
        b.born("p-6", "2014-05-06"),
    ]
    return [event.model_copy(update={"source": Source(connector=CONNECTOR, sequence=1)}) for event in events]


class Workload:
    """Batch bodies with fresh event ids, built by splicing ids into pre-serialised events (cheap for the client)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self._parts = []
        for event in sample_events():
            text = event.model_copy(update={"event_id": _PLACEHOLDER}).model_dump_json().encode()
            head, tail = text.split(_PLACEHOLDER.encode())
            self._parts.append((head, tail))
        self._run = uuid.uuid4().hex[:8]
        self._counter = 0
        self._lock = threading.Lock()

    def body(self) -> bytes:
        """The next batch body."""
        with self._lock:
            start, self._counter = self._counter, self._counter + self.batch
        parts = self._parts
        items = [
            b"%s%s-%d%s" % (parts[n % len(parts)][0], self._run.encode(), n, parts[n % len(parts)][1])
            for n in range(start, start + self.batch)
        ]
        return b'{"events":[' + b",".join(items) + b"]}"


def client(url: str, token: str, work: Workload, until: float, latencies: list[float], totals: list[int]) -> None:
    """POST batches on one keep-alive connection until `until`; a non-202 aborts the run."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    accepted = 0
    while time.monotonic() < until:
        body = work.body()
        started = time.perf_counter()
        conn.request("POST", "/v1/events/batch", body, headers)
        response = conn.getresponse()
        payload = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 202:
            raise SystemExit(f"HTTP {response.status}: {payload[:500]!r}")
        accepted += json.loads(payload)["accepted"]
    conn.close()
    totals.append(accepted)


def measure(url: str, token: str, seconds: float, clients: int, batch: int) -> None:
    """Drive the server and print the figures."""
    work = Workload(batch)
    # A short warm-up: connections, the producer's first batches, pydantic's first validations.
    client(url, token, work, time.monotonic() + 1.0, [], [])
    latencies: list[float] = []
    totals: list[int] = []
    until = time.monotonic() + seconds
    started = time.monotonic()
    threads = [
        threading.Thread(target=client, args=(url, token, work, until, latencies, totals)) for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if len(totals) != clients:
        raise SystemExit("a client failed; see above")
    events = sum(totals)
    cuts = statistics.quantiles(latencies, n=100)
    print(f"requests: {len(latencies)} of {batch} events, {clients} concurrent clients, {elapsed:.1f} s")
    print(f"latency per request: p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms")
    print(f"sustained: {events / elapsed:,.0f} events/s (target >= 5,000)")


def free_port() -> int:
    """A port nothing listens on now (the default ingest port may be a running server's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    """Start a server of our own (or use --url), measure, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--url", default=None, help="a running server (then --token is required)")
    parser.add_argument("--token", default=None)
    args = parser.parse_args()
    if args.url:
        if not args.token:
            parser.error("--url needs --token (a token of connector 'bench')")
        measure(args.url, args.token, args.seconds, args.clients, args.batch)
        return
    base = Settings()
    prefix = f"bench-ingest-{uuid.uuid4().hex[:6]}"
    names = {name: f"{prefix}.{name}" for name in ("flows", "facts", "decisions", "violations", "dlq", "checkpoints")}
    with tempfile.TemporaryDirectory(prefix="pupilflow-bench-ingest-") as home:
        settings = base.model_copy(
            update={
                "home": Path(home),
                "ingest_port": free_port(),
                "topics": Topics(**names, partitions=base.topics.partitions),
            }
        )
        ensure_topics(settings)
        tokens = TokenStore.in_home(settings.home)
        token = tokens.issue(CONNECTOR)
        tokens.close()
        server = children.ingest(settings, settings.home / "ingest.log")
        try:
            server.start()
            measure(f"http://127.0.0.1:{settings.ingest_port}", token, args.seconds, args.clients, args.batch)
        finally:
            server.stop()
            admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","))
            try:
                admin.delete_topics(list(names.values()))
            finally:
                admin.close()


if __name__ == "__main__":
    main()
