"""StreamState: the same decisions as a replay, and a changelog that restores exactly the state decided on."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from schemas.events import DataFlow, Event
from schemas.policy import Policy
from streams import processor
from streams.builders import agreement, born, consent, enrolled, flow, withdrawal
from streams.openflows import NEVER, digest_of
from streams.processor import Change, StreamState
from streams.replay import Rejected, parse_lines, replay_lines
from streams.sequences import SequenceTracker
from streams.state import DEFAULT_LATENESS, SubjectState, to_us

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "replay" / "sample.jsonl"
DAY = timedelta(days=1)
CHUNK = 512 * 1024

Item = tuple[Event, bytes]


def sample_events() -> list[Item]:
    """The sample's valid events in file order, each with its line as received."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    return [
        (event, lines[number - 1].encode()) for number, event in parse_lines(lines) if not isinstance(event, Rejected)
    ]


EVENTS = sample_events()


def feed(state: StreamState, items: Iterable[Item]) -> list[bytes]:
    """Every decision's JSON, in order."""
    out: list[bytes] = []
    for event, raw in items:
        out += state.handle(event, raw).payloads
    return out


def run_transactions(state: StreamState, items: Sequence[Item], per_txn: int, prefix: str) -> list[Change]:
    """Feed `items` in transactions of `per_txn` events; every transaction's changes, in log order."""
    log: list[Change] = []
    for n, start in enumerate(range(0, len(items), per_txn)):
        feed(state, items[start : start + per_txn])
        log += state.changes(f"{prefix}-{n}")
    return log


def prior_of(payload: bytes) -> dict[str, object]:
    """What a changelog line keeps of a decision (its JSON `payload`): what a re-judgment needs, and the flow id."""
    d = json.loads(payload)
    keep = ("decision_id", "flow_event_id", "verdict", "reasons", "revision")
    return {
        **{k: d[k] for k in keep},
        "disclosures": [{"subject_id": v["subject_id"], "reasons": v["reasons"]} for v in d["disclosures"]],
    }


def kinds(changes: Iterable[Change]) -> set[bytes]:
    return {key.split(b":", 1)[0] for key, _ in changes}


def keyed(changes: Iterable[Change]) -> dict[bytes, bytes | None]:
    return dict(changes)


# --- the stream decides as a replay does -------------------------------------------------------------------


def test_the_sample_holds_invalid_lines_duplicates_and_a_late_fact(register: Policy) -> None:
    result = replay_lines(SAMPLE.read_text(encoding="utf-8").splitlines(), register)
    assert len(EVENTS) == 82
    assert len(result.rejects) == 3
    assert result.duplicates == 1
    assert result.superseding == 1


@pytest.mark.parametrize("lateness", [DEFAULT_LATENESS, DAY, 365 * DAY], ids=["48h", "24h", "1y"])
def test_stream_state_gives_the_replays_decisions_byte_for_byte(register: Policy, lateness: timedelta) -> None:
    replayed = replay_lines(SAMPLE.read_text(encoding="utf-8").splitlines(), register, lateness)
    streamed = feed(StreamState(register, lateness), EVENTS)
    assert streamed == [d.to_json_bytes() for d in replayed.decisions]
    assert len(streamed) == 37


def test_a_duplicate_flow_in_the_sample_gives_no_decision_and_the_late_withdrawal_supersedes(register: Policy) -> None:
    state = StreamState(register)
    census = [i for i, (event, _) in enumerate(EVENTS) if event.event_id == "f-census"]
    assert len(census) == 2
    superseding = []
    for i, (event, raw) in enumerate(EVENTS):
        outcome = state.handle(event, raw)
        if i == census[1]:
            assert outcome.decisions == []
        superseding += [(event.kind, d.flow_event_id, d.revision) for d in outcome.decisions if d.supersedes]
    assert superseding == [("consent_withdrawn", "f-ava-music-jan", 1)]


# --- restore: the crash-recovery guarantee -----------------------------------------------------------------


