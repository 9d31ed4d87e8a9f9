"""Schemathesis over the running ingest server's own OpenAPI document: no 5xx, and every answer as documented."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from producers.ingest import TokenStore
from pupilflow import children
from pupilflow.topics import ensure_topics
from schemas.settings import Settings, Topics

from .conftest import free_port, running

pytestmark = pytest.mark.kafka

_TOKEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def ingest_schema(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The OpenAPI document of an ingest server on topics of its own, with a token for connector `fuzz`."""
    prefix = f"{kafka.topics.flows.split('.')[0]}-openapi-{uuid.uuid4().hex[:6]}"
    names = {name: f"{prefix}.{name}" for name in ("flows", "facts", "decisions", "violations", "dlq", "checkpoints")}
    own = kafka.model_copy(
        update={
            "home": tmp_path_factory.mktemp("ingest-openapi"),
            "ingest_port": free_port(),
            "topics": Topics(**names, partitions=1),
        }
    )
    ensure_topics(own)
    tokens = TokenStore.in_home(own.home)
    _TOKEN["value"] = tokens.issue("fuzz")
    tokens.close()
    for _ in running(children.ingest(own, own.home / "ingest.log")):
        yield schemathesis.openapi.from_url(f"http://127.0.0.1:{own.ingest_port}/openapi.json")


OPERATIONS = [("POST", "/v1/events"), ("POST", "/v1/events/batch"), ("GET", "/healthz"), ("GET", "/readyz")]


def test_every_operation_of_the_document_is_exercised(ingest_schema: Any) -> None:
    documented = {(op.ok().method.upper(), op.ok().path) for op in ingest_schema.get_all_operations()}
    assert documented == set(OPERATIONS)


# `schemathesis.pytest.from_fixture` does not run on pytest 9 (it reads a removed private attribute), so each
# operation's Hypothesis strategy is driven from an ordinary parametrized test instead.
# Negative mode needs something to break: the GET operations take no input at all.
@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS]
    + [(method, path, GenerationMode.NEGATIVE) for method, path in OPERATIONS if method == "POST"],
)
def test_no_input_makes_the_server_fail(ingest_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    headers = {"Authorization": f"Bearer {_TOKEN['value']}"}

    # Few examples: each is a real HTTP round trip (a Kafka delivery when valid); enough to find a 5xx.
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=ingest_schema[path][method].as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        # Every default check (no 5xx, documented status codes and bodies, invalid input refused) but one:
        # cross-field rules (a consent's scope must name a purpose) are beyond JSON Schema, so a schema-valid
        # event may rightly be a 422.
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    check()
