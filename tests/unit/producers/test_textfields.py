"""Shared connector text helpers: London times, `;` lists, identifier slugs, CSV headers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from producers.filesource import FileRejectedError
from producers.textfields import csv_columns, identifier_part, parse_london_time, slug, split_list
from schemas.events import Identifier

IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-07-01T09:00:00", datetime(2026, 7, 1, 8, tzinfo=UTC)),
        ("2026-12-01 09:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-07-01T09:00:00Z", datetime(2026, 7, 1, 9, tzinfo=UTC)),
        ("2026-07-01T09:00:00-04:00", datetime(2026, 7, 1, 13, tzinfo=UTC)),
        # The last Sunday of March: 01:30 London does not exist; the earlier offset (GMT) is taken.
        ("2026-03-29T01:30:00", datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        # The last Sunday of October: 01:30 happens twice; the first (BST) is taken.
        ("2026-10-25T01:30:00", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ],
)
def test_times_are_iso_8601_and_london_local_without_an_offset(text: str, utc: datetime) -> None:
    assert parse_london_time(f" {text} ").astimezone(UTC) == utc


@pytest.mark.parametrize("text", ["", "yesterday", "01/09/2026 09:00", "2026-13-01T00:00:00"])
def test_a_time_that_is_not_iso_8601_is_a_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=f"time {text!r} is not ISO 8601"):
        parse_london_time(text)


def test_lists_split_on_semicolons_trimmed_without_empties_or_repeats() -> None:
    assert split_list(" b ; a;;b ; ") == ["b", "a"]
    assert split_list("") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("School Meals Co", "school-meals-co"),
        ("  Clàss Dojo (EU)!  ", "class-dojo-eu"),
        ("medical_notes", "medical_notes"),
        # Nothing left to slug: a digest of the text stands in.
        ("---", "xcb3f91d54eee"),
        ("日本語", "x77710aedc74e"),
    ],
)
def test_slugs_are_lower_case_identifier_parts(text: str, expected: str) -> None:
    assert slug(text) == expected
    assert IDENTIFIER.validate_python(f"unmapped.{slug(text)}")


def test_slugs_of_different_names_reduced_to_nothing_differ_and_long_names_stay_short_and_distinct() -> None:
    assert slug("日本") != slug("中国")
    long_a, long_b = slug("a" * 300 + "1"), slug("a" * 300 + "2")
    assert long_a != long_b
    assert len(long_a) <= 80
    assert long_a.startswith("aaaa")


def test_identifier_parts_keep_case_and_what_identifiers_allow() -> None:
    assert identifier_part("<CAF3x9Yz.1@mail.Example.com>") == "CAF3x9Yz.1@mail.Example.com"
    assert identifier_part("  id with spaces ") == "id-with-spaces"
    assert IDENTIFIER.validate_python(identifier_part("<<>>"))


def test_csv_columns_are_the_lower_cased_header_and_an_unusable_header_says_why(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeff Time ,Sender,\n1,2,3\n".encode())
    assert csv_columns(path) == {"time", "sender"}
    for content, reason in ((b"", "empty file"), (b"ti\xffme\n", "header is not UTF-8")):
        path.write_bytes(content)
        with pytest.raises(FileRejectedError, match=reason):
            csv_columns(path)