def _check_restore_at(register: Policy, lateness: timedelta, k: int, per_txn: int) -> None:
    a = StreamState(register, lateness)
    log = run_transactions(a, EVENTS[:k], per_txn, "a")
    b = StreamState(register, lateness)
    b.restore(log)
    assert b.watermark == a.watermark
    assert b.open_flows() == a.open_flows()
    assert {c: t.to_bytes() for c, t in b.sequences.items()} == {c: t.to_bytes() for c, t in a.sequences.items()}
    tail_a = feed(a, EVENTS[k:])
    tail_b = feed(b, EVENTS[k:])
    assert tail_b == tail_a, f"restored at event {k} ({per_txn} per transaction) decides differently"
    if k < len(EVENTS):
        assert b.flows.ids() == a.flows.ids()


@pytest.mark.parametrize("lateness", [DEFAULT_LATENESS, DAY, 365 * DAY], ids=["48h", "24h", "1y"])
@pytest.mark.parametrize("per_txn", [1, 3, 8])
def test_a_state_restored_at_any_cut_decides_the_rest_as_the_uninterrupted_one(
    register: Policy, lateness: timedelta, per_txn: int
) -> None:
    for k in range(len(EVENTS) + 1):
        _check_restore_at(register, lateness, k, per_txn)


def test_the_restored_tail_includes_the_superseding_decision(register: Policy) -> None:
    withdrawal_at = next(i for i, (e, _) in enumerate(EVENTS) if e.kind == "consent_withdrawn")
    a = StreamState(register)
    log = run_transactions(a, EVENTS[:withdrawal_at], 1, "a")
    b = StreamState(register)
    b.restore(log)
    tail = [json.loads(p) for p in feed(b, EVENTS[withdrawal_at:])]
    assert any(d["supersedes"] for d in tail), "the cut must leave the superseded flow open in the restored state"


def test_an_aborted_transaction_is_redone_after_restore_as_if_never_started(register: Policy) -> None:
    reference = feed(StreamState(register), EVENTS)
    for k in range(0, len(EVENTS), 5):
        a = StreamState(register)
        log = run_transactions(a, EVENTS[:k], 4, "a")
        feed(a, EVENTS[k : k + 6])  # decided, but the transaction holding them aborts (the worker restarts)
        b = StreamState(register)
        b.restore(log)
        before = len(feed(StreamState(register), EVENTS[:k]))
        assert feed(b, EVENTS[k:]) == reference[before:]


def test_restoring_the_log_of_a_restored_state_gives_the_same_state_again(register: Policy) -> None:
    reference = feed(StreamState(register, DAY), EVENTS)
    a = StreamState(register, DAY)
    log = run_transactions(a, EVENTS[:50], 5, "a")
    b = StreamState(register, DAY)
    b.restore(log)
    log += run_transactions(b, EVENTS[50:70], 5, "b")  # the second worker appends to the same changelog
    c = StreamState(register, DAY)
    c.restore(log)
    before = len(feed(StreamState(register, DAY), EVENTS[:70]))
    assert feed(c, EVENTS[70:]) == reference[before:]


