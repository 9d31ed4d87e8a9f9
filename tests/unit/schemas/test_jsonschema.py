"""The committed JSON Schemas are the ones the models generate."""

from __future__ import annotations

from schemas.export import SCHEMA_DIR, rendered_schemas


def test_committed_schemas_are_current() -> None:
    stale = [
        name
        for name, text in rendered_schemas().items()
        if not (SCHEMA_DIR / name).exists() or (SCHEMA_DIR / name).read_text(encoding="utf-8") != text
    ]
    assert stale == [], "run `.venv/bin/python -m schemas.export` and commit schemas/jsonschema/"


def test_event_schema_names_every_kind() -> None:
    text = rendered_schemas()["events.schema.json"]
    for kind in ("flow", "consent_given", "consent_withdrawn", "sharing_agreement", "court_order", "notice_version"):
        assert f'"{kind}"' in text
