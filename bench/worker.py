"""Stream worker CPU per flow in-process: `StreamWorker.process` on `bench/pipeline.py`'s flows, without Kafka.

Run: `.venv/bin/python bench/worker.py [--flows N] [--preload N] [--batch N] [--mix realistic|single|multi]`.
No services needed. What `bench/pipeline.py` measures on the whole box, this measures for the worker alone:

1. the pipeline benchmark's pupils, their facts and its flow pool (`--mix realistic`: its weights, about 2.2
   subjects a flow with the class lists, CTFs and census returns; `single`: those three left out; `multi`: only
   the class lists and census returns);
2. the facts, then `--preload` flows, judged first: the open-flow store holds that many flows when timing starts;
3. `--flows` more, in batches of `--batch` records (a backlog's batch size), timed, with the garbage collector
   set as `pupilflow worker` sets it (`streams.gcpolicy.FreezeSurvivors`).

Everything the worker does between a poll and its transaction runs: validation, judging, the decisions' JSON,
the open-flow store, the changelog records and the input positions. The transaction itself is a stand-in that
only counts what it was given, and the consumer a stand-in with nothing more to give. So the figure leaves out
aiokafka's own CPU and every other process of the pipeline; it is the one to watch when changing the worker,
since it is steady from run to run where the pipeline's figures are not.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from aiokafka import TopicPartition  # noqa: E402
from pipeline import TEMPLATES, Body, FlowWriter, flow_pool, population  # noqa: E402

from schemas.policy import load_policy  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from streams.gcpolicy import FreezeSurvivors  # noqa: E402
from streams.legs import partition_of  # noqa: E402
from streams.metrics import WorkerMetrics  # noqa: E402
from streams.worker import Arrivals, StreamWorker  # noqa: E402

PARTITIONS = 4
MULTI = {"trip list (a class)", "census return (250 pupils)"}
LISTS = MULTI | {"CTF to another school (1-6 pupils)"}


class Record(NamedTuple):
    """What the worker reads of an aiokafka `ConsumerRecord`."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: bytes


class Idle:
    """A consumer with nothing more to give: every record is handed to `process` directly."""

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        """No records."""
        await asyncio.sleep(0)
        return {}

    def last_stable_offset(self, tp: TopicPartition) -> int:
        """Caught up."""
        return 0

    def highwater(self, tp: TopicPartition) -> int:
        """Caught up."""
        return 0

    async def position(self, tp: TopicPartition) -> int:
        """Caught up."""
        return 0

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        """Just now."""
        return int(time.time() * 1000)

    def pause(self, *tps: TopicPartition) -> None:
        """Nothing is buffered: nothing to pause."""

    def resume(self, *tps: TopicPartition) -> None:
        """Nothing is paused."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """The positions given to the consumer group (monitoring only): nowhere to give them."""


class Feed:
    """Input records as the flows and facts topics would hold them: keyed, partitioned, numbered."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], int] = {}

    def record(self, topic: str, key: bytes, value: bytes) -> Record:
        """The next record of `topic` in the partition `key` hashes to."""
        partition = partition_of(key, PARTITIONS)
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        return Record(topic, partition, offset, int(time.time() * 1000), key, value)


def pool_of(mix: str, pupils: int, seed: int) -> tuple[list[Any], list[Body]]:
    """The facts and the flow pool of `mix`."""
    pop, facts = population(pupils, seed)
    pool = flow_pool(pop, 20_000, seed + 1)
    if mix == "single":
        pool = [body for body in pool if TEMPLATES[body.template].name not in LISTS]
    elif mix == "multi":
        pool = [body for body in pool if TEMPLATES[body.template].name in MULTI]
    return facts, pool