def by_partition(log: list[Change], partitions: int) -> list[Change]:
    """The log as a reader may get it from a topic of `partitions`: one partition after another, each in order."""
    parts: list[list[Change]] = [[] for _ in range(partitions)]
    for key, value in log:
        parts[int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big") % partitions].append((key, value))
    return [change for part in reversed(parts) for change in part]


def test_batches_read_partition_by_partition_reopen_in_the_order_they_were_judged(register: Policy) -> None:
    # Transactions named as the worker names them (<ms>-<n>), a few events each, so that many batches share an
    # arrival time: the restore orders batches by arrival, then by transaction, not by the order it read them.
    a = StreamState(register, 365 * DAY)
    log: list[Change] = []
    for n, item in enumerate(EVENTS[:70]):
        feed(a, [item])
        log += a.changes(f"{1_764_400_000_000 + n}-{n}")
    assert len({k for k, v in log if k.startswith(b"b:") and v}) >= 20
    shuffled = by_partition(log, 4)
    assert [k for k, _ in shuffled if k.startswith(b"b:")] != [k for k, _ in log if k.startswith(b"b:")]
    b = StreamState(register, 365 * DAY)
    b.restore(shuffled)
    assert len(a.flows.ids()) >= 20
    assert b.flows.ids() == a.flows.ids()
    assert feed(b, EVENTS[70:]) == feed(a, EVENTS[70:])


@pytest.mark.parametrize("ms", [10**14, 10**20], ids=["15-digit", "21-digit"])
def test_a_batch_key_with_large_numbers_restores(register: Policy, ms: int) -> None:
    # Kept apart, each number fits SQLite's 64-bit integers up to 18 digits; past that the key sorts by read order.
    a = StreamState(register, 365 * DAY)
    log: list[Change] = []
    for n, item in enumerate(EVENTS[:70]):
        feed(a, [item])
        log += a.changes(f"{ms + n}-{n}")
    b = StreamState(register, 365 * DAY)
    b.restore(log)
    assert b.flows.ids() == a.flows.ids()


def test_a_flow_sent_with_an_offset_and_padded_ids_is_restored_as_validated(register: Policy) -> None:
    # The line keeps the JSON as the connector sent it; the restore reads it as plain JSON only when the values
    # are what validation made of them, else through pydantic, so the reopened flow is the validated one.
    state = StreamState(register, DAY)
    plain = music_flow("2024-06-03T10:00Z", "p-1", "f-plain")
    sent = music_flow("2024-06-03T10:05Z", "p-2", "f-sent")
    raw = (
        sent.model_dump_json()
        .replace('"occurred_at":"2024-06-03T10:05:00Z"', '"occurred_at":"2024-06-03T11:05:00+01:00"')
        .replace('"id":"p-2"', '"id":" p-2 "')
        .encode()
    )
    assert b"+01:00" in raw
    assert b'" p-2 "' in raw
    state.handle(plain, plain.model_dump_json().encode())
    state.handle(sent, raw)
    changes = state.changes("t")
    assert any(v is not None and raw in v for k, v in changes if k.startswith(b"b:"))
    restored = StreamState(register, DAY)
    restored.restore(changes)
    now = to_us(sent.emitted_at)
    assert restored.open_flow("f-sent") == sent
    assert restored.flows.for_subject("p-2", to_us(sent.occurred_at), now) == ["f-sent"]
    assert restored.flows.for_subject("p-2", to_us(sent.occurred_at) + 1, now) == []
    assert restored.flows.for_subject("p-1", None, now) == ["f-plain"]
    assert restored.flows.for_recipient(sent.recipient, None, now) == ["f-plain", "f-sent"]


def test_an_override_whose_batch_is_gone_still_opens_its_flow_after_the_others(register: Policy) -> None:
    # The worker deletes a flow's override with its batch once the flow has left the window; a changelog holding
    # an override alone still reopens that flow (last, there being no batch to place it by) with its later line.
    state = StreamState(register, DAY)
    for fact in setup_facts():
        state.handle(fact)
    log = state.changes("t0")
    state.handle(music_flow("2024-06-03T10:00Z", "p-1", "f-1"))
    state.handle(music_flow("2024-06-03T10:01Z", "p-2", "f-2"))
    log += state.changes("t1")
    outcome = state.handle(consent("2024-06-01T09:00Z", "p-1", *MUSIC, emitted="2024-06-03T12:00Z"))
    assert len(outcome.decisions) == 1
    log += state.changes("t2")
    f1_line = next(line for line in (keyed(log)[b"b:t1.0"] or b"").split(b"\n") if b'"f-1"' in line)
    only_f2 = b"\n".join(line for line in (keyed(log)[b"b:t1.0"] or b"").split(b"\n") if line != f1_line)
    orphaned = [(k, only_f2 if k == b"b:t1.0" else v) for k, v in log]
    restored = StreamState(register, DAY)
    restored.restore(orphaned)
    assert restored.flows.ids() == ["f-2", "f-1"]
    line = restored.flows.line("f-1", to_us(outcome.decisions[0].decided_at))
    assert line is not None
    assert json.loads(line.split(b"\t")[2]) == prior_of(outcome.payloads[0])


def test_a_key_deleted_later_in_the_changelog_is_not_restored_whatever_its_kind(register: Policy) -> None:
    # Batches, flow overrides and a subclass's keys wait in the restore's tables by key: a tombstone removes them.
    class Recording(StreamState):
        def _restore_other(self, kind: bytes, name: bytes, value: bytes) -> None:
            others.append(kind + b":" + name)

    others: list[bytes] = []
    state = StreamState(register, DAY)
    for fact in setup_facts():
        state.handle(fact)
    log = state.changes("t0")
    state.handle(music_flow("2024-06-03T10:00Z", "p-1", "f-1"))
    log += state.changes("t1")
    state.handle(consent("2024-06-01T09:00Z", "p-1", *MUSIC, emitted="2024-06-03T12:00Z"))
    log += state.changes("t2")
    assert {b"b:t1.0", b"f:f-1"} <= set(keyed(log))
    kept = Recording(register, DAY)
    kept.restore([*log, (b"k:a", b"1"), (b"k:b", b"2")])
    assert kept.flows.ids() == ["f-1"]
    assert others == [b"k:a", b"k:b"]
    others.clear()
    gone = Recording(register, DAY)
    gone.restore([*log, (b"k:a", b"1"), (b"k:b", b"2"), (b"b:t1.0", None), (b"f:f-1", None), (b"k:a", None)])
    assert gone.flows.ids() == []
    assert others == [b"k:b"]


def test_a_flow_id_in_two_batches_keeps_its_first_place_and_its_later_line(register: Policy) -> None:
    # The worker never writes one (a re-delivered flow is a duplicate); a changelog that holds one anyway
    # restores as the latest value of each key would: the later line, in the place of the first.
    state = StreamState(register, DAY)
    first = music_flow("2024-06-03T10:00Z", "p-1", "f-1")
    other = music_flow("2024-06-03T10:01Z", "p-2", "f-2")
    state.handle(first, None)
    state.handle(other, None)
    log = state.changes("t-1")
    line = next(v for k, v in log if k == b"b:t-1.0")
    assert line is not None
    f1 = next(entry for entry in line.split(b"\n") if b'"f-1"' in entry)
    later = f1.replace(b'"revision":0', b'"revision":7')
    assert later != f1
    log.append((b"b:t-2.0", later))
    restored = StreamState(register, DAY)
    restored.restore(log)
    assert restored.flows.ids() == ["f-1", "f-2"]
    assert restored.open_flows() == 2
    kept = restored.flows.line("f-1", to_us(other.emitted_at))
    assert kept is not None
    assert b'"revision":7' in kept


def test_restore_keeps_the_open_flows_off_the_heap_however_long_the_changelog(
    register: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker feeds the changelog as it reads it: each record is a fresh object, gone once taken. Holding the
    # latest value of every key (the flows' lines) until the end took 864 MiB for 145,000 open flows. What stays on
    # the heap is the index from each pupil to its open flows (`OpenFlows._refs`): here 100 pupils, 60 flows each.
    monkeypatch.setattr(processor, "_RESTORE_FLUSH", 100)
    a = StreamState(register, DAY)
    # The builders number events from a process-wide counter: where it does not start this test at 0, the
    # connector's tracker holds every number above the hole (670 KB here), which is not what this test measures.
    a.tracks_sequences = False
    log: list[Change] = []
    for n in range(60):
        for m in range(100):
            pupil = f"p-{m}"
            a.handle(music_flow("2024-06-03T10:00Z", pupil, f"f-{n}-{m}", record_count=1))
        log += a.changes(f"t{n}")
    lines = sum(len(v) for k, v in log if k.startswith(b"b:") and v is not None)
    assert lines > 5_000_000

    def read() -> Iterable[Change]:
        for key, value in log:
            yield bytes(key), None if value is None else bytes(value)

    b = StreamState(register, DAY)
    tracemalloc.start()
    try:
        restoring = b.restoring()
        records = read()
        while chunk := list(itertools.islice(records, 7)):  # a few records per poll, as the reader hands them over
            restoring.add(chunk)
        restoring.finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert b.flows.ids() == a.flows.ids()
    assert b.open_flows() == 6_000
    assert peak < lines / 5, f"{peak:,} bytes at peak for {lines:,} bytes of open flows"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_restore_keeps_its_peak_memory_flat_sqlite_included() -> None:
    # 100,000 open flows in 512 KiB batch values. Selected in order out of one table of every batch, they went
    # through SQLite's sorter, which held a third of them (68 MB here); the heap check above does not see that.
    root = Path(__file__).resolve().parents[3]
    found = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("restore_peak.py")), "100000", str(root / "policy")],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=300,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    growth, lines = map(int, found.stdout.split())
    assert lines > 80_000_000
    assert growth < lines / 10, f"peak RSS grew {growth:,} bytes restoring {lines:,} bytes of open flows"


