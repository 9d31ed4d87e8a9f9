"""Audit sink benchmark: decisions/s and CPU per decision of `sinks.writer.AuditSink` on the real local stack.

Run (the local stack must be up: `pupilflow stack up`)::

    .venv/bin/python bench/sink.py                     # 100,000 decisions, 3 runs
    .venv/bin/python bench/sink.py --decisions 30000 --runs 1

It judges realistic flows (`bench/pipeline.py`'s population and flow mix, about 5% violations, a few class and
census lists) with `streams.replay`, sends the decisions to a decisions topic of its own (4 partitions, keyed by
first subject, as the worker does), then runs the sink once per run, each in a process of its own with a new
consumer group and a new ClickHouse database, from the first record polled until every decision is in
ClickHouse: decisions/s (wall) and the sink process's CPU microseconds per decision. The topics and databases
are deleted at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from kafka import KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient  # noqa: E402

from pupilflow.topics import ensure_topics  # noqa: E402
from schemas.settings import Settings, Topics  # noqa: E402
from sinks.clickhouse import connect, split_dsn  # noqa: E402
from sinks.metrics import SinkMetrics  # noqa: E402
from sinks.migrate import migrate  # noqa: E402
from sinks.writer import chain_heads, sink_consumer, subscribed_sink  # noqa: E402

TOPIC_NAMES = ("flows", "facts", "decisions", "violations", "dlq", "checkpoints", "changelog", "chain_heads")


def decisions(count: int, pupils: int, seed: int) -> list[tuple[bytes, bytes]]:
    """`count` decisions (Kafka key, JSON) judged from realistic flows, timestamps about 5,000 flows/s apart."""
    # Imported here: the sink runs in a process of its own that needs none of this.
    from pipeline import FlowWriter, flow_pool, population

    from schemas.decisions import Decision
    from schemas.policy import load_policy
    from streams.replay import replay_lines

    pop, facts = population(pupils, seed)
    pool = flow_pool(pop, 20_000, seed + 1)
    writer = FlowWriter(f"bs{seed}")
    start = time.time()
    lines: list[str | bytes] = [fact.model_dump_json() for fact in facts]
    lines += [writer.payload(pool[n % len(pool)], b"s", n, start + n / 5000) for n in range(count)]
    out: list[tuple[bytes, bytes]] = []

    def keep(decision: Decision) -> None:
        out.append((decision.subject_ids[0].encode(), decision.to_json_bytes()))

    replay_lines(lines, load_policy(ROOT / "policy"), on_decision=keep, keep_decisions=False)
    return out


class FirstPoll:
    """The sink's consumer, noting when the first records arrive (group join is not the sink's cost)."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.first: tuple[float, float] | None = None

    def poll(self, **kwargs: Any) -> Any:
        """`KafkaConsumer.poll`, stamping wall and CPU time before the first non-empty answer is handled."""
        records = self._consumer.poll(**kwargs)
        if records and self.first is None:
            self.first = (time.perf_counter(), time.process_time())
        return records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def run_once(settings: Settings, expected: int, home: Path) -> tuple[float, float]:
    """One sink run over the decisions topic into a fresh database: (decisions/s, CPU us per decision).

    Run in a fresh process (`main` spawns one per run): the sink's heap, and so its garbage collector's work, is
    what `pupilflow sink` has, not the generator's.
    """
    run = uuid.uuid4().hex[:8]
    server, database = split_dsn(settings.clickhouse_dsn)
    settings = settings.model_copy(
        update={"sink_group": f"bench-sink-{run}", "clickhouse_dsn": f"{server.rstrip('/')}/{database}_{run}"}
    )
    client = connect(settings.clickhouse_dsn)
    try:
        migrate(client)
        metrics = SinkMetrics()
        consumer = FirstPoll(sink_consumer(settings, client_id="bench-sink"))
        heads = chain_heads(settings, home)
        sink = subscribed_sink(consumer, client, settings, metrics, heads)
        landed = metrics.table["decisions"].rows
        try:
            sink.run(lambda: landed._value.get() >= expected)
            wall, cpu = time.perf_counter(), time.process_time()
        finally:
            consumer.close()
            heads.close()
        assert consumer.first is not None
        stored = int(client.query("SELECT count() FROM decisions").result_rows[0][0])
        if stored != expected:
            raise SystemExit(f"{stored} decisions rows in ClickHouse, expected {expected}")
        return expected / (wall - consumer.first[0]), (cpu - consumer.first[1]) / expected * 1e6
    finally:
        client.command(f"DROP DATABASE IF EXISTS {client.database}")


def main() -> None:
    """Generate, send, run the sink `--runs` times, print decisions/s, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pupils", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    base = Settings()
    prefix = f"bench-sink-{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={"topics": Topics.model_validate({**{n: f"{prefix}.{n}" for n in TOPIC_NAMES}, "partitions": 4})}
    )
    started = time.perf_counter()
    made = decisions(args.decisions, args.pupils, args.seed)
    count = len(made)
    print(f"{count} decisions judged in {time.perf_counter() - started:.1f}s", flush=True)
    ensure_topics(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="bench-sink")
    try:
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all", linger_ms=5, batch_size=256 * 1024
        )
        for key, value in made:
            producer.send(settings.topics.decisions, key=key, value=value)
        producer.flush()
        producer.close()
        del made
        rates, cpus = [], []
        spawn = multiprocessing.get_context("spawn")
        for n in range(args.runs):
            with (
                tempfile.TemporaryDirectory(prefix="bench-sink-") as home,
                ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool,
            ):
                rate, cpu = pool.submit(run_once, settings, count, Path(home)).result()
            rates.append(rate)
            cpus.append(cpu)
            print(f"run {n + 1}: {rate:,.0f} decisions/s, {cpu:.0f} us CPU per decision", flush=True)
        print(f"median: {statistics.median(rates):,.0f} decisions/s, {statistics.median(cpus):.0f} us CPU per decision")
    finally:
        admin.delete_topics([getattr(settings.topics, n) for n in TOPIC_NAMES])
        admin.close()


if __name__ == "__main__":
    main()