def worker_for(settings: Settings, batch: int) -> tuple[StreamWorker, list[int]]:
    """A worker whose transactions only count what they would send: (worker, [records sent])."""
    worker = StreamWorker(settings, load_policy(ROOT / "policy"), WorkerMetrics(), max_records=batch, poll_ms=5)
    sent = [0]

    async def commit(out: list[Any], changes: list[Any], committed_at: list[float], legs: list[Any]) -> None:
        sent[0] += len(out) + len(changes) + len(legs)
        committed_at.extend((time.time(), time.monotonic()))

    worker._commit = commit  # type: ignore[method-assign]
    worker.consumer = Idle()
    topics = settings.topics
    worker.inputs = [TopicPartition(t, p) for t in (topics.flows, topics.facts) for p in range(PARTITIONS)]
    worker._arrivals = Arrivals(worker.inputs, group_of=lambda tp: tp.partition)
    return worker, sent


async def run(args: argparse.Namespace, freezer: FreezeSurvivors) -> None:
    """Build, pre-load, then time `--flows` flows; prints the figures."""
    settings = Settings()
    facts, pool = pool_of(args.mix, args.pupils, args.seed)
    subjects = sum(body.tail.count(b'"id":') for body in pool) / len(pool)
    worker, sent = worker_for(settings, args.batch)
    feed, writer, pick = Feed(), FlowWriter("bench-worker"), random.Random(args.seed + 2)
    made = 0

    def flows(count: int) -> list[Record]:
        nonlocal made
        out = []
        for _ in range(count):
            body = pool[pick.randrange(len(pool))]
            out.append(feed.record(settings.topics.flows, body.key, writer.payload(body, b"w", made, time.time())))
            made += 1
        return out

    started = time.perf_counter()
    records = [feed.record(settings.topics.facts, f.partition_key(), f.model_dump_json().encode()) for f in facts]
    for at in range(0, len(records), args.batch):
        await worker.process(records[at : at + args.batch])
    for done in range(0, args.preload, args.batch):
        await worker.process(flows(min(args.batch, args.preload - done)))
    await worker._settle()
    # As `pupilflow worker` after its restore: what is kept is frozen, and so is what survives each full collection.
    gc.collect()
    gc.freeze()
    print(
        f"{len(facts):,} facts and {args.preload:,} flows judged first in {time.perf_counter() - started:.0f}s; "
        f"mix {args.mix}: {len(pool):,} flows in the pool, {subjects:.2f} subjects a flow",
        flush=True,
    )
    batches = [flows(min(args.batch, args.flows - done)) for done in range(0, args.flows, args.batch)]
    before = sent[0]
    collections = sum(s["collections"] for s in gc.get_stats())
    cpu, wall = time.process_time(), time.perf_counter()
    for n, batch in enumerate(batches, 1):
        await worker.process(batch)
        freezer.tick()
        if n % max(1, len(batches) // 5) == 0:
            so_far = 1e6 * (time.process_time() - cpu) / (n * args.batch)
            print(f"  {n * args.batch:>9,} flows, {so_far:.1f} µs CPU a flow", flush=True)
    await worker._settle()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    collections = sum(s["collections"] for s in gc.get_stats()) - collections
    print(
        f"{args.flows:,} flows in batches of {args.batch:,}: {1e6 * cpu / args.flows:.1f} µs CPU a flow "
        f"({args.flows / cpu:,.0f} flows/s on one core), wall {1e6 * wall / args.flows:.1f} µs; "
        f"{sent[0] - before:,} records to send; {worker.state.open_flows():,} flows open; "
        f"{collections} garbage collections"
    )
    worker.state.flows.close()


def main() -> int:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pupils", type=int, default=20_000)
    parser.add_argument("--flows", type=int, default=200_000, help="flows timed")
    parser.add_argument("--preload", type=int, default=200_000, help="flows judged before timing starts")
    parser.add_argument("--batch", type=int, default=2_000, help="records a transaction")
    parser.add_argument("--mix", choices=("realistic", "single", "multi"), default="realistic")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with FreezeSurvivors() as freezer:
        asyncio.run(run(args, freezer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