# --- duplicates across a restore ---------------------------------------------------------------------------

MUSIC = ("peripatetic-music", "music_tuition", ["identity"])


def music_flow(when: str, pupil: str, event_id: str, **kw: object) -> DataFlow:
    return flow(when, *MUSIC, subjects=[pupil], event_id=event_id, **kw)  # type: ignore[arg-type]


def test_a_restored_state_knows_a_flow_inside_its_window_and_compares_its_payload(register: Policy) -> None:
    a = StreamState(register, DAY)
    first = music_flow("2024-06-03T10:00Z", "p-1", "f-1")
    a.handle(first)
    log = a.changes("t1")
    b = StreamState(register, DAY)
    b.restore(log)
    assert b.open_flow("f-1") == first
    assert b.handle(first).decisions == []
    with pytest.raises(ValueError, match="f-1"):
        b.handle(music_flow("2024-06-03T11:00Z", "p-1", "f-1"))
    assert not any(key.startswith(b"d:") for key, _ in b.changes("t2")), "a re-delivery is not a new id"


def test_a_restored_state_knows_a_flow_long_after_its_window_closed(register: Policy) -> None:
    a = StreamState(register, DAY)
    first = music_flow("2024-06-03T10:00Z", "p-1", "f-1")
    a.handle(first)
    log = a.changes("t1")
    a.handle(music_flow("2024-06-10T10:00Z", "p-2", "f-2"))  # a week later: f-1's window has closed
    log += a.changes("t2")
    assert a.open_flow("f-1") is None
    b = StreamState(register, DAY)
    b.restore(log)
    assert b.open_flow("f-1") is None
    assert b.open_flows() == 1
    assert b.is_duplicate(first)
    assert b.handle(first).decisions == []
    # after the window only a digest is kept: a different payload under the id is recognised, not compared
    assert b.is_duplicate(music_flow("2024-06-03T12:00Z", "p-9", "f-1"))
    assert not b.is_duplicate(music_flow("2024-06-11T10:00Z", "p-3", "f-3"))


