"""The FastAPI application of the HTTP ingest API; everything it uses is passed to `create_app`."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and they name
# the local dependency `connector_of`, which a string annotation could not resolve.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from producers.ingest import openapi
from producers.ingest.body import BodyTooLargeError, read_limited
from producers.ingest.delivery import Deliverer, DeliveryFailedError, EventSender, Outcome
from producers.ingest.models import Accepted, Health, Problem, ValidationProblem
from producers.ingest.readiness import Probe
from producers.ingest.seen import SeenStore
from producers.ingest.tokens import TokenStore
from producers.ingest.validation import (
    MAX_BATCH_EVENTS,
    InvalidBodyError,
    TooManyEventsError,
    parse_batch,
    parse_single,
)
from schemas.errors import ServiceUnavailable
from schemas.events import Event

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
"""8 MiB: room for a full batch of 10,000 typical events."""

_DESCRIPTION = """Events from CPOMS, ParentPay, forms and any webhook caller, into pupilflow's Kafka topics.

A 202 means Kafka has confirmed every event of the request. A batch is all or nothing: one invalid event
refuses the whole batch with every error listed. Requests are idempotent on `event_id`."""


class ProblemError(Exception):
    """Ends a request with an error response."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


async def _problem_response(request: Request, exc: ProblemError) -> JSONResponse:
    return JSONResponse(Problem(detail=exc.detail).model_dump(), status_code=exc.status, headers=exc.headers)


async def _invalid_response(request: Request, exc: InvalidBodyError) -> JSONResponse:
    body = ValidationProblem(detail="the request is invalid; nothing was accepted", errors=exc.errors)
    return JSONResponse(body.model_dump(), status_code=422)


def _check_connector(events: list[Event], connector: str) -> None:
    foreign = [i for i, event in enumerate(events) if event.source.connector != connector]
    if foreign:
        shown = ", ".join(str(i) for i in foreign[:20]) + (", ..." if len(foreign) > 20 else "")
        raise ProblemError(
            403,
            f"this token belongs to connector {connector!r}; event(s) {shown} name another source.connector; "
            "nothing was accepted",
        )


def create_app(
    emitter: EventSender,
    tokens: TokenStore,
    seen: SeenStore,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    probe: Probe | None = None,
) -> FastAPI:
    """The ingest API over this emitter and these stores; `probe` (default: always ready) backs `/readyz`."""
    deliverer = Deliverer(emitter, seen)
    bearer = HTTPBearer(auto_error=False, description="A connector's token (`pupilflow ingest token issue`).")
    app = FastAPI(
        title="pupilflow ingest API",
        version="1",
        description=_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )

    async def connector_of(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        connector = None
        if credentials is not None:
            # SQLite is quick, but still I/O: never on the event loop.
            connector = await run_in_threadpool(tokens.connector_for, credentials.credentials)
        if connector is None:
            raise ProblemError(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
        return connector

    async def ingest(request: Request, connector: str, parse: Callable[[bytes], list[Event]]) -> Accepted:
        try:
            body = await read_limited(request, max_body_bytes)
        except BodyTooLargeError:
            raise ProblemError(413, f"the body is over the limit of {max_body_bytes} bytes") from None
        outcome = await run_in_threadpool(_validate_and_deliver, body, connector, parse)
        return Accepted(accepted=outcome.accepted, duplicates=outcome.duplicates)

    def _validate_and_deliver(body: bytes, connector: str, parse: Callable[[bytes], list[Event]]) -> Outcome:
        try:
            events = parse(body)
        except TooManyEventsError:
            raise ProblemError(413, f"a batch may carry at most {MAX_BATCH_EVENTS} events") from None
        _check_connector(events, connector)
        try:
            return deliverer.deliver(events)
        except DeliveryFailedError as exc:
            raise ProblemError(
                503, f"Kafka did not confirm delivery, nothing was accepted; retry later ({exc})", {"Retry-After": "5"}
            ) from None

    post: dict[str, Any] = {"status_code": 202, "response_model": Accepted, "responses": openapi.INGEST_RESPONSES}

    @app.post("/v1/events", summary="Send one event", openapi_extra=openapi.json_body("Event"), **post)
    async def post_event(request: Request, connector: Annotated[str, Depends(connector_of)]) -> Accepted:
        """One event; 202 once Kafka has it (or had it before: counted as a duplicate)."""
        return await ingest(request, connector, lambda body: [parse_single(body)])

    @app.post("/v1/events/batch", summary="Send a batch", openapi_extra=openapi.json_body("EventBatch"), **post)
    async def post_batch(request: Request, connector: Annotated[str, Depends(connector_of)]) -> Accepted:
        """`{"events": [...]}`, up to 10,000; all valid or none accepted; 202 once Kafka has them all."""
        return await ingest(request, connector, parse_batch)

    @app.get("/healthz", response_model=Health, summary="The process is up")
    def healthz() -> Health:
        """Always 200 while the process serves requests."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        summary="Kafka is reachable",
        responses={503: {"model": Problem, "description": "Kafka is not reachable, or a topic is missing."}},
    )
    def readyz() -> Health:
        """200 when Kafka answered a metadata request just now (sync: FastAPI runs it in its threadpool)."""
        if probe is not None:
            try:
                probe()
            except ServiceUnavailable as exc:
                raise ProblemError(503, str(exc)) from None
        return Health(status="ready")

    app.add_exception_handler(ProblemError, _problem_response)  # type: ignore[arg-type]
    app.add_exception_handler(InvalidBodyError, _invalid_response)  # type: ignore[arg-type]
    openapi.install(app)
    return app
