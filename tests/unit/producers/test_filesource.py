"""CSV reading for file connectors: exact resume positions, quoted newlines, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.filesource import FileRejectedError, csv_records, event_id_for


def test_rows_resume_from_the_byte_position_after_a_quoted_newline(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_text('A, B\n1,"two\nlines"\n\n3,4\n', encoding="utf-8")
    rows = list(csv_records(path, 0, 0))
    assert [(n, r) for n, _, r in rows] == [(1, {"a": "1", "b": "two\nlines"}), (3, {"a": "3", "b": "4"})]
    resumed = list(csv_records(path, rows[0][1], 1))
    assert [(n, r) for n, _, r in resumed] == [(3, {"a": "3", "b": "4"})]


def test_a_row_of_the_wrong_width_is_an_error_row_not_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("a,b\n1\n2,3\n", encoding="utf-8")
    rows = [r for _, _, r in csv_records(path, 0, 0)]
    assert rows == [{"__error__": "has 1 fields, the header has 2"}, {"a": "2", "b": "3"}]


def test_an_empty_file_and_non_utf8_bytes_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(FileRejectedError, match="empty file"):
        list(csv_records(empty, 0, 0))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a\nZo\xeb\n".encode("latin-1"))
    with pytest.raises(FileRejectedError, match="not UTF-8"):
        list(csv_records(latin, 0, 0))


def test_a_bom_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffpupil_id\nP1\n".encode())
    assert [r for _, _, r in csv_records(path, 0, 0)] == [{"pupil_id": "P1"}]


def test_event_ids_name_connector_file_record_and_index() -> None:
    assert event_id_for("ctf", "ab" * 32, 7, 2) == "ctf:abababababababab:7:2"


def test_a_cell_listing_a_whole_trust_of_pupils_is_read(tmp_path: Path) -> None:
    pupils = ";".join(f"P{n:06d}" for n in range(30_000))
    path = tmp_path / "big.csv"
    path.write_text(f"pupils\n{pupils}\n", encoding="utf-8")
    assert [r["pupils"].count(";") for _, _, r in csv_records(path, 0, 0)] == [29_999]
