"""The ingest API's HTTP contract, on a fake emitter: auth, error shapes, size limits, idempotence, delivery."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

# Starlette 1.x warns (at import) that it prefers `httpx2` to the `httpx` we depend on; third-party, harmless.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

from producers.ingest import SeenStore, TokenStore, create_app
from producers.ingest.validation import MAX_BATCH_EVENTS
from schemas.errors import ServiceUnavailable
from schemas.events import Event, Source
from streams import builders as b


class FakeEmitter:
    """Queues like the emitter; `delivered` holds only what a successful flush confirmed."""

    def __init__(self) -> None:
        self.queued: list[Event] = []
        self.delivered: list[Event] = []
        self.down = False

    def emit(self, event: Event) -> None:
        self.queued.append(event)

    def flush(self) -> None:
        if self.down:
            raise ServiceUnavailable("Kafka did not confirm delivery: timed out")
        self.delivered += self.queued
        self.queued = []


class Api:
    """A test client with a token of connector `cpoms`, and the fake emitter behind it."""

    def __init__(self, home: Path, max_body_bytes: int) -> None:
        self.emitter = FakeEmitter()
        self.tokens = TokenStore.in_home(home)
        self.token = self.tokens.issue("cpoms")
        self.client = TestClient(
            create_app(self.emitter, self.tokens, SeenStore.in_home(home), max_body_bytes=max_body_bytes)
        )

    def post(self, path: str, body: Any, token: str | None = None, **kw: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return self.client.post(path, content=data, headers=headers, **kw)


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return Api(tmp_path, max_body_bytes=8 * 1024 * 1024)


def event(n: int, connector: str = "cpoms") -> dict[str, Any]:
    flow = b.flow("2025-03-03T09:00Z", "local-authority", "safeguarding", ["safeguarding"], subjects=[f"p-{n}"])
    flow = flow.model_copy(update={"event_id": f"cpoms-{n}", "source": Source(connector=connector, sequence=n)})
    return dict(json.loads(flow.model_dump_json()))


def test_a_single_event_is_accepted_once_delivered(api: Api) -> None:
    response = api.post("/v1/events", event(1))
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "duplicates": 0})
    assert [e.event_id for e in api.emitter.delivered] == ["cpoms-1"]


def test_a_batch_is_accepted_and_repeats_are_duplicates_not_resent(api: Api) -> None:
    first = api.post("/v1/events/batch", {"events": [event(1), event(2), event(1)]})
    assert first.json() == {"accepted": 2, "duplicates": 1}
    again = api.post("/v1/events/batch", {"events": [event(2), event(3)]})
    assert (again.status_code, again.json()) == (202, {"accepted": 1, "duplicates": 1})
    assert [e.event_id for e in api.emitter.delivered] == ["cpoms-1", "cpoms-2", "cpoms-3"]


def test_a_missing_unknown_or_revoked_token_is_401(api: Api) -> None:
    assert api.client.post("/v1/events", json=event(1)).status_code == 401
    unknown = api.post("/v1/events", event(1), token="pft_guess")
    assert (unknown.status_code, unknown.headers["www-authenticate"]) == (401, "Bearer")
    api.tokens.revoke("cpoms")
    assert api.post("/v1/events", event(1)).status_code == 401
    assert api.emitter.delivered == []


def test_an_event_of_another_connector_refuses_the_batch_with_403(api: Api) -> None:
    response = api.post("/v1/events/batch", {"events": [event(1), event(2, connector="parentpay")]})
    assert response.status_code == 403
    assert "'cpoms'" in response.json()["detail"]
    assert "event(s) 1 " in response.json()["detail"]
    assert api.emitter.delivered == []


def test_invalid_events_are_422_with_every_field_path_and_nothing_is_sent(api: Api) -> None:
    bad = event(3)
    bad["subjects"][0]["id"] = ""
    del bad["purpose"]
    response = api.post("/v1/events/batch", {"events": [event(1), event(2), {"kind": "nope"}, bad]})
    assert response.status_code == 422
    paths = {(e["path"], e["type"]) for e in response.json()["errors"]}
    assert paths == {
        ("events.2", "union_tag_invalid"),
        ("events.3.subjects.0.id", "string_too_short"),
        ("events.3.purpose", "missing"),
    }
    assert api.emitter.delivered == []


def test_a_422_never_echoes_the_submitted_values(api: Api) -> None:
    bad = event(1)
    bad["subjects"][0]["id"] = "Jane Doe, DOB 2014-05-06"
    response = api.post("/v1/events", bad)
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "subjects.0.id"
    assert "Jane Doe" not in response.text


def test_malformed_json_is_422_at_the_body(api: Api) -> None:
    response = api.post("/v1/events", b"{not json")
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == ""
    assert response.json()["errors"][0]["type"] == "json_invalid"


def test_a_body_over_the_limit_is_413(tmp_path: Path) -> None:
    small = Api(tmp_path, max_body_bytes=2_000)
    response = small.post("/v1/events/batch", {"events": [event(n) for n in range(5)]})
    assert response.status_code == 413
    assert "2000 bytes" in response.json()["detail"]
    assert small.emitter.delivered == []


def test_a_chunked_body_over_the_limit_is_413(tmp_path: Path) -> None:
    small = Api(tmp_path, max_body_bytes=2_000)
    body = json.dumps({"events": [event(n) for n in range(5)]}).encode()
    chunks = iter([body[:1500], body[1500:]])
    response = small.client.post("/v1/events/batch", content=chunks, headers={"Authorization": f"Bearer {small.token}"})
    assert response.status_code == 413


def test_more_events_than_a_batch_may_carry_is_413(api: Api) -> None:
    one = json.dumps(event(1)).encode()
    body = b'{"events":[' + b",".join([one] * (MAX_BATCH_EVENTS + 1)) + b"]}"
    response = api.post("/v1/events/batch", body)
    assert response.status_code == 413
    assert str(MAX_BATCH_EVENTS) in response.json()["detail"]


def test_kafka_down_is_503_never_202_and_a_retry_sends_again(api: Api) -> None:
    api.emitter.down = True
    response = api.post("/v1/events", event(1))
    assert response.status_code == 503
    assert "Kafka did not confirm delivery" in response.json()["detail"]
    assert response.headers["retry-after"] == "5"
    api.emitter.down = False
    retry = api.post("/v1/events", event(1))
    assert retry.json() == {"accepted": 1, "duplicates": 0}


def test_health_and_readiness(tmp_path: Path) -> None:
    def down() -> None:
        raise ServiceUnavailable("Kafka at 127.0.0.1:1 is not reachable")

    app = create_app(FakeEmitter(), TokenStore.in_home(tmp_path), SeenStore.in_home(tmp_path), probe=down)
    client = TestClient(app)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()["detail"]) == (503, "Kafka at 127.0.0.1:1 is not reachable")


def test_openapi_documents_the_event_schemas_and_every_response(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert {"Event", "EventBatch", "DataFlow", "ConsentGiven", "Accepted", "ValidationProblem"} <= set(schemas)
    batch = document["paths"]["/v1/events/batch"]["post"]
    assert set(batch["responses"]) == {"202", "401", "403", "413", "422", "503"}
    body = batch["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/EventBatch"}
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # The union is told apart by `kind`, so on the wire it is required even where the model has a default.
    assert "kind" in schemas["DataFlow"]["required"]