def test_a_state_restored_without_the_digests_would_judge_the_flow_again(register: Policy) -> None:
    # The `d:` records are what recognises old flows: without them the same flow is judged anew.
    a = StreamState(register, DAY)
    first = music_flow("2024-06-03T10:00Z", "p-1", "f-1")
    a.handle(first)
    log = a.changes("t1")
    a.handle(music_flow("2024-06-10T10:00Z", "p-2", "f-2"))
    log += a.changes("t2")
    b = StreamState(register, DAY)
    b.restore([(k, v) for k, v in log if not k.startswith(b"d:")])
    assert len(b.handle(first).decisions) == 1


# --- is_duplicate ------------------------------------------------------------------------------------------


def test_prefetched_flows_are_judged_once_and_found_by_id_in_later_transactions(register: Policy) -> None:
    # The worker's path: a batch's ids are looked up first, and each digest is reused by the judging and the store.
    state = StreamState(register, DAY)
    one, two = music_flow("2024-06-03T10:00Z", "p-1", "f-1"), music_flow("2024-06-03T10:05Z", "p-2", "f-2")
    state.prefetch(["f-1", "f-2", "f-1"])
    assert len(state.handle(one).decisions) == 1
    assert state.handle(one).decisions == [], "a second copy in the same transaction"
    assert len(state.handle(two).decisions) == 1
    digests = b"".join(value or b"" for key, value in state.changes("t1") if key.startswith(b"d:"))
    assert digests == digest_of("f-1") + digest_of("f-2")
    state.prefetch(["f-2", "f-3"])
    assert state.handle(two).decisions == [], "judged in the transaction before"
    assert state.open_flow("f-2") == two
    with pytest.raises(ValueError, match="f-1"):
        state.handle(music_flow("2024-06-03T11:00Z", "p-1", "f-1"))
    three = music_flow("2024-06-03T10:10Z", "p-3", "f-3")
    assert len(state.handle(three).decisions) == 1
    state.changes("t2")
    assert state.open_flow("f-3") == three
    assert state.flows.for_subject("p-3", None, NEVER) == ["f-3"]


