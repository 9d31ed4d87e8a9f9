"""Writes the JSON Schemas that connector and sink authors code against (`python -m schemas.export`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

from schemas.decisions import Decision
from schemas.events import events_json_schema
from schemas.policy import Policy

SCHEMA_DIR = Path(__file__).parent / "jsonschema"
"""Where the committed schemas live."""


def rendered_schemas() -> dict[str, str]:
    """File name -> JSON text of every exported schema, rendered deterministically."""
    schemas: dict[str, dict[str, object]] = {
        "events.schema.json": events_json_schema(),
        "decision.schema.json": TypeAdapter(Decision).json_schema(mode="serialization"),
        "policy.schema.json": TypeAdapter(Policy).json_schema(mode="validation"),
    }
    return {name: json.dumps(schema, indent=2, sort_keys=True) + "\n" for name, schema in schemas.items()}


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(written_path)
