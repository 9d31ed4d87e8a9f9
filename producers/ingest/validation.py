"""Validating request bodies straight from JSON bytes, and reporting every error with its field path."""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from schemas.events import Event

MAX_BATCH_EVENTS = 10_000
"""The most events one batch may carry; more is a 413."""


class EventBatch(BaseModel):
    """The body of `POST /v1/events/batch`: up to 10,000 events, all valid or none accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: Annotated[list[Event], Field(min_length=1, max_length=MAX_BATCH_EVENTS)]


class FieldError(BaseModel):
    """One validation error: where (dotted path, empty for the whole body), what, and pydantic's error type."""

    path: str = Field(examples=["events.3.subjects.0.id"])
    message: str
    type: str


class TooManyEventsError(Exception):
    """A batch over `MAX_BATCH_EVENTS`."""


class InvalidBodyError(Exception):
    """A body that is not valid JSON of the expected shape; carries every error found."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


_BATCH = TypeAdapter(EventBatch)
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
_TAGS = frozenset(cls.model_fields["kind"].default for cls in get_args(get_args(Event)[0]))


def _path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts the union tag ("flow", "consent_given", ...) after an event's position; clients never wrote it.
    parts = list(loc)
    if parts[:1] == ["events"] and len(parts) > 2 and isinstance(parts[1], int) and parts[2] in _TAGS:
        del parts[2]
    elif parts and parts[0] in _TAGS:
        del parts[0]
    return ".".join(str(part) for part in parts)


def _field_errors(exc: ValidationError) -> list[FieldError]:
    # Without the input: an invalid value may well be a pupil's personal data.
    return [
        FieldError(path=_path(error["loc"]), message=error["msg"], type=error["type"])
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def parse_batch(body: bytes) -> list[Event]:
    """The events of a batch body; raises `TooManyEventsError` or `InvalidBodyError`."""
    try:
        return _BATCH.validate_json(body).events
    except ValidationError as exc:
        if any(e["type"] == "too_long" and e["loc"] == ("events",) for e in exc.errors(include_url=False)):
            raise TooManyEventsError from exc
        raise InvalidBodyError(_field_errors(exc)) from exc


def parse_single(body: bytes) -> Event:
    """The event of a single-event body; raises `InvalidBodyError`."""
    try:
        return _EVENT.validate_json(body)
    except ValidationError as exc:
        raise InvalidBodyError(_field_errors(exc)) from exc


def openapi_components(ref_template: str) -> dict[str, Any]:
    """JSON Schemas of `EventBatch`, `Event` and every event model, keyed by name, for the OpenAPI document."""
    batch = _BATCH.json_schema(ref_template=ref_template)
    event = _EVENT.json_schema(ref_template=ref_template)
    components: dict[str, Any] = {**batch.pop("$defs", {}), **event.pop("$defs", {})}
    # `kind` has a default in the models, but the union picks the model by it: on the wire it is required.
    for ref in event["discriminator"]["mapping"].values():
        model = components[ref.rsplit("/", 1)[1]]
        model["required"] = [*model.get("required", []), "kind"]
    components["EventBatch"] = batch
    components["Event"] = {"title": "Event", **event}
    return components
