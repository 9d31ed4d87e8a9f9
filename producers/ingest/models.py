"""Response bodies of the ingest API (request bodies are the event models of `schemas.events`)."""

from __future__ import annotations

from pydantic import BaseModel

from producers.ingest.validation import FieldError


class Accepted(BaseModel):
    """202: Kafka has every event of the request; `duplicates` had been delivered before and were not re-sent."""

    accepted: int
    duplicates: int


class Problem(BaseModel):
    """An error, said in one sentence."""

    detail: str


class ValidationProblem(BaseModel):
    """422: nothing was accepted; every error of every event, with its dotted field path."""

    detail: str
    errors: list[FieldError]


class Health(BaseModel):
    """`/healthz` and `/readyz` when all is well."""

    status: str
