"""Faust wiring: read flows, validate, decide, and send decisions, violations and dead letters onward.

The wiring is thin on purpose: validation is `schemas.events.parse_event`, the verdict is the `decide`
function passed in, and everything else is Kafka plumbing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from schemas.decisions import DeadLetter, Decision, Stage
from schemas.events import DataFlow, parse_event
from schemas.settings import Settings
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

Decide = Callable[[DataFlow, datetime], Decision]
"""Turns a valid flow (and the time of deciding) into its decision."""


def dead_letter(message: Any, error: str, stage: Stage = "validate") -> DeadLetter:
    """Wrap a Kafka message that could not be used, with the reason and where it came from."""
    value = message.value if isinstance(message.value, bytes) else str(message.value).encode()
    key = message.key.decode("utf-8", "backslashreplace") if isinstance(message.key, bytes) else None
    return DeadLetter(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=key,
        raw=value.decode("utf-8", "backslashreplace"),
        error=error,
        received_at=datetime.now(UTC),
        stage=stage,
    )


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field path, so a connector author can fix the event."""
    parts = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"]) or "<event>"
        parts.append(f"{path}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def build_app(settings: Settings, decide: Decide, metrics: WorkerMetrics) -> faust.App:
    """The faust app for one worker process."""
    # faust uses the app id as the consumer group id and as the prefix of its internal topics.
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.topics.partitions,
        # Topics are created up front by `pupilflow topics`, with explicit partition counts.
        topic_allow_declare=False,
        topic_disable_leader=True,
        store="memory://",
        datadir=str(settings.home / "worker"),
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        web_port=settings.worker_web_port,
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
    )
    flows = app.topic(settings.topics.flows, value_type=bytes, key_type=bytes)
    decisions = app.topic(settings.topics.decisions, value_type=bytes, key_type=bytes)
    violations = app.topic(settings.topics.violations, value_type=bytes, key_type=bytes)
    dlq = app.topic(settings.topics.dlq, value_type=bytes, key_type=bytes)

    async def send_dead_letter(message: Any, error: str) -> None:
        letter = dead_letter(message, error)
        await dlq.send(key=message.key, value=letter.model_dump_json().encode())
        metrics.dead_letters.labels(stage=letter.stage).inc()
        log.warning("dead letter %s[%s]@%s: %s", message.topic, message.partition, message.offset, error)

    async def judge_one(message: Any) -> None:
        try:
            flow = parse_event(message.value)
        except ValidationError as exc:
            await send_dead_letter(message, describe_validation_error(exc))
            return
        except (ValueError, UnicodeDecodeError) as exc:
            await send_dead_letter(message, f"unreadable event: {exc}")
            return
        if not isinstance(flow, DataFlow):
            await send_dead_letter(message, f"a {flow.kind!r} event on the flows topic")
            return
        metrics.events_in.labels(kind="flow").inc()
        decision = decide(flow, datetime.now(UTC))
        payload = decision.to_json_bytes()
        await decisions.send(key=flow.partition_key(), value=payload)
        if decision.verdict == "violation":
            await violations.send(key=flow.partition_key(), value=payload)
            metrics.violations.labels(reason=decision.reasons[0] if decision.reasons else "UNSPECIFIED").inc()
        metrics.decisions.labels(verdict=decision.verdict).inc()
        metrics.decision_latency.observe(max(0.0, (decision.decided_at - flow.emitted_at).total_seconds()))

    @app.agent(flows, name="judge-flows")
    async def judge(stream: Any) -> None:
        # Acks are manual: faust would otherwise ack (and later commit) a message whose handling raised.
        async for event in stream.noack().events():
            try:
                await judge_one(event.message)
            except Exception as exc:
                # A violation is a value; an exception here is a bug or an outage. Stop the worker loudly and
                # leave the message unacknowledged, so a fixed worker judges it; faust would restart the agent
                # past it.
                log.critical("judging %s failed; stopping the worker", event.message.tp, exc_info=True)
                await app.crash(exc)
                raise
            event.ack()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; Prometheus' text format is ASCII anyway.
        return web.bytes(
            generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
        )

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    del judge, metrics_page, health_page  # registered on the app by the decorators
    return app
