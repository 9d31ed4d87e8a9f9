"""End-to-end pipeline benchmark: flows into Kafka -> `pupilflow worker` -> decisions -> `pupilflow sink` -> ClickHouse.

Run (the local stack must be up: `pupilflow stack up`)::

    .venv/bin/python bench/pipeline.py            # 2,000 flows/s for 60s, then 5,000 flows/s for 300s (+ pre-load)
    .venv/bin/python bench/pipeline.py --quick    # smoke run: 1,000 flows/s for 20s, then 3,000 flows/s for 20s
    .venv/bin/python bench/pipeline.py --rate 6000 --seconds 120 --latency-rate 2000 --latency-seconds 30 --keep
    .venv/bin/python bench/pipeline.py --burst-ms 20  # connectors that send every 20 ms instead of every 5 ms
    .venv/bin/python bench/pipeline.py --warmup-seconds 120  # right after `stack up`: Kafka's JVM warms up first

It makes topics, consumer groups, a ClickHouse database, ports and a home of its own (a unique run id), pre-loads
the facts of `--pupils` pupils (birth dates, enrolments, parents, consents, the recipients' sharing agreements)
and waits until the worker has judged them, then starts the sink and runs two phases of realistic flows (mostly
single-subject syncs, payments, edtech, milk, photos and music registers; some trip lists, CTFs and a census
return; about 5% violations) from a separate generator process at a fixed offered rate:

1. latency (`--latency-rate`, `--latency-seconds`): decision latency, flow `emitted_at` (its send time) -> the
   decision read by a read_committed consumer in another process (an upper bound: it includes the consumer's
   fetch delay) and -> the decision record's Kafka timestamp (set when the worker sends it, before its
   transaction commits: a lower bound); and `inserted_at - emitted_at` of the phase's rows in ClickHouse;
2. sustained (`--rate`, `--seconds`): decisions/s per 10 s window, the worker's consumer lag every 10 s and
   whether it grows (least-squares slope over the second half), the worker's RSS every second.

It also reports the worker's RSS idle, after the pre-load ("state" = the difference) and at peak, and CPU seconds
per process (worker, sink, generator, collector, Kafka, ClickHouse, everything else on the box) per phase, with
how long each process's threads waited for a core (`waited_seconds`). The
worker is then killed with SIGKILL and started again (`--no-restart` to skip): how long its restore from the
changelog took, and its peak RSS meanwhile. The last lines are a table of the acceptance targets with PASS/FAIL.
Everything it made is dropped at the end unless `--keep`. Other users of the same box (tests running
concurrently) show up as "rest of the box" CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.partitioner import murmur2  # noqa: E402
from kafka import KafkaConsumer  # noqa: E402
from kafka import TopicPartition as KafkaTopicPartition  # noqa: E402
from kafka.admin import KafkaAdminClient  # noqa: E402

from producers.emitter import Emitter  # noqa: E402
from producers.simulator.story import AGREEMENTS  # noqa: E402
from pupilflow import children  # noqa: E402
from pupilflow.children import Child, http_get  # noqa: E402
from pupilflow.topics import ensure_topics  # noqa: E402
from schemas.events import DataFlow, Event, Source, parse_flow  # noqa: E402
from schemas.settings import Settings, Topics  # noqa: E402
from sinks.clickhouse import connect, split_dsn  # noqa: E402
from sinks.migrate import migrate  # noqa: E402
from streams import builders as b  # noqa: E402

MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
RSS_BUDGET_MIB = 256
LATENCY_P99_MS = 100.0
VISIBLE_P99_MS = 2000.0

# ---------------------------------------------------------------------------------------------------- population


@dataclass
class Population:
    """The pupils the pre-loaded facts describe, and which of them hold which consents."""

    pupils: list[str]
    young: list[str]  # born 2020 or later: the Cool Milk age groups
    photo: list[str]  # a parent consented to promotional photos
    no_photo: list[str]
    music: list[str]  # a parent consented to the peripatetic music register
    no_music: list[str]
    classes: list[list[str]]  # groups of about 28 pupils of one school and year


def population(pupils: int, seed: int) -> tuple[Population, list[Event]]:
    """`pupils` pupils and their facts, deterministic in `seed`; each connector's sequence numbers run 0, 1, 2..."""
    rnd = random.Random(seed)
    sequences: dict[str, int] = {}
    facts: list[Event] = []

    def add(connector: str, event: Event) -> None:
        sequence = sequences.get(connector, 0)
        sequences[connector] = sequence + 1
        facts.append(event.model_copy(update={"source": Source(connector=connector, sequence=sequence)}))

    for recipient, kind in AGREEMENTS:
        add("contracts", b.agreement("2023-08-01T09:00Z", recipient, kind, valid_until="2030-08-31T00:00Z"))
    pop = Population([], [], [], [], [], [], [])
    by_class: dict[tuple[str, int], list[str]] = {}
    for n in range(pupils):
        pupil = f"P{seed % 1000:03d}{n:07d}"
        year = rnd.randint(2011, 2021)
        school = "hawthorn-primary" if year >= 2015 else "rose-valley"
        parent = f"{pupil}-p1"
        add("mis", b.born(pupil, f"{year}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"))
        add("mis", b.enrolled("2024-09-04T08:00Z", pupil, school))
        add("mis", b.standing("2024-09-04T08:00Z", pupil, parent, "mother", pr=True))
        pop.pupils.append(pupil)
        by_class.setdefault((school, year), []).append(pupil)
        if year >= 2020:
            pop.young.append(pupil)
        if rnd.random() < 0.85:
            photo = ["photographs", "identity.name"]
            consent = b.consent(
                "2024-09-05T18:00Z", pupil, None, "promotional_photo", photo, recipient_class="publication", by=parent
            )
            add("consent", consent)
            pop.photo.append(pupil)
        else:
            pop.no_photo.append(pupil)
        if rnd.random() < 0.3:
            music = b.consent(
                "2024-09-05T18:00Z", pupil, "peripatetic-music", "music_tuition", ["identity", "contact"], by=parent
            )
            add("consent", music)
            pop.music.append(pupil)
        else:
            pop.no_music.append(pupil)
    for members in by_class.values():
        pop.classes.extend(members[i : i + 28] for i in range(0, len(members), 28))
    return pop, facts


# ---------------------------------------------------------------------------------------------------- flows

SYNC = {"lawful_basis": "public_task", "channel": "encrypted_api"}
STATUTORY = {**SYNC, "condition": "statutory_purposes_para6"}


@dataclass(frozen=True)
class Template:
    """One kind of flow a school system sends, how often, and how its subjects are picked."""

    name: str
    weight: float
    connector: str
    recipient: str
    purpose: str
    categories: tuple[str, ...]
    fields: dict[str, Any]
    subjects: Callable[[random.Random, Population], list[str]]
    violation: bool = False


