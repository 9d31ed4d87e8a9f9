"""Subject state: as-of reads, idempotence, and the compact round trip."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.builders import agreement, born, competence, consent, court_order, enrolled, left, standing, withdrawal
from streams.state import State, SubjectState, from_us, to_us


def test_microsecond_round_trip() -> None:
    moment = datetime(2024, 3, 31, 0, 59, 59, 999_999, tzinfo=UTC)
    assert from_us(to_us(moment)) == moment
    assert to_us(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)) == -1_000_000


def test_duplicate_fact_is_recorded_once() -> None:
    state = State()
    fact = consent("2024-01-01T00:00Z", "p-1", "peripatetic-music", "music_tuition", ["identity"])
    assert state.apply(fact) is True
    assert state.apply(fact) is False
    assert len(state.subject("p-1").consents) == 1


def test_records_are_sorted_by_effective_time_not_arrival() -> None:
    late = consent("2024-02-01T00:00Z", "p-1", "r", "p", ["identity"], consent_id="c-late")
    early = consent("2024-01-01T00:00Z", "p-1", "r", "p", ["identity"], consent_id="c-early")
    one, two = State(), State()
    one.apply(late)
    one.apply(early)
    two.apply(early)
    two.apply(late)
    assert one.subject("p-1") == two.subject("p-1")
    assert [c[1] for c in one.subject("p-1").consents] == ["c-early", "c-late"]


def test_portable_and_packed_round_trips() -> None:
    state = State()
    for fact in (
        born("p-1", "2010-02-28"),
        enrolled("2021-09-01T08:00Z", "p-1"),
        consent(
            "2024-01-01T00:00:00.123456Z",
            "p-1",
            "peripatetic-music",
            "music_tuition",
            ["identity", "health"],
            explicit=True,
            consent_id="6f1c1a52-5b0e-4c55-9d5e-0f6a7c1d2e3f",
        ),
        withdrawal("2024-03-01T00:00Z", "p-1", consent_id="6f1c1a52-5b0e-4c55-9d5e-0f6a7c1d2e3f"),
        court_order("2024-01-05T00:00Z", "p-1", persons=["dad-1"], categories=["identity.address"]),
        standing("2021-09-01T00:00Z", "p-1", "dad-1", "father", pr=True),
        competence("2024-01-01T00:00Z", "p-1"),
        left("2025-07-20T00:00Z", "p-1"),
    ):
        state.apply(fact)
    subject = state.subject("p-1")
    assert SubjectState.from_bytes(subject.to_bytes()) == subject
    assert SubjectState.unpack(subject.pack(state.vocabulary), state.vocabulary) == subject
    assert len(subject.pack(state.vocabulary)) < len(subject.to_bytes())


def test_a_state_with_no_cache_still_answers() -> None:
    state = State(cache_size=0)
    state.apply(born("p-1", "2010-02-28"))
    assert str(state.subject("p-1").birth_date()) == "2010-02-28"


def test_latest_birth_date_record_wins_whatever_the_arrival_order() -> None:
    first = born("p-1", "2010-01-01", when="2020-01-01T00:00Z")
    correction = born("p-1", "2010-01-10", when="2021-01-01T00:00Z")
    a, b = State(), State()
    a.apply(first)
    a.apply(correction)
    b.apply(correction)
    b.apply(first)
    assert a.subject("p-1").birth_date() == b.subject("p-1").birth_date()
    assert str(a.subject("p-1").birth_date()) == "2010-01-10"


def test_agreements_live_in_recipient_state() -> None:
    state = State()
    state.apply(agreement("2024-01-01T00:00Z", "sims", agreement_id="a-1"))
    assert [a[1] for a in state.recipient("sims").agreements] == ["a-1"]
    assert state.recipient("cpoms").agreements == []


def test_times_of_every_resolution_survive_packing() -> None:
    from streams import packing

    times = [
        0,
        -1,
        -60_000_000,
        946_684_800_000_000,
        1_717_000_000_000_000,
        1_717_000_000_000_001,
        1_717_000_000_500_000,
        1_717_000_020_000_000,
        4_102_444_800_000_000,
    ]
    sections = [[] for _ in packing.LAYOUTS]
    sections[4] = [(t, f"objection-{i}") for i, t in enumerate(times)]
    assert packing.loads_portable(packing.dumps_portable(sections)) == sections


def test_repeated_ids_are_stored_once() -> None:
    state = State()
    for n in range(3):
        state.apply(
            consent(
                "2024-01-01T00:00Z", "p-1", "r", "p", ["identity"], by="a-rather-long-parent-id", consent_id=f"c-{n}"
            )
        )
    packed = state.subject("p-1").to_bytes()
    assert packed.count(b"a-rather-long-parent-id") == 1


def test_put_packed_restores_a_subject() -> None:
    state = State()
    state.apply(born("p-1", "2010-02-28"))
    packed = state.subject("p-1").pack(state.vocabulary)
    state.put_packed("p-2", packed)
    assert state.subject("p-2") == state.subject("p-1")


def test_only_canonical_uuids_are_packed_as_16_bytes() -> None:
    from streams.packing import _canonical_uuid

    assert _canonical_uuid("6f1c1a52-5b0e-4c55-9d5e-0f6a7c1d2e3f") == bytes.fromhex("6f1c1a525b0e4c559d5e0f6a7c1d2e3f")
    assert _canonical_uuid("6F1C1A52-5B0E-4C55-9D5E-0F6A7C1D2E3F") is None
    assert _canonical_uuid("6f1c1a52-5b0e-4c55-9d5e-0f6a7c1d2e3g") is None
    assert _canonical_uuid("6f1c1a525-b0e-4c55-9d5e-0f6a7c1d2e3f") is None
    for text in ("6F1C1A52-5B0E-4C55-9D5E-0F6A7C1D2E3F", "6f1c1a52-5b0e-4c55-9d5e-0f6a7c1d2e3f", "x" * 36):
        state = State()
        state.apply(consent("2024-01-01T00:00Z", "p-1", "r", "p", ["identity"], consent_id=text))
        subject = state.subject("p-1")
        assert SubjectState.from_bytes(subject.to_bytes()) == subject