def test_an_event_id_reused_with_a_different_payload_inside_the_window_is_refused(register: Policy) -> None:
    state = StreamState(register, DAY)
    state.handle(music_flow("2024-06-03T10:00Z", "p-1", "f-1"))
    other = music_flow("2024-06-03T10:00Z", "p-2", "f-1")
    with pytest.raises(ValueError, match="reused with a different payload"):
        state.is_duplicate(other)
    with pytest.raises(ValueError, match="f-1"):
        state.handle(other)
    assert state.open_flow("f-1") is not None
    assert state.open_flow("f-1") != other


def test_facts_are_never_duplicates_and_a_redelivered_fact_changes_nothing(register: Policy) -> None:
    state = StreamState(register)
    fact = consent("2024-06-01T09:00Z", "p-1", *MUSIC)
    assert not state.is_duplicate(fact)
    state.handle(fact)
    before = state.state.subject("p-1").to_bytes()
    assert not state.is_duplicate(fact)
    outcome = state.handle(fact)
    assert outcome.decisions == []
    assert state.state.subject("p-1").to_bytes() == before
    assert len(state.state.subject("p-1").consents) == 1


# --- changes() ---------------------------------------------------------------------------------------------


def setup_facts() -> list[Event]:
    return [
        agreement(
            "2024-01-01T00:00Z", "peripatetic-music", "dsa", agreement_id="agr-pm", valid_until="2030-01-01T00:00Z"
        ),
        born("p-1", "2014-01-01"),
        enrolled("2024-01-02T00:00Z", "p-1"),
    ]


def test_a_flow_writes_its_batch_line_its_digest_its_tracker_and_the_watermark(register: Policy) -> None:
    state = StreamState(register, DAY)
    f = music_flow("2024-06-03T10:00Z", "p-1", "f-1", emitted="2024-06-03T10:05Z")
    raw = f.model_dump_json().encode()
    decision = state.handle(f, raw).payloads[0]
    changes = keyed(state.changes("txn-7"))
    assert set(changes) == {b"b:txn-7.0", b"d:txn-7", b"q:flows", b"w:"}
    arrived = to_us(f.emitted_at)
    when, flow_json, prior = (changes[b"b:txn-7.0"] or b"").split(b"\t")
    assert (int(when), flow_json) == (arrived, raw)
    assert json.loads(prior) == prior_of(decision)
    assert len(prior) < len(decision) / 3  # the decision itself is in the decisions topic
    assert changes[b"d:txn-7"] == hashlib.blake2b(b"f-1", digest_size=12).digest()
    assert changes[b"w:"] == str(arrived).encode()
    tracker = SequenceTracker.from_bytes(changes[b"q:flows"] or b"")
    assert tracker.to_bytes() == state.sequences["flows"].to_bytes()
    assert state.changes("txn-8") == []  # nothing changed since


def test_facts_write_subject_state_and_recipient_facts(register: Policy) -> None:
    state = StreamState(register)
    facts = setup_facts()
    for fact in facts:
        state.handle(fact)
    changes = keyed(state.changes("t"))
    assert changes[b"x:" + facts[0].event_id.encode()] == facts[0].model_dump_json().encode()
    assert SubjectState.from_bytes(changes[b"s:p-1"] or b"") == state.state.subject("p-1")
    assert len(state.state.subject("p-1").births) == 1
    assert not any(k.startswith((b"b:", b"d:", b"f:")) for k in changes)
    restored = StreamState(register)
    restored.restore(changes.items())
    assert restored.state.subject("p-1") == state.state.subject("p-1")
    assert (
        restored.state.recipient("peripatetic-music").agreements
        == state.state.recipient("peripatetic-music").agreements
    )