def _one(group: Callable[[Population], list[str]]) -> Callable[[random.Random, Population], list[str]]:
    return lambda rnd, pop: [rnd.choice(group(pop))]


def _photo_group(rnd: random.Random, pop: Population) -> list[str]:
    return rnd.sample(pop.photo, rnd.randint(1, 4))


def _photo_group_with_one_without(rnd: random.Random, pop: Population) -> list[str]:
    return [*rnd.sample(pop.photo, rnd.randint(0, 3)), rnd.choice(pop.no_photo)]


def _class(rnd: random.Random, pop: Population) -> list[str]:
    return list(rnd.choice(pop.classes))


def _ctf(rnd: random.Random, pop: Population) -> list[str]:
    return rnd.sample(pop.pupils, rnd.randint(1, 6))


def _census(rnd: random.Random, pop: Population) -> list[str]:
    return rnd.sample(pop.pupils, 250)


_pupils = _one(lambda p: p.pupils)
CTF: tuple[str, ...] = ("identity.upn", "identity.name", "identity.dob", "identity.gender", "ethnicity")
CTF += ("first_language", "fsm_eligibility", "attendance", "assessment", "sen", "parent_contact", "identity.address")

TEMPLATES = [
    Template("MIS sync (SIMS)", 22, "synclog", "sims", "mis_sync",
             ("identity.upn", "identity.name", "identity.class", "attendance", "assessment"), STATUTORY, _pupils),
    Template("safeguarding records (CPOMS)", 8, "synclog", "cpoms", "safeguarding_records",
             ("identity.upn", "identity.name", "identity.class", "behaviour", "sen", "attendance"),
             {**SYNC, "condition": "safeguarding_para18"}, _pupils),
    Template("payments (ParentPay)", 14, "synclog", "parentpay", "parent_payments",
             ("identity.upn", "identity.name", "identity.class", "parent_contact", "meals", "financial"), SYNC,
             _pupils),
    Template("school meals", 10, "synclog", "meal-provider", "school_meals",
             ("identity.name", "identity.class", "identity.school", "health.allergy", "meals"), STATUTORY, _pupils),
    Template("edtech (MathsQuest, US, DPF)", 10, "synclog", "mathsquest", "edtech",
             ("identity.name", "identity.class", "edtech_account"),
             {**SYNC, "destination_country": "US", "transfer_safeguard": "dpf_uk_extension"}, _pupils),
    Template("edtech (TTRS)", 8, "synclog", "edtech-software", "edtech",
             ("identity.name", "identity.class", "identity.upn", "edtech_account", "assessment"), SYNC, _pupils),
    Template("free milk (Cool Milk)", 5, "synclog", "cool-milk", "free_milk",
             ("identity.name", "identity.dob", "identity.class", "identity.school"), SYNC, _one(lambda p: p.young)),
    Template("newsletter photo (1-4 pupils)", 6, "ingest", "school-newsletter", "promotional_photo",
             ("photographs", "identity.name"), {"channel": "web"}, _photo_group),
    Template("music register", 4, "ingest", "peripatetic-music", "music_tuition", ("identity", "contact"),
             {"lawful_basis": "consent", "channel": "encrypted_email"}, _one(lambda p: p.music)),
    Template("trip list (a class)", 2, "ingest", "parentpay", "parent_payments",
             ("identity.name", "parent_contact", "trip", "financial"), SYNC, _class),
    Template("CTF to another school (1-6 pupils)", 1, "ctf", "school:9374102", "ctf_transfer", CTF,
             {"lawful_basis": "public_task", "condition": "statutory_purposes_para6", "channel": "s2s"}, _ctf),
    Template("census return (250 pupils)", 0.2, "ingest", "dfe", "census_return",
             ("identity", "attendance", "assessment", "ethnicity", "first_language", "fsm_eligibility", "sen"),
             {"lawful_basis": "legal_obligation", "condition": "statutory_purposes_para6", "channel": "dfe_collect"},
             _census),
    # Injected violations, about 5% of flows, the mistakes schools make.
    Template("VIOLATION photo of a pupil without permission", 1.5, "ingest", "school-newsletter",
             "promotional_photo", ("photographs", "identity.name"), {"channel": "web"},
             _photo_group_with_one_without, violation=True),
    Template("VIOLATION sync to an unregistered app", 1.0, "synclog", "classdojo", "edtech",
             ("identity.name", "identity.class"), SYNC, _pupils, violation=True),
    Template("VIOLATION US transfer without safeguard", 1.0, "synclog", "quizcloud", "edtech",
             ("identity.name", "identity.class", "edtech_account"), {**SYNC, "destination_country": "US"},
             _pupils, violation=True),
    Template("VIOLATION medical conditions to ParentPay", 0.8, "synclog", "parentpay", "parent_payments",
             ("identity.name", "parent_contact", "financial", "health.physical"), SYNC, _pupils, violation=True),
    Template("VIOLATION music register without consent", 0.7, "ingest", "peripatetic-music", "music_tuition",
             ("identity", "contact"), {"lawful_basis": "consent", "channel": "encrypted_email"},
             _one(lambda p: p.no_music), violation=True),
]  # fmt: skip

CONNECTORS = sorted({t.connector for t in TEMPLATES})


@dataclass
class Body:
    """A pre-serialised flow without its envelope: Kafka key, connector and the JSON after `source`."""

    key: bytes
    connector: int
    tail: bytes
    template: int


def flow_pool(pop: Population, size: int, seed: int) -> list[Body]:
    """`size` flows drawn from the templates by weight, serialised through `DataFlow` once, here."""
    rnd = random.Random(seed)
    weights = [t.weight for t in TEMPLATES]
    out = []
    for n in range(size):
        index = rnd.choices(range(len(TEMPLATES)), weights)[0]
        t = TEMPLATES[index]
        subjects = t.subjects(rnd, pop)
        flow = DataFlow.model_validate(
            {
                "event_id": f"pool-{n}",
                "occurred_at": "2026-01-01T00:00:00Z",
                "emitted_at": "2026-01-01T00:00:00Z",
                "source": {"connector": t.connector, "sequence": 0},
                "recipient": t.recipient,
                "purpose": t.purpose,
                "categories": list(t.categories),
                "subjects": [{"kind": "pupil", "id": s} for s in subjects],
                "record_count": len(subjects),
                **t.fields,
            }
        )
        raw = flow.model_dump_json().encode()
        out.append(
            Body(flow.partition_key(), CONNECTORS.index(t.connector), raw[raw.index(b',"kind":"flow"') :], index)
        )
    return out


