"""Events on the wire: data flows leaving the Trust and the facts they are judged against.

Every event is JSON with a `schema_version`, a stable `event_id`, `occurred_at` (when it happened) distinct
from `emitted_at` (when a connector sent it), and a `source` (connector id + per-connector sequence number, so
a gap means a lost event). All datetimes must carry a timezone and are normalised to UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalised to UTC on parse (RULES.md §2: compare in UTC)."""

Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]*$")]
"""An opaque id: event ids, subject ids, recipient and category keys."""


class Model(BaseModel):
    """Base for every wire model: unknown fields are an error, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Source(Model):
    """Which connector emitted an event, and its per-connector sequence number."""

    connector: Identifier
    sequence: int = Field(ge=0)


class EventEnvelope(Model):
    """Fields every event carries."""

    schema_version: Literal[1] = 1
    event_id: Identifier
    occurred_at: UtcDatetime
    emitted_at: UtcDatetime
    source: Source


class Subject(Model):
    """A data subject whose personal data is in a flow."""

    kind: Literal["pupil", "parent"] = "pupil"
    id: Identifier


class DataFlow(EventEnvelope):
    """One outbound flow of pupil or parent personal data to a recipient."""

    kind: Literal["flow"] = "flow"
    recipient: Identifier
    subjects: list[Subject] = Field(min_length=1)
    categories: list[Identifier] = Field(min_length=1)
    purpose: Identifier
    lawful_basis: str | None = None
    channel: Identifier = "unspecified"
    destination_country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "GB"
    record_count: int = Field(default=1, ge=0)

    def partition_key(self) -> bytes:
        """Kafka key: the first subject, so single-subject flows land beside that subject's state."""
        return self.subjects[0].id.encode()


# The policy engine grows this into a union of DataFlow and the fact kinds, discriminated on `kind`.
Event = DataFlow
"""Any event on `pupilflow.flows` or `pupilflow.facts`."""

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(raw: bytes | str) -> Event:
    """Validate one JSON event; raises `pydantic.ValidationError` with field paths when it is invalid."""
    return _EVENT_ADAPTER.validate_json(raw)
