"""Emitter throughput into the local Kafka (target: >= 10,000 events/s), plain and exactly-once.

Run: `.venv/bin/python bench/emitter.py [--events N] [--bootstrap HOST:PORT]` with the stack up
(`pupilflow stack up`). It creates topics of its own, then measures:

1. `Emitter.emit` + `flush` of realistic flow and fact events (pydantic models serialised per event, acks=all,
   idempotent, gzip): what every connector pays per event;
2. the same through a file connector end to end: a sync-log-sized CSV read by `FileConnector` into
   transactions of 2,000 records with the checkpoint, until Kafka has committed it all.

Delivery is confirmed in both (flush / transaction commit) before the clock stops.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from producers.emitter import Emitter  # noqa: E402
from producers.filesource import Draft, FileConnector, Record, csv_records  # noqa: E402
from pupilflow.topics import ensure_topics  # noqa: E402
from schemas.events import ConsentGiven, DataFlow, Event  # noqa: E402
from schemas.settings import Settings, Topics  # noqa: E402

RECIPIENTS = [
    ("sims", "mis_sync", ["identity", "attendance", "assessment"]),
    ("parentpay", "parent_payments", ["identity", "parent_contact", "financial"]),
    ("mathsquest", "edtech", ["identity.name", "identity.class", "edtech_account"]),
    ("cool-milk", "free_milk", ["identity.name", "identity.dob", "identity.class"]),
    ("school-newsletter", "promotional_photo", ["identity.name", "photographs"]),
]


def events(count: int, seed: int = 7) -> list[Event]:
    """Realistic single-subject flows with a consent fact every tenth event."""
    rng = random.Random(seed)
    start = datetime(2026, 9, 1, 8, tzinfo=UTC)
    out: list[Event] = []
    for n in range(count):
        pupil = f"P{rng.randrange(100_000):06d}"
        at = start + timedelta(seconds=n)
        source = {"connector": "bench", "sequence": n}
        if n % 10 == 9:
            out.append(
                ConsentGiven.model_validate(
                    {
                        "event_id": f"bench-{uuid.UUID(int=rng.getrandbits(128))}",
                        "occurred_at": at,
                        "emitted_at": at,
                        "source": source,
                        "subject": {"id": pupil},
                        "consent_id": f"c-{n}",
                        "given_by": {"id": f"{pupil}-m", "relationship": "mother", "has_parental_responsibility": True},
                        "scope": {
                            "recipient": "school-newsletter",
                            "purpose": "promotional_photo",
                            "categories": ["identity.name", "photographs"],
                        },
                    }
                )
            )
            continue
        recipient, purpose, categories = RECIPIENTS[rng.randrange(len(RECIPIENTS))]
        out.append(
            DataFlow.model_validate(
                {
                    "event_id": f"bench-{uuid.UUID(int=rng.getrandbits(128))}",
                    "occurred_at": at,
                    "emitted_at": at,
                    "source": source,
                    "recipient": recipient,
                    "subjects": [{"id": pupil}],
                    "categories": categories,
                    "purpose": purpose,
                    "lawful_basis": "public_task",
                    "channel": "encrypted_api",
                }
            )
        )
    return out


class _SyncRows:
    """A minimal sync-log reader for the benchmark: one flow per row."""

    patterns = ("*.csv",)

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        for number, end, row in csv_records(path, position, line):
            fields = {
                "occurred_at": row["timestamp"],
                "recipient": row["supplier"],
                "subjects": [{"id": p} for p in row["pupils"].split(";")],
                "categories": row["fields"].split(";"),
                "purpose": "mis_sync",
                "lawful_basis": "public_task",
                "channel": "encrypted_api",
            }
            yield Record(number, end, drafts=(Draft(DataFlow, fields),))


def bench_emit(settings: Settings, batch: list[Event]) -> float:
    """Seconds to emit and confirm every event."""
    with Emitter(settings.kafka_bootstrap, settings.topics, client_id="bench-emitter") as emitter:
        emitter.emit(batch[0])
        emitter.flush()  # connection set-up is not throughput
        started = time.perf_counter()
        for event in batch[1:]:
            emitter.emit(event)
        emitter.flush()
        return time.perf_counter() - started


def bench_file_connector(settings: Settings, rows: int) -> float:
    """Seconds for a file connector to deliver a CSV of `rows` flows exactly once."""
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Path(tmp)
        rng = random.Random(3)
        lines = ["timestamp,supplier,pupils,fields"]
        for n in range(rows):
            lines.append(
                f"2026-09-01T08:{n // 60 % 60:02d}:{n % 60:02d}+00:00,sims,P{rng.randrange(100_000):06d},"
                "identity.name;identity.class;attendance"
            )
        (outbox / "sync.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        connector = FileConnector(
            f"bench-{uuid.uuid4().hex[:8]}", _SyncRows(), outbox, settings.kafka_bootstrap, settings.topics
        )
        with connector:
            started = time.perf_counter()
            summary = connector.run_once()
            elapsed = time.perf_counter() - started
        if summary.events != rows:
            raise SystemExit(f"file connector emitted {summary.events} of {rows} events")
        return elapsed


def main() -> None:
    """Run both measurements three times and print events/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Settings()
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    names = {name: f"{prefix}.{name}" for name in ("flows", "facts", "decisions", "violations", "dlq", "checkpoints")}
    settings = base.model_copy(
        update={"kafka_bootstrap": args.bootstrap or base.kafka_bootstrap, "topics": Topics(**names, partitions=4)}
    )
    ensure_topics(settings)
    batch = events(args.events)
    print(f"emitter benchmark: {args.events:,} events per round into {settings.kafka_bootstrap} ({prefix}.*)")
    emit_rates = []
    file_rates = []
    for round_no in range(1, args.rounds + 1):
        emit_rates.append((len(batch) - 1) / bench_emit(settings, batch))
        file_rates.append(args.events / bench_file_connector(settings, args.events))
        print(
            f"  round {round_no}: emitter {emit_rates[-1]:,.0f} events/s; "
            f"file connector (exactly once) {file_rates[-1]:,.0f} events/s"
        )
    print(f"emitter: best {max(emit_rates):,.0f} events/s, median {sorted(emit_rates)[len(emit_rates) // 2]:,.0f}")
    print(
        f"file connector: best {max(file_rates):,.0f} events/s, median {sorted(file_rates)[len(file_rates) // 2]:,.0f}"
    )


if __name__ == "__main__":
    main()