class Stamper:
    """UTC timestamps as ISO bytes with microseconds, the date part cached per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def __call__(self, now: float) -> bytes:
        """`now` (epoch seconds) as `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return b"%s.%06dZ" % (self._prefix, int((now - second) * 1_000_000))


class FlowWriter:
    """Turns pool bodies into full flow JSON: a fresh event id, `occurred_at` = `emitted_at` = now, a sequence."""

    def __init__(self, run: str) -> None:
        self.run = run.encode()
        self.sequences = [0] * len(CONNECTORS)
        self.connectors = [c.encode() for c in CONNECTORS]
        self.stamp = Stamper()

    def payload(self, body: Body, phase: bytes, n: int, now: float) -> bytes:
        """The JSON of flow number `n` of `phase`, sent at `now`."""
        stamp = self.stamp(now)
        sequence = self.sequences[body.connector]
        self.sequences[body.connector] = sequence + 1
        return b"".join(
            (
                b'{"schema_version":1,"event_id":"',
                self.run,
                b"-",
                phase,
                b"-%d" % n,
                b'","occurred_at":"',
                stamp,
                b'","emitted_at":"',
                stamp,
                b'","source":{"connector":"',
                self.connectors[body.connector],
                b'","sequence":%d}' % sequence,
                body.tail,
            )
        )


# ---------------------------------------------------------------------------------------------------- processes


def generator_main(
    bootstrap: str,
    topic: str,
    run: str,
    pupils: int,
    seed: int,
    commands: Any,
    results: Any,
    abort: Any,
    compression: str | None = None,
    burst_ms: float = 5.0,
    nice: int = 0,
) -> None:
    """The load generator process: build the pool, then run each phase it is sent at its offered rate.

    A phase ends early when `abort` is set (the worker outgrew the memory the benchmark allows it). It stands in
    for connectors on machines of their own, so it sends through aiokafka's batch API, the cheapest client here:
    what it costs this box's CPU is taken from the pipeline being measured. At CPU nice value `nice` it also
    waits for a core behind the pipeline, as a connector elsewhere would not compete for one at all; its flows
    are stamped before they wait, so that wait counts against the decision latency measured.
    """
    if nice:
        # Before any thread starts: Linux sets a nice value per thread, and new threads inherit the creator's.
        os.nice(nice)
    pop, _ = population(pupils, seed)
    pool = flow_pool(pop, 20_000, seed + 1)
    results.put(("ready", len(pool)))
    asyncio.run(_generate(bootstrap, topic, run, seed, pool, commands, results, abort, compression, burst_ms))


async def _generate(
    bootstrap: str,
    topic: str,
    run: str,
    seed: int,
    pool: list[Body],
    commands: Any,
    results: Any,
    abort: Any,
    compression: str | None,
    burst_ms: float,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        client_id="bench-pipeline-generator",
        acks="all",
        enable_idempotence=True,
        compression_type=compression,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    try:
        partitions = len(await producer.partitions_for(topic))
        placed = {body.key: murmur2(body.key) % partitions for body in pool}
        writer = FlowWriter(run)
        size = len(pool)
        pick = random.Random(seed + 2)
        while True:
            command = await loop.run_in_executor(None, commands.get)
            if command is None:
                break
            phase, rate, seconds = command
            tag = phase.encode()
            payload = writer.payload
            sent = 0
            behind = 0
            pending: list[Any] = []
            start = time.perf_counter()
            wall = time.time()
            end = start + seconds
            step = max(1, int(rate * burst_ms / 1000))  # at most `burst_ms` worth per burst
            next_burst = start
            while True:
                now = time.perf_counter()
                if now >= end or abort.is_set():
                    break
                todo = int((now - start) * rate) - sent
                behind = max(behind, todo)
                if todo <= 0 or (now < next_burst and todo < step):
                    # A burst at most every `burst_ms`, unless a whole one is due already (catching up). Without
                    # this wait it sent what was due after every 2 ms sleep: 400 requests a second, not 200.
                    wait = 0.002 if todo <= 0 else next_burst - now
                    await asyncio.sleep(min(wait, end - now))
                    continue
                next_burst = now + burst_ms / 1000
                batches: dict[int, Any] = {}
                for _ in range(min(todo, step)):
                    body = pool[pick.randrange(size)]
                    partition = placed[body.key]
                    batch = batches.get(partition)
                    if batch is None:
                        batch = batches[partition] = producer.create_batch()
                    batch.append(key=body.key, value=payload(body, tag, sent, time.time()), timestamp=None)
                    sent += 1
                for partition, batch in batches.items():
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                if len(pending) > 256:
                    await asyncio.gather(*pending)
                    pending.clear()
            elapsed = time.perf_counter() - start
            await asyncio.gather(*pending)
            results.put(("done", phase, sent, elapsed, time.perf_counter() - start, behind, wall))
    finally:
        await producer.stop()


def collector_main(bootstrap: str, topic: str, partitions: int, out: str, stop: Any, ready: Any) -> None:
    """Reads committed decisions; per decision: receive time, the flow's emitted_at, the record's timestamp."""
    asyncio.run(_collect(bootstrap, topic, partitions, out, stop, ready))


async def _collect(bootstrap: str, topic: str, partitions: int, out: str, stop: Any, ready: Any) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        client_id="bench-pipeline-collector",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=8 * MIB,
    )
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    received, emitted, stamped = array("d"), array("d"), array("d")
    phase, violation = array("b"), array("b")
    parse = datetime.fromisoformat
    marker, id_marker = b'"emitted_at":"', b'"flow_event_id":"'
    verdict = b'"verdict":"violation"'
    ready.set()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50, max_records=20_000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    value = record.value
                    at = value.find(marker) + 14
                    emitted.append(parse(value[at : value.find(b'"', at)].decode()).timestamp())
                    received.append(now)
                    stamped.append(record.timestamp / 1000.0)
                    at = value.find(b"-", value.find(id_marker) + 17) + 1
                    phase.append(value[at])
                    violation.append(verdict in value)
    finally:
        await consumer.stop()
    np.savez(
        out,
        received=np.frombuffer(received, dtype=np.float64),
        emitted=np.frombuffer(emitted, dtype=np.float64),
        stamped=np.frombuffer(stamped, dtype=np.float64),
        phase=np.frombuffer(phase, dtype=np.int8),
        violation=np.frombuffer(violation, dtype=np.int8),
    )


# ---------------------------------------------------------------------------------------------------- probes


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes (empty when it is gone)."""
    found = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                found[name] = int(value.split()[0]) * 1024
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def waited_seconds(pid: int) -> float:
    """Seconds a process's live threads have spent runnable but waiting for a core (0 when gone or not kept).

    From `/proc/<pid>/task/<tid>/schedstat` (its second field, in ns): on a full box the time a process waits for a
    core is what its latency pays, and what its CPU seconds do not show.
    """
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    total = 0
    for tid in threads:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


def box_cpu_seconds() -> float:
    """Busy CPU seconds of the whole box so far (every core; idle and iowait excluded)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def stack_pid(name: str) -> int | None:
    """The pid of a local stack service from its pid file, if it runs."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((Settings().home / "run" / f"{name}.pid").read_text().split()[0])
        if Path(f"/proc/{pid}").exists():
            return pid
    return None


def metric(text: str | None, name: str) -> float | None:
    """The sum of every sample of `name` in a Prometheus exposition (None when it is not there)."""
    if text is None:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rpartition(" ")[2])
            seen = True
    return total if seen else None


def transactions(text: str | None) -> tuple[float, float, float]:
    """The worker's transactions so far: how many, the events they held, their seconds from send to commit."""
    return (
        metric(text, "pupilflow_transaction_events_count") or 0.0,
        metric(text, "pupilflow_transaction_events_sum") or 0.0,
        metric(text, "pupilflow_transaction_seconds_sum") or 0.0,
    )


class Lag:
    """Consumer lag of a group over some topics: end offsets minus the group's committed offsets.

    With `members`, the groups of the workers sharing the partitions, each over the partitions it owns.
    """

    def __init__(self, settings: Settings, group: str, topics: list[str], members: int = 1) -> None:
        bootstrap = settings.kafka_bootstrap.split(",")
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-pipeline-lag")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="bench-pipeline-lag")
        parts = [KafkaTopicPartition(t, p) for t in topics for p in sorted(self.consumer.partitions_for_topic(t) or ())]
        if members == 1:
            self.groups = {group: parts}
        else:
            self.groups = {
                f"{group}-member-{k}": [tp for tp in parts if tp.partition % members == k] for k in range(members)
            }

    def __call__(self) -> int:
        """Messages in the topics not yet committed by the group."""
        behind = 0
        for group, parts in self.groups.items():
            ends = self.consumer.end_offsets(parts)
            done = self.admin.list_group_offsets({group: parts}).get(group, {})
            behind += sum(
                max(0, ends[tp] - (done[tp].offset if tp in done and done[tp].offset >= 0 else 0)) for tp in ends
            )
        return behind

    def close(self) -> None:
        """Close the clients."""
        self.consumer.close()
        self.admin.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> float:
    """Poll `check` until true; returns seconds waited, raises SystemExit after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(values: np.ndarray[Any, Any]) -> dict[str, float]:
    """p50, p99, p99.9 and max of millisecond values."""
    if len(values) == 0:
        return {"p50": float("nan"), "p99": float("nan"), "p99.9": float("nan"), "max": float("nan")}
    p50, p99, p999 = np.percentile(values, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p99.9": float(p999), "max": float(values.max())}


def longest_gaps(times: np.ndarray[Any, Any], top: int = 3) -> list[tuple[float, float]]:
    """The `top` longest gaps between consecutive times (seconds): (gap in ms, time it ended), longest first.

    Applied to the decisions' record timestamps, set as the worker starts each transaction: a long gap is a
    stretch in which the worker started none, stalled or waiting on the one before. One such stall can set a
    phase's p99 (docs/streaming.md, "The broker's collector").
    """
    ordered = np.unique(times)
    if len(ordered) < 2:
        return []
    gaps = np.diff(ordered)
    return [(float(gaps[i]) * 1000, float(ordered[i + 1])) for i in np.argsort(-gaps, kind="stable")[:top]]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two points)."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return float(statistics.linear_regression(xs, ys).slope) if len(set(xs)) > 1 else 0.0


# ---------------------------------------------------------------------------------------------------- the run


def gc_pauses(text: str | None) -> dict[str, tuple[float, float]]:
    """The worker's garbage-collector pauses so far: generation -> (collections, seconds paused)."""
    out: dict[str, tuple[float, float]] = {}
    for line in (text or "").splitlines():
        for kind in ("count", "sum"):
            head = f'pupilflow_gc_pause_seconds_{kind}{{generation="'
            if line.startswith(head):
                generation = line[len(head)]
                count, total = out.get(generation, (0.0, 0.0))
                value = float(line.rpartition(" ")[2])
                out[generation] = (value, total) if kind == "count" else (count, value)
    return out


@dataclass
class PhaseResult:
    """What one phase offered and what came out."""

    name: str
    tag: str
    rate: int
    seconds: float
    sent: int = 0
    offered: float = 0.0
    behind: int = 0
    start: float = 0.0
    end: float = 0.0
    drained: float = 0.0
    backlog: int = 0
    lag: list[tuple[float, int]] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    waited: dict[str, float] = field(default_factory=dict)
    """Seconds each process waited for a core during the phase."""
    wall_cpu: float = 0.0
    open_flows: float | None = None


def bench_settings(args: argparse.Namespace, run: str, home: Path) -> Settings:
    """Settings of this run: its own topics, groups, database, ports and home."""
    base = Settings()
    server, _ = split_dsn(base.clickhouse_dsn)
    prefix = f"bench-pipe-{run}"
    kinds = (
        "flows", "facts", "decisions", "violations", "dlq", "checkpoints", "changelog", "chain_heads", "legs",
        "shared_facts", "member_changelog",
    )  # fmt: skip
    return base.model_copy(
        update={
            "home": home,
            "clickhouse_dsn": f"{server.rstrip('/')}/pupilflow_bench_{run}",
            "consumer_group": f"{prefix}-worker",
            "sink_group": f"{prefix}-sink",
            "worker_web_port": free_port(),
            "sink_metrics_port": free_port(),
            "ingest_port": free_port(),
            "sink_batch_max_seconds": 1.0,
            "policy_dir": (ROOT / "policy") if not base.policy_dir.is_absolute() else base.policy_dir,
            "topics": Topics.model_validate({**{k: f"{prefix}.{k}" for k in kinds}, "partitions": args.partitions}),
            "worker_members": args.members,
        }
    )


def offline_mix(pop: Population, facts: list[Event], pool: list[Body], sample: int) -> tuple[float, dict[str, int]]:
    """Judge a sample of the pool offline (the worker's evaluator and state): violation share and by template."""
    from schemas.policy import load_policy
    from streams.evaluate import evaluate
    from streams.state import State

    policy = load_policy(ROOT / "policy")
    state = State(cache_size=len(pop.pupils))
    for fact in facts:
        state.apply(fact)  # type: ignore[arg-type]
    writer = FlowWriter("check")
    wrong: dict[str, int] = {}
    violations = 0
    now = time.time()
    for n, body in enumerate(pool[:sample]):
        decision = evaluate(parse_flow(writer.payload(body, b"C", n, now)), state, policy)
        bad = decision.verdict == "violation"
        violations += bad
        template = TEMPLATES[body.template]
        if bad != template.violation:
            key = f"{template.name}: {decision.verdict} {','.join(decision.reasons[:2])}"
            wrong[key] = wrong.get(key, 0) + 1
    return violations / max(1, min(sample, len(pool))), wrong


class Pipeline:
    """The children, probes and generator of one run."""

    def __init__(self, settings: Settings, args: argparse.Namespace, run: str) -> None:
        self.settings = settings
        self.args = args
        self.run = run
        self.worker: Child | None = None
        """The worker, or member 0 of `--members`."""
        self.others: list[Child] = []
        """Members 1 to N-1 of `--members`."""
        self.ports = [settings.worker_web_port]
        self.sink: Child | None = None
        self.ctx = mp.get_context("spawn")
        self.pids: dict[str, int] = {}
        self.abort = self.ctx.Event()

    def worker_metrics(self) -> str | None:
        """The worker's /metrics text (every member's, one after the other: `metric` sums their samples)."""
        texts = [http_get(f"http://127.0.0.1:{port}/metrics") for port in self.ports]
        return None if any(t is None for t in texts) else "\n".join(t for t in texts if t is not None)

    def worker_rss(self) -> dict[str, int]:
        """VmRSS/VmHWM of the worker (of the largest member: each has the budget of one worker)."""
        found = [proc_status(pid) for name, pid in self.pids.items() if name.startswith("worker")]
        return {key: max(f.get(key, 0) for f in found) for key in ("VmRSS", "VmHWM")}

    def start_members(self, home: Path) -> None:
        """Members 1 to N-1 of `--members`, each with its own /metrics port."""
        for number in range(1, self.settings.worker_members):
            mine = self.settings.model_copy(update={"worker_member": number, "worker_web_port": free_port()})
            child = children.worker(mine, home / f"worker-{number}.log").start()
            assert child.proc is not None
            self.others.append(child)
            self.ports.append(mine.worker_web_port)
            self.pids[f"worker-{number}"] = child.proc.pid

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of every process we know, and of the whole box."""
        found = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        found["box"] = box_cpu_seconds()
        return found

    def waited(self) -> dict[str, float]:
        """Seconds so far each process we know has waited for a core (`waited_seconds`)."""
        return {name: waited_seconds(pid) for name, pid in self.pids.items()}


@dataclass
class Restart:
    """The worker killed with SIGKILL and started again: how long it took to serve again and what it restored."""

    seconds: float
    hwm: int
    restored_keys: float | None
    open_flows: float | None


def restart_worker(pipe: Pipeline, home: Path, timeout: float) -> Restart:
    """Kill the worker with SIGKILL, start another on the same state, time it until it serves (restore done)."""
    assert pipe.worker is not None
    pipe.worker.stop(signal.SIGKILL)
    started = time.perf_counter()
    pipe.worker = children.worker(pipe.settings, home / "worker-restarted.log").start(timeout=timeout)
    seconds = time.perf_counter() - started
    assert pipe.worker.proc is not None
    pipe.pids["worker"] = pipe.worker.proc.pid
    text = pipe.worker_metrics()
    hwm = pipe.worker_rss().get("VmHWM", 0)
    return Restart(seconds, hwm, metric(text, "pupilflow_restored_state_keys"), metric(text, "pupilflow_open_flows"))


def run_phase(
    pipe: Pipeline,
    phase: PhaseResult,
    commands: Any,
    results: Any,
    lag: Lag,
    sink_lag: Lag,
    drain_timeout: float,
    log: Callable[..., None],
) -> None:
    """Offer `phase.rate` flows/s for `phase.seconds`, then drain (at most `drain_timeout`), sampling as it goes.

    The worker's RSS is sampled every second, its consumer lag (and the sink's) every 10 s.
    """
    cpu0, waited0, wall0 = pipe.cpu(), pipe.waited(), time.monotonic()
    gc0 = gc_pauses(pipe.worker_metrics())
    txn0 = transactions(pipe.worker_metrics())
    commands.put((phase.tag, phase.rate, phase.seconds))
    last_decisions = metric(pipe.worker_metrics(), "pupilflow_decisions_total") or 0.0
    next_lag = wall0 + 10
    done: tuple[Any, ...] | None = None
    drain_until: float | None = None
    log(f"  {'t':>5} {'lag':>9} {'decisions/s':>11} {'worker RSS':>10} {'open flows':>10} {'sink lag':>9}")
    while True:
        if done is None:
            with contextlib.suppress(queue.Empty):
                message = results.get(timeout=1.0)
                if message[0] == "done":
                    done = message
                    drain_until = time.monotonic() + drain_timeout
        else:
            time.sleep(1.0)
        now = time.monotonic()
        rss = pipe.worker_rss().get("VmRSS", 0)
        phase.rss.append((now - wall0, rss))
        if done is not None:
            remaining = lag()
            if remaining == 0 or (drain_until is not None and now >= drain_until):
                phase.backlog = remaining
                break
        if rss > pipe.args.max_worker_rss_mib * MIB and not pipe.abort.is_set():
            pipe.abort.set()
            log(f"  worker RSS {rss / MIB:.0f} MiB > --max-worker-rss-mib: ending the phase early")
        if now >= next_lag:
            next_lag += 10
            text = pipe.worker_metrics()
            decisions = metric(text, "pupilflow_decisions_total")
            shown = "n/a" if decisions is None else f"{(decisions - last_decisions) / 10:,.0f}"
            flows_open = metric(text, "pupilflow_open_flows")
            value = lag()
            phase.lag.append((now - wall0, value))
            log(
                f"  {now - wall0:5.0f} {value:9,} {shown:>11} {rss / MIB:8.0f}Mi "
                f"{'n/a' if flows_open is None else f'{flows_open:,.0f}':>10} {sink_lag():9,}"
                + ("" if done is None else "  (draining)")
            )
            last_decisions = last_decisions if decisions is None else decisions
    _, _, phase.sent, elapsed, _, phase.behind, wall = done
    phase.start, phase.end, phase.offered = wall, wall + elapsed, phase.sent / elapsed
    phase.drained = time.monotonic() - (drain_until or 0.0) + drain_timeout
    cpu1 = pipe.cpu()
    phase.cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    # Threads that ended during the phase take their counts with them: never below nothing.
    phase.waited = {k: max(0.0, v - waited0.get(k, 0.0)) for k, v in pipe.waited().items()}
    phase.wall_cpu = time.monotonic() - wall0
    phase.open_flows = metric(pipe.worker_metrics(), "pupilflow_open_flows")
    caught = (
        f"worker caught up {phase.drained:.1f}s after the last flow"
        if phase.backlog == 0
        else f"worker still {phase.backlog:,} messages behind {drain_timeout:.0f}s after the last flow (gave up)"
    )
    log(
        f"  offered {phase.offered:,.0f} flows/s ({phase.sent:,} in {elapsed:.1f}s; generator at most "
        f"{phase.behind:,} behind); {caught}"
    )
    count, events, seconds = (b - a for a, b in zip(txn0, transactions(pipe.worker_metrics()), strict=True))
    if count:
        log(
            f"  worker transactions: {count:,.0f} ({count / phase.wall_cpu:,.1f}/s), {events / count:,.1f} events "
            f"and {seconds / count * 1000:,.1f} ms from send to commit on average"
        )
    gc1 = gc_pauses(pipe.worker_metrics())
    pauses = {g: (n - gc0.get(g, (0.0, 0.0))[0], t - gc0.get(g, (0.0, 0.0))[1]) for g, (n, t) in gc1.items()}
    if pauses:
        log(
            "  worker garbage collector: "
            + ", ".join(f"generation {g} {n:,.0f}x, {t * 1000:,.0f} ms" for g, (n, t) in sorted(pauses.items()))
        )


def main() -> int:
    """Set up, pre-load, run the phases, measure, report, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000, help="sustained phase: offered flows/s")
    parser.add_argument("--seconds", type=float, default=300, help="sustained phase: duration")
    parser.add_argument("--latency-rate", type=int, default=2000, help="latency phase: offered flows/s")
    parser.add_argument("--latency-seconds", type=float, default=60, help="latency phase: duration")
    parser.add_argument("--pupils", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--members", type=int, default=1, help="workers sharing the partitions (the split topology); 1: one worker"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20s at 1,000/s, then 20s at 3,000/s")
    parser.add_argument(
        "--drain-timeout", type=float, default=120, help="after each phase, wait at most this long for the worker"
    )
    parser.add_argument(
        "--max-worker-rss-mib", type=int, default=6144, help="end a phase early if the worker grows past this"
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=0,
        help="first offer the latency phase's rate this long, unreported (a just-started broker's JVM warming up)",
    )
    parser.add_argument(
        "--burst-ms",
        type=float,
        default=5.0,
        help="the load generator sends what is due at most every this many ms (a connector's send batch)",
    )
    parser.add_argument(
        "--generator-nice",
        type=int,
        default=0,
        help="CPU nice value of the load generator (connectors on machines of their own would not compete for"
        " this box's cores); 10 made no difference worth keeping (docs/streaming.md)",
    )
    parser.add_argument(
        "--compression",
        choices=("none", "gzip"),
        default="none",
        help="what the load generator compresses flows with; none on one box, as the worker's output (gzip costs"
        " the generator and the worker CPU for bytes that never leave the machine)",
    )
    parser.add_argument(
        "--restart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="at the end, kill -9 the worker and time a new one's restore, with its peak RSS",
    )
    parser.add_argument("--restart-timeout", type=float, default=900, help="how long the restore may take")
    parser.add_argument("--keep", action="store_true", help="keep the topics, database and home afterwards")
    args = parser.parse_args()
    if args.quick:
        args.latency_rate, args.latency_seconds, args.rate, args.seconds = 1000, 20, 3000, 20

    def log(*parts: object) -> None:
        print(*parts, flush=True)

    run = uuid.uuid4().hex[:8]
    home = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{run}-"))
    settings = bench_settings(args, run, home)
    log(
        f"pipeline benchmark {run}: Kafka {settings.kafka_bootstrap}, ClickHouse {settings.clickhouse_dsn}, "
        f"topics bench-pipe-{run}.* ({args.partitions} partitions), home {home}; {os.cpu_count()} cores; "
        f"flows compressed: {args.compression}"
    )
    ensure_topics(settings)
    client = connect(settings.clickhouse_dsn)
    migrate(client)
    pipe = Pipeline(settings, args, run)
    for name in ("kafka", "clickhouse"):
        pid = stack_pid(name)
        if pid is not None:
            pipe.pids[name] = pid
    pipe.pids["bench"] = os.getpid()

    t0 = time.perf_counter()
    pop, facts = population(args.pupils, args.seed)
    pool = flow_pool(pop, 4000, args.seed + 1)
    share, wrong = offline_mix(pop, facts, pool, 4000)
    log(
        f"population: {len(pop.pupils):,} pupils, {len(facts):,} facts; flow mix judged offline: "
        f"{share:.1%} violations ({time.perf_counter() - t0:.1f}s)"
    )
    for what, count in sorted(wrong.items(), key=lambda kv: -kv[1]):
        log(f"  unexpected verdict ({count}): {what}")

    generator: Any = None
    collector: Any = None
    commands: Any = pipe.ctx.Queue()
    results: Any = pipe.ctx.Queue()
    stop = pipe.ctx.Event()
    collected = home / "decisions.npz"
    phases: list[PhaseResult] = []
    ok = False
    try:
        pipe.worker = children.worker(settings, home / "worker.log").start()
        assert pipe.worker.proc is not None
        pipe.pids["worker"] = pipe.worker.proc.pid
        pipe.start_members(home)
        time.sleep(2.0)
        idle = pipe.worker_rss()
        log(f"worker started (pid {pipe.worker.proc.pid}); idle RSS {idle.get('VmRSS', 0) / MIB:.0f} MiB")

        started = time.perf_counter()
        with Emitter(settings.kafka_bootstrap, settings.topics, client_id="bench-pipeline-facts") as emitter:
            emitter.emit_all(facts)
        emitted_s = time.perf_counter() - started
        lag = Lag(settings, settings.consumer_group, [settings.topics.flows, settings.topics.facts], args.members)
        waited = wait_for(lambda: lag() == 0, 900, "the worker to judge the pre-loaded facts")
        time.sleep(2.0)
        loaded = pipe.worker_rss()
        state_rss = loaded.get("VmRSS", 0) - idle.get("VmRSS", 0)
        log(
            f"pre-load: {len(facts):,} facts emitted in {emitted_s:.1f}s, the worker had them {waited:.1f}s later; "
            f"worker RSS {loaded.get('VmRSS', 0) / MIB:.0f} MiB (state {state_rss / MIB:.0f} MiB)"
        )

        pipe.sink = children.sink(settings, home / "sink.log").start()
        assert pipe.sink.proc is not None
        pipe.pids["sink"] = pipe.sink.proc.pid
        sink_lag = Lag(settings, settings.sink_group, [settings.topics.decisions, settings.topics.facts])
        waited = wait_for(lambda: sink_lag() == 0, 900, "the sink to land the pre-loaded facts")
        log(f"sink started (pid {pipe.sink.proc.pid}); the facts were in ClickHouse {waited:.1f}s later")

        ready = pipe.ctx.Event()
        collector = pipe.ctx.Process(
            target=collector_main,
            args=(settings.kafka_bootstrap, settings.topics.decisions, args.partitions, str(collected), stop, ready),
            daemon=True,
        )
        collector.start()
        generator = pipe.ctx.Process(
            target=generator_main,
            args=(
                settings.kafka_bootstrap,
                settings.topics.flows,
                run,
                args.pupils,
                args.seed,
                commands,
                results,
                pipe.abort,
                None if args.compression == "none" else args.compression,
                args.burst_ms,
                args.generator_nice,
            ),
            daemon=True,
        )
        generator.start()
        pipe.pids["collector"], pipe.pids["generator"] = collector.pid, generator.pid
        message = results.get(timeout=300)
        ready.wait(60)
        log(
            f"generator ready with {message[1]:,} pre-serialised flows (nice {args.generator_nice}); "
            "collector reading decisions"
        )

        phases = [
            PhaseResult("latency", "L", args.latency_rate, args.latency_seconds),
            PhaseResult("sustained", "S", args.rate, args.seconds),
        ]
        if args.warmup_seconds > 0:
            # Flows like the latency phase's, judged and landed as any, left out of the report: a broker whose JVM
            # has just started spends its first minutes compiling (Kafka at 55-60% of a core instead of 20-40%).
            warmup = PhaseResult("warm-up (not reported)", "W", args.latency_rate, args.warmup_seconds)
            log(f"\nphase {warmup.name}: {warmup.rate:,} flows/s for {warmup.seconds:g}s")
            run_phase(pipe, warmup, commands, results, lag, sink_lag, args.drain_timeout, log)
        for phase in phases:
            log(f"\nphase {phase.name}: {phase.rate:,} flows/s for {phase.seconds:g}s")
            run_phase(pipe, phase, commands, results, lag, sink_lag, args.drain_timeout, log)
        commands.put(None)
        generator.join(60)
        # Everything decided should now reach the collector and ClickHouse.
        with contextlib.suppress(SystemExit):
            wait_for(lambda: sink_lag() == 0, args.drain_timeout, "the sink to land every decision")
        time.sleep(2.0)
        stop.set()
        collector.join(120)
        final = pipe.worker_rss()
        restarted = None
        if args.restart:
            log("\nworker killed with SIGKILL and started again (restores its state from the changelog)")
            restarted = restart_worker(pipe, home, args.restart_timeout)
        report(pipe, client, phases, collected, idle, loaded, final, log, restarted)
        ok = True
    finally:
        stop.set()
        for proc in (generator, collector):
            if proc is not None and proc.is_alive():
                proc.terminate()
                proc.join(10)
        for child in (pipe.sink, pipe.worker, *pipe.others):
            if child is not None:
                code = child.stop()
                if code not in (0, None):
                    log(f"`pupilflow {' '.join(child.args)}` exited {code}:\n{child.tail(15)}")
        if not ok:
            for child in (pipe.worker, *pipe.others, pipe.sink):
                if child is not None:
                    log(f"--- {child.log_file}:\n{child.tail(20)}")
        if args.keep:
            log(f"kept: topics bench-pipe-{run}.*, database {client.database}, home {home}")
        else:
            cleanup(settings, client, home)
    return 0


def cleanup(settings: Settings, client: Any, home: Path) -> None:
    """Drop the database, delete the topics and consumer groups, remove the home."""
    with contextlib.suppress(Exception):
        client.command(f"DROP DATABASE IF EXISTS {client.database}")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="bench-pipeline-admin")
    try:
        t = settings.topics
        names = [t.flows, t.facts, t.decisions, t.violations, t.dlq, t.checkpoints, t.changelog, t.chain_heads]
        names += [t.legs, t.shared_facts, t.member_changelog]
        existing = set(admin.list_topics())
        with contextlib.suppress(Exception):
            admin.delete_topics([n for n in names if n in existing], timeout_ms=30_000)
        with contextlib.suppress(Exception):
            members = [f"{settings.consumer_group}-member-{k}" for k in range(settings.worker_members)]
            admin.delete_groups([settings.consumer_group, settings.sink_group, *members])
    finally:
        admin.close()
    shutil.rmtree(home, ignore_errors=True)


def exactness(decisions: int, flows: int) -> str:
    """How the decisions read compare with the flows sent."""
    if decisions == flows:
        return "exactly one each"
    if decisions < flows:
        return f"{flows - decisions:,} flows not decided when the measurement ended"
    return f"{decisions - flows:,} MORE decisions than flows"


def windows(times: np.ndarray[Any, Any], start: float, end: float, width: float = 10.0) -> list[int]:
    """Counts of `times` in consecutive windows of `width` seconds from `start` up to `end`."""
    edges = np.arange(start, end + width, width)
    counts, _ = np.histogram(times, bins=edges)
    return [int(c) for c in counts]


def report(
    pipe: Pipeline,
    client: Any,
    phases: list[PhaseResult],
    collected: Path,
    idle: dict[str, int],
    loaded: dict[str, int],
    final: dict[str, int],
    log: Callable[..., None],
    restarted: Restart | None = None,
) -> None:
    """Print every measurement and the PASS/FAIL table."""
    data = np.load(collected)
    received, emitted, stamped = data["received"], data["emitted"], data["stamped"]
    tags, violation = data["phase"], data["violation"]
    checks: list[tuple[str, str, str, bool]] = []
    idle_rss, loaded_rss = idle.get("VmRSS", 0), loaded.get("VmRSS", 0)
    state_rss = loaded_rss - idle_rss
    peak_sampled = max((r for p in phases for _, r in p.rss), default=0)
    hwm = final.get("VmHWM", 0)
    for phase in phases:
        mine = tags == ord(phase.tag)
        count = int(mine.sum())
        e2e = (received[mine] - emitted[mine]) * 1000
        kafka = (stamped[mine] - emitted[mine]) * 1000
        r, k = percentiles(e2e), percentiles(kafka)
        log(f"\n== {phase.name}: offered {phase.offered:,.0f} flows/s (target {phase.rate:,}) for {phase.seconds:g}s")
        log(
            f"decisions: {count:,} for {phase.sent:,} flows sent "
            f"({exactness(count, phase.sent)}); "
            f"violations {int(violation[mine].sum()):,} ({violation[mine].mean() if count else 0:.1%})"
        )
        log(
            f"decision latency, emitted_at -> read committed:   p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms  "
            f"p99.9 {r['p99.9']:7.1f} ms  max {r['max']:7.1f} ms"
        )
        log(
            f"decision latency, emitted_at -> record timestamp: p50 {k['p50']:7.1f} ms  p99 {k['p99']:7.1f} ms  "
            f"p99.9 {k['p99.9']:7.1f} ms  max {k['max']:7.1f} ms"
        )
        gaps = longest_gaps(stamped[mine])
        if gaps:
            log(
                "longest gaps between the worker's transactions (record timestamps): "
                + ", ".join(f"{ms:.0f} ms to +{end - phase.start:.1f}s" for ms, end in gaps)
            )
        run_tag = f"{pipe.run}-{phase.tag}-%"
        rows = client.query(
            "SELECT count(), quantiles(0.5, 0.99)(dateDiff('millisecond', emitted_at, inserted_at)),"
            " max(dateDiff('millisecond', emitted_at, inserted_at)) FROM decisions WHERE flow_event_id LIKE {t:String}",
            parameters={"t": run_tag},
        ).result_rows[0]
        landed, (ch50, ch99), chmax = int(rows[0]), rows[1], rows[2]
        log(
            f"visible in ClickHouse, emitted_at -> inserted_at: p50 {ch50:7.0f} ms  p99 {ch99:7.0f} ms  "
            f"max {chmax} ms ({landed:,} rows)"
        )
        if count:
            first, last = float(emitted[mine].min()), float(received[mine].max())
            per_window = windows(received[mine], phase.start, max(last, phase.end))
            overall = count / (last - phase.start)
            shown = ", ".join(f"{c / 10:,.0f}" for c in per_window[:40]) + (", ..." if len(per_window) > 40 else "")
            log(f"decisions/s per 10 s window (by receive time): {shown}")
            log(
                f"throughput: {overall:,.0f} decisions/s from the first flow to the last decision "
                f"({last - first:.1f}s; offered over {phase.end - phase.start:.1f}s)"
            )
        else:
            overall = 0.0
        offered = [(t, float(v)) for t, v in phase.lag if t <= phase.seconds + 1]
        half = [(t, v) for t, v in offered if t >= phase.seconds / 2]
        lag_slope = slope(half if len(half) >= 2 else offered)
        samples = len(half) if len(half) >= 2 else len(offered)
        log(f"worker consumer lag every 10 s: {', '.join(f'{v:,}' for _, v in phase.lag)}")
        log(
            f"lag slope over the second half: {lag_slope:+,.1f} messages/s ({samples} samples); "
            + (
                f"caught up {phase.drained:.1f}s after the last flow"
                if phase.backlog == 0
                else f"{phase.backlog:,} still behind when the drain gave up"
            )
        )
        rss_values = [r for _, r in phase.rss]
        if rss_values:
            minutes = max(1e-9, (phase.rss[-1][0] - phase.rss[0][0]) / 60)
            log(
                f"worker RSS: start {rss_values[0] / MIB:.0f} MiB, peak {max(rss_values) / MIB:.0f} MiB, end "
                f"{rss_values[-1] / MIB:.0f} MiB ({(rss_values[-1] - rss_values[0]) / MIB / minutes:+.1f} MiB/min); "
                f"open flows at the end {phase.open_flows or 0:,.0f}"
            )
        cpu = phase.cpu
        known = sum(v for k, v in cpu.items() if k != "box")
        log(
            f"CPU seconds over {phase.wall_cpu:.0f}s of wall time (2 cores = {2 * phase.wall_cpu:.0f} core-seconds); "
            "waiting for a core: its threads' time runnable without one, summed, per second of wall time:"
        )
        members = sorted(k for k in cpu if k.startswith("worker-"))
        for name in ("worker", *members, "sink", "generator", "collector", "bench", "kafka", "clickhouse"):
            if name in cpu:
                waited = phase.waited.get(name)
                log(
                    f"  {name:<22} {cpu[name]:7.1f}s  {cpu[name] / phase.wall_cpu:5.0%} of a core"
                    + ("" if waited is None else f"; waiting for a core {waited / phase.wall_cpu:5.0%}")
                )
        rest = cpu["box"] - known
        log(f"  {'rest of the box':<22} {rest:7.1f}s  {rest / phase.wall_cpu:5.0%} of a core")
        log(f"  {'whole box':<22} {cpu['box']:7.1f}s  {cpu['box'] / phase.wall_cpu:5.0%} of a core")
        if phase.tag == "L":
            checks.append(
                (
                    f"decision p99 at {phase.rate:,}/s (read committed)",
                    "<= 100 ms",
                    f"{r['p99']:.1f} ms",
                    r["p99"] <= LATENCY_P99_MS,
                )
            )
            checks.append(
                ("  same, to record timestamp", "<= 100 ms", f"{k['p99']:.1f} ms", k["p99"] <= LATENCY_P99_MS)
            )
            checks.append(
                (
                    f"visible in ClickHouse p99 at {phase.rate:,}/s",
                    "<= 2000 ms",
                    f"{ch99:.0f} ms",
                    ch99 <= VISIBLE_P99_MS,
                )
            )
        else:
            growing = lag_slope > 0.01 * phase.rate
            checks.append(
                (
                    f"sustained {phase.rate:,}/s for {phase.seconds:g}s",
                    f">= {phase.rate:,} decisions/s",
                    f"{overall:,.0f}/s (offered {phase.offered:,.0f})",
                    overall >= phase.rate * 0.99
                    and phase.offered >= phase.rate * 0.99
                    and count == phase.sent
                    and phase.backlog == 0,
                )
            )
            checks.append(
                (
                    "  consumer lag not growing",
                    f"slope <= {0.01 * phase.rate:,.0f}/s",
                    f"{lag_slope:+,.1f}/s over {samples} samples" if samples >= 2 else "too few samples",
                    samples >= 2 and not growing,
                )
            )
    peak = max(peak_sampled, hwm)
    budget = RSS_BUDGET_MIB * MIB + state_rss
    log(
        f"\nworker RSS: idle {idle_rss / MIB:.0f} MiB, after pre-load {loaded_rss / MIB:.0f} MiB (state "
        f"{state_rss / MIB:.0f} MiB), peak {peak / MIB:.0f} MiB (VmHWM {hwm / MIB:.0f}), "
        f"final {final.get('VmRSS', 0) / MIB:.0f} MiB"
    )
    checks.append(
        ("worker peak RSS", f"<= {RSS_BUDGET_MIB} + {state_rss / MIB:.0f} MiB", f"{peak / MIB:.0f} MiB", peak <= budget)
    )
    if restarted is not None:
        keys, flows = restarted.restored_keys or 0, restarted.open_flows or 0
        log(
            f"worker restart after kill -9: serving again after {restarted.seconds:.1f}s, {keys:,.0f} changelog keys "
            f"restored, {flows:,.0f} flows open; peak RSS (VmHWM) {restarted.hwm / MIB:.0f} MiB"
        )
        checks.append(
            (
                "  same, restarting after kill -9",
                f"<= {RSS_BUDGET_MIB} + {state_rss / MIB:.0f} MiB",
                f"{restarted.hwm / MIB:.0f} MiB ({flows:,.0f} open flows, {restarted.seconds:.0f}s)",
                restarted.hwm <= budget,
            )
        )
    log("\n| target | limit | measured | result |\n|---|---|---|---|")
    for what, limit, measured, passed in checks:
        log(f"| {what} | {limit} | {measured} | {'PASS' if passed else 'FAIL'} |")


if __name__ == "__main__":
    sys.exit(main())
