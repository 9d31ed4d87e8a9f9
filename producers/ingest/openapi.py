"""The OpenAPI document: FastAPI's, plus the event schemas the endpoints read from the raw body."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from producers.ingest.models import Problem, ValidationProblem
from producers.ingest.validation import openapi_components

_REF = "#/components/schemas/{model}"


def json_body(component: str) -> dict[str, Any]:
    """`openapi_extra` of a route that reads a JSON body itself (see `validation`), described by `component`."""
    schema = {"$ref": _REF.format(model=component)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _problem(text: str, model: type[Problem] | type[ValidationProblem] = Problem) -> dict[str, Any]:
    return {"model": model, "description": text}


INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem("No bearer token, or an unknown or revoked one."),
    403: _problem("An event's `source.connector` is not the token's connector; nothing was accepted."),
    413: _problem("The body is over the size limit, or the batch has more than 10,000 events."),
    422: _problem("Invalid JSON or an invalid event; nothing was accepted.", ValidationProblem),
    503: _problem("Kafka did not confirm delivery; nothing is recorded as delivered, retry later."),
}
"""Every non-202 response of the POST endpoints."""


def install(app: FastAPI) -> None:
    """Make `app.openapi()` include the event schemas (built once, then cached by FastAPI's contract)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(openapi_components(_REF))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