def test_a_superseding_decision_gets_an_f_entry_and_both_are_tombstoned_when_the_window_closes(
    register: Policy,
) -> None:
    state = StreamState(register, DAY)
    for fact in setup_facts():
        state.handle(fact)
    log = state.changes("t0")
    first = state.handle(music_flow("2024-06-03T10:00Z", "p-1", "f-1")).decisions[0]
    assert first.verdict == "violation"
    log += state.changes("t1")
    assert b"b:t1.0" in keyed(log)
    late = consent("2024-06-01T09:00Z", "p-1", *MUSIC, emitted="2024-06-03T12:00Z")
    outcome = state.handle(late)
    assert len(outcome.decisions) == 1
    assert outcome.decisions[0].supersedes == first.decision_id
    changes = keyed(state.changes("t2"))
    log += changes.items()
    override = changes[b"f:f-1"]
    assert override is not None
    assert json.loads(override.split(b"\t")[2]) == prior_of(outcome.payloads[0])
    assert b"b:t1.0" not in changes  # the batch line stays; the override supersedes it
    # lines written before the prior was cut down held the whole decision: they restore the same
    whole = {first.decision_id: first.to_json_bytes(), outcome.decisions[0].decision_id: outcome.payloads[0]}

    def written_whole(value: bytes | None) -> bytes | None:
        if value is None:
            return None
        lines = [line.split(b"\t") for line in value.split(b"\n")]
        return b"\n".join(b"\t".join((a, f, whole[json.loads(p)["decision_id"]])) for a, f, p in lines)

    older = [(k, written_whole(v) if k[:2] in (b"b:", b"f:") else v) for k, v in log]
    assert older != log
    # a restore reopens f-1 with its latest decision: a further late fact supersedes the superseding one
    restored = StreamState(register, DAY)
    restored.restore(log)
    assert restored.open_flow("f-1") is not None
    undo = withdrawal("2024-06-02T09:00Z", "p-1", recipient="peripatetic-music", purpose="music_tuition",
                      emitted="2024-06-03T13:00Z")  # fmt: skip
    restored_older = StreamState(register, DAY)
    restored_older.restore(older)
    again = state.handle(undo).payloads
    assert again == restored.handle(undo).payloads
    assert again == restored_older.handle(undo).payloads
    assert [json.loads(p)["revision"] for p in again] == [2]
    assert json.loads(again[0])["supersedes"] == outcome.decisions[0].decision_id
    state.changes("t3")
    state.handle(music_flow("2024-06-06T10:00Z", "p-1", "f-2"))  # three days on: f-1 is out of its window
    closing = state.changes("t4")
    assert (b"f:f-1", None) in closing
    assert (b"b:t1.0", None) in closing
    assert state.open_flow("f-1") is None


def test_a_batch_is_tombstoned_only_when_its_last_flow_leaves_the_window(register: Policy) -> None:
    state = StreamState(register, DAY)
    state.handle(music_flow("2024-06-03T10:00Z", "p-1", "f-1"))
    state.handle(music_flow("2024-06-03T20:00Z", "p-2", "f-2"))
    state.changes("t1")
    state.handle(music_flow("2024-06-04T15:00Z", "p-3", "f-3"))  # f-1 closes, f-2 is still open
    assert (b"b:t1.0", None) not in state.changes("t2")
    state.handle(music_flow("2024-06-05T16:00Z", "p-4", "f-4"))  # f-2 and f-3 close
    closing = state.changes("t3")
    assert (b"b:t1.0", None) in closing
    assert (b"b:t2.0", None) in closing
    assert state.open_flows() == 1


def padded(f: DataFlow, size: int) -> bytes:
    """The flow's JSON with `size` spaces of insignificant whitespace (valid JSON, as a producer may send)."""
    text = f.model_dump_json().encode()
    return b"{" + b" " * size + text[1:]


def test_batch_lines_beyond_512_kib_are_split_over_several_keys_and_restore_whole(register: Policy) -> None:
    state = StreamState(register, DAY)
    flows = [music_flow(f"2024-06-03T10:0{i}Z", f"p-{i}", f"f-{i}") for i in range(5)]
    for f in flows:
        state.handle(f, padded(f, 200_000))
    changes = keyed(state.changes("big"))
    parts = sorted(k for k in changes if k.startswith(b"b:big."))
    assert len(parts) >= 3
    assert parts[0] == b"b:big.0"
    values = [changes[k] or b"" for k in parts]
    assert all(len(v) <= CHUNK for v in values)
    lines = [line for v in values for line in v.split(b"\n")]
    assert [int(line.split(b"\t", 1)[0]) for line in lines] == [to_us(f.emitted_at) for f in flows]
    restored = StreamState(register, DAY)
    restored.restore(changes.items())
    assert [restored.open_flow(f.event_id) for f in flows] == flows


def test_a_single_line_beyond_512_kib_gets_a_key_of_its_own(register: Policy) -> None:
    state = StreamState(register, DAY)
    small = music_flow("2024-06-03T10:00Z", "p-1", "f-small")
    huge = music_flow("2024-06-03T10:01Z", "p-2", "f-huge")
    state.handle(small)
    state.handle(huge, padded(huge, CHUNK + 10))
    changes = keyed(state.changes("t"))
    assert sorted(k for k in changes if k.startswith(b"b:")) == [b"b:t.0", b"b:t.1"]
    assert (changes[b"b:t.0"] or b"").count(b"\n") == 0
    assert b"f-huge" in (changes[b"b:t.1"] or b"")


def test_each_chunk_is_tombstoned_when_its_own_flows_leave_the_window(register: Policy) -> None:
    state = StreamState(register, DAY)
    early = music_flow("2024-06-03T10:00Z", "p-1", "f-early")
    late = music_flow("2024-06-03T23:00Z", "p-2", "f-late")
    state.handle(early, padded(early, CHUNK - 1000))
    state.handle(late, padded(late, CHUNK - 1000))
    assert {b"b:t.0", b"b:t.1"} <= set(keyed(state.changes("t")))
    state.handle(music_flow("2024-06-04T12:00Z", "p-3", "f-3"))  # only f-early has closed
    closing = keyed(state.changes("u"))
    assert closing.get(b"b:t.0", b"open") is None
    assert b"b:t.1" not in closing


# --- bugs --------------------------------------------------------------------------------------------------


def test_a_pretty_printed_flow_does_not_break_the_changelog(register: Policy) -> None:
    state = StreamState(register, DAY)
    f = music_flow("2024-06-03T10:00Z", "p-1", "f-1")
    raw = json.dumps(json.loads(f.model_dump_json()), indent="\t").encode()
    state.handle(f, raw)
    restored = StreamState(register, DAY)
    restored.restore(state.changes("t"))
    assert restored.open_flow("f-1") == f


def test_a_flow_closing_in_its_own_transaction_does_not_keep_its_batch_forever(register: Policy) -> None:
    state = StreamState(register, DAY)
    state.handle(music_flow("2024-06-03T10:00Z", "p-1", "f-1"))
    state.handle(music_flow("2024-06-06T10:00Z", "p-2", "f-2"))  # f-1 closes before the transaction ends
    assert state.open_flow("f-1") is None
    log = state.changes("t1")
    restored = StreamState(register, DAY)
    restored.restore(log)
    assert restored.open_flow("f-1") is None
    state.handle(music_flow("2024-06-09T10:00Z", "p-3", "f-3"))  # f-2 closes: nothing of t1 is open
    log += state.changes("t2")
    assert (b"b:t1.0", None) in log


def live(log: Iterable[Change]) -> dict[bytes, bytes]:
    """What a compacted changelog topic keeps: the latest value of each key, deleted keys gone."""
    out: dict[bytes, bytes] = {}
    for key, value in log:
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_no_closed_flow_is_reopened_by_a_restore_and_closed_batches_are_deleted(register: Policy) -> None:
    a = StreamState(register, DAY)
    log = run_transactions(a, EVENTS, 3, "a")
    kept = live(log)
    b = StreamState(register, DAY)
    b.restore(log)
    assert b.open_flows() == a.open_flows()
    open_ids = {flow_id.encode() for flow_id in a.flows.ids()}
    for key, value in kept.items():
        if key.startswith(b"b:"):
            assert any(b'"flow_event_id":"%s"' % i in value for i in open_ids), f"{key!r} holds no open flow"
