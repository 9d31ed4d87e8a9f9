"""Append-only fact history per subject and per recipient, read as of a flow's `occurred_at`.

Facts are stored as plain tuples (epoch-microsecond ints, interned vocabulary strings), kept sorted by
(effective time, id) so the answer never depends on the order facts arrived in — only on their effective
times. A late fact with an earlier effective time therefore changes the answer for every later flow, and
`State.affected_flows(fact)` lists the recent flows whose verdict must be re-evaluated.

Build state for a test::

    state = State()
    state.apply(parse_event(consent_json))      # any Fact; returns False for a duplicate
    subject = state.subject("pupil-1")          # SubjectState (empty if nothing is known)

Per-subject state round-trips through compact bytes (`SubjectState.to_bytes` / `from_bytes`), which is what
a faust table keyed by subject stores. `State` itself keeps subjects packed (see `streams.packing`) with a
small cache of decoded subjects, so a million pupils fit in a couple of hundred MiB.
"""

from __future__ import annotations

import bisect
import json
import sys
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from schemas.events import (
    Actor,
    AgreementTerminated,
    BirthDateRecorded,
    CareOrderRecorded,
    CompetenceAssessed,
    ConsentGiven,
    ConsentRefused,
    ConsentScope,
    ConsentWithdrawn,
    CourtOrderNotified,
    DataFlow,
    Fact,
    NoticeVersionPublished,
    ObjectionRaised,
    ObjectionWithdrawn,
    ParentalResponsibilityRecorded,
    PupilEnrolled,
    PupilLeft,
    SharingAgreement,
)
from streams import packing
from streams.store import SubjectStore

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_LATENESS = timedelta(hours=48)
"""How long a flow stays open to re-evaluation by late facts (RULES.md §2 asks for at least 24 h)."""

# Actor flag bits, shared by consent, withdrawal, refusal, objection and standing records.
PR = 1
CARE = 2
DELEGATED = 4
EXPLICIT = 8
WRITTEN = 16

_intern = sys.intern


def to_us(moment: datetime) -> int:
    """A tz-aware datetime as integer microseconds since the Unix epoch (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(micros: int) -> datetime:
    """The inverse of `to_us`."""
    return _EPOCH + timedelta(microseconds=micros)


def actor_flags(actor: Actor) -> int:
    """The standing of an actor as flag bits."""
    return (
        (PR if actor.has_parental_responsibility else 0)
        | (CARE if actor.has_care else 0)
        | (DELEGATED if actor.delegated_authority else 0)
    )


def _opt(value: str | None) -> str | None:
    return None if value is None else _intern(value)


def _cats(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({_intern(v) for v in values}))


def _scope(scope: ConsentScope | None) -> tuple[str | None, str | None, str | None, tuple[str, ...]]:
    if scope is None:
        return None, None, None, ()
    return _opt(scope.recipient), _opt(scope.recipient_class), _opt(scope.purpose), _cats(scope.categories)


# Record layouts (tuples; field 0 is always the effective time in microseconds):
#   consent     (t, consent_id, giver_id, relationship, flags, recipient, recipient_class, purpose, cats, assessment)
#   withdrawal  (t, consent_id|None, actor_id, relationship, flags, recipient, recipient_class, purpose, cats)
#   refusal     (t, actor_id, relationship, flags, recipient, recipient_class, purpose, cats)
#   objection   (t, objection_id, actor_id, relationship, flags, recipient, recipient_class, purpose, cats,
#                grounds, upheld)
#   objection_end (t, objection_id)
#   move        (t, enrolled, school, left_trust)
#   birth       (recorded_t, date_ordinal)
#   court_order (notified_t, order_id, until_t|None, person_ids, recipients, cats)
#   standing    (t, person_id, relationship, flags)
#   care_order  (t, order_id, local_authority, until_t|None)
#   competence  (t, assessment_id, competent, purposes)
#   flow        (occurred_t, flow_event_id, expires_t)
SUBJECT_SECTIONS = (
    "consents",
    "withdrawals",
    "refusals",
    "objections",
    "objection_ends",
    "moves",
    "births",
    "court_orders",
    "standings",
    "care_orders",
    "competences",
    "flows",
)
"""The record lists of a subject, in serialisation order."""


class SubjectState:
    """Every fact known about one data subject, each list sorted by (effective time, id)."""

    __slots__ = (*SUBJECT_SECTIONS, "memo")

    consents: list[tuple[Any, ...]]
    withdrawals: list[tuple[Any, ...]]
    refusals: list[tuple[Any, ...]]
    objections: list[tuple[Any, ...]]
    objection_ends: list[tuple[Any, ...]]
    moves: list[tuple[Any, ...]]
    births: list[tuple[Any, ...]]
    court_orders: list[tuple[Any, ...]]
    standings: list[tuple[Any, ...]]
    care_orders: list[tuple[Any, ...]]
    competences: list[tuple[Any, ...]]
    flows: list[tuple[Any, ...]]
    memo: dict[Any, Any] | None
    """Lookups derived from the records (the evaluator's per-shape consent index); dropped when one is added."""

    def __init__(self) -> None:
        for name in SUBJECT_SECTIONS:
            setattr(self, name, [])
        self.memo = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SubjectState):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in SUBJECT_SECTIONS)

    __hash__ = None  # type: ignore[assignment]

    def is_empty(self) -> bool:
        """True when nothing at all is recorded."""
        return not any(getattr(self, n) for n in SUBJECT_SECTIONS)

    def _add(self, section: str, record: tuple[Any, ...]) -> bool:
        records: list[tuple[Any, ...]] = getattr(self, section)
        at = bisect.bisect_left(records, _sort_key(record), key=_sort_key)
        # An identical record already there is a re-delivered fact: idempotent.
        for existing in records[at:]:
            if _sort_key(existing) != _sort_key(record):
                break
            if existing == record:
                return False
        records.insert(at, record)
        self.memo = None
        return True

    def apply(self, fact: Fact) -> bool:
        """Record a subject fact; False when it was already recorded (a duplicate delivery)."""
        t = to_us(fact.occurred_at)
        if isinstance(fact, ConsentGiven):
            rec, rcls, purpose, cats = _scope(fact.scope)
            flags = actor_flags(fact.given_by) | (EXPLICIT if fact.explicit else 0) | (WRITTEN if fact.written else 0)
            return self._add(
                "consents",
                (t, fact.consent_id, fact.given_by.id, _intern(fact.given_by.relationship), flags, rec, rcls,
                 purpose, cats, fact.competence_assessment_id),
            )  # fmt: skip
        if isinstance(fact, ConsentWithdrawn):
            rec, rcls, purpose, cats = _scope(fact.scope)
            actor = fact.withdrawn_by
            return self._add(
                "withdrawals",
                (t, fact.consent_id, actor.id, _intern(actor.relationship), actor_flags(actor), rec, rcls, purpose,
                 cats),
            )  # fmt: skip
        if isinstance(fact, ConsentRefused):
            rec, rcls, purpose, cats = _scope(fact.scope)
            actor = fact.refused_by
            return self._add(
                "refusals",
                (t, actor.id, _intern(actor.relationship), actor_flags(actor), rec, rcls, purpose, cats),
            )
        if isinstance(fact, ObjectionRaised):
            rec, rcls, purpose, cats = _scope(fact.scope)
            actor = fact.objected_by
            return self._add(
                "objections",
                (t, fact.objection_id, actor.id, _intern(actor.relationship), actor_flags(actor), rec, rcls,
                 purpose, cats, _intern(fact.grounds), fact.upheld),
            )  # fmt: skip
        if isinstance(fact, ObjectionWithdrawn):
            return self._add("objection_ends", (t, fact.objection_id))
        if isinstance(fact, PupilEnrolled):
            return self._add("moves", (t, True, _intern(fact.school), False))
        if isinstance(fact, PupilLeft):
            return self._add("moves", (t, False, _intern(fact.school), fact.last_trust_school))
        if isinstance(fact, BirthDateRecorded):
            return self._add("births", (t, fact.birth_date.toordinal()))
        if isinstance(fact, CourtOrderNotified):
            until = None if fact.valid_until is None else to_us(fact.valid_until)
            return self._add(
                "court_orders",
                (to_us(fact.trust_notified_at), fact.order_id, until, tuple(sorted(fact.restricted_person_ids)),
                 _cats(fact.restricted_recipients), _cats(fact.categories)),
            )  # fmt: skip
        if isinstance(fact, ParentalResponsibilityRecorded):
            person = fact.person
            return self._add("standings", (t, person.id, _intern(person.relationship), actor_flags(person)))
        if isinstance(fact, CareOrderRecorded):
            until = None if fact.valid_until is None else to_us(fact.valid_until)
            return self._add("care_orders", (t, fact.order_id, fact.local_authority, until))
        if isinstance(fact, CompetenceAssessed):
            return self._add("competences", (t, fact.assessment_id, fact.competent, _cats(fact.purposes)))
        raise TypeError(f"not a subject fact: {type(fact).__name__}")

    # --- as-of reads -------------------------------------------------------------------------------------

    def birth_date(self) -> date | None:
        """The date of birth: the latest record wins, whenever the flow was (a correction is a correction)."""
        if not self.births:
            return None
        return date.fromordinal(self.births[-1][1])

    def standing(self, person_id: str, t: int) -> tuple[str, int] | None:
        """(relationship, flags) of a person's latest recorded standing at or before `t`."""
        found = None
        for rec in self.standings:
            if rec[0] > t:
                break
            if rec[1] == person_id:
                found = (rec[2], rec[3])
        return found

    def left_at(self, t: int) -> int | None:
        """When the pupil left the Trust, if the latest move at or before `t` is leaving the Trust."""
        last = None
        for rec in self.moves:
            if rec[0] > t:
                break
            last = rec
        if last is not None and not last[1] and last[3]:
            return int(last[0])
        return None

    def school_at(self, t: int) -> str | None:
        """The school the pupil was on roll at, at `t`."""
        last = None
        for rec in self.moves:
            if rec[0] > t:
                break
            last = rec
        return str(last[2]) if last is not None and last[1] else None

    def competent_at(self, t: int, purpose: str) -> str | None:
        """The id of the latest competence assessment at or before `t` covering `purpose`, if it says competent."""
        latest = None
        for rec in self.competences:
            if rec[0] > t:
                break
            if not rec[3] or purpose in rec[3]:
                latest = rec
        return str(latest[1]) if latest is not None and latest[2] else None

    def care_order_at(self, t: int) -> tuple[Any, ...] | None:
        """A care order in force at `t`."""
        for rec in self.care_orders:
            if rec[0] <= t and (rec[3] is None or t <= rec[3]):
                return rec
        return None

    def court_orders_at(self, t: int) -> list[tuple[Any, ...]]:
        """Court orders binding the Trust at `t` (from trust_notified_at, inclusive, until valid_until)."""
        return [rec for rec in self.court_orders if rec[0] <= t and (rec[2] is None or t <= rec[2])]

    def objection_ended(self, objection_id: str, t: int) -> bool:
        """True when the objection was withdrawn at or before `t`."""
        return any(rec[0] <= t and rec[1] == objection_id for rec in self.objection_ends)

    # --- recent flows ------------------------------------------------------------------------------------

    def remember_flow(self, flow_event_id: str, occurred: int, expires: int) -> None:
        """Keep a flow reference for re-evaluation until `expires`."""
        self._add("flows", (occurred, flow_event_id, expires))

    def expire_flows(self, now: int) -> None:
        """Forget flows whose lateness window has closed."""
        if self.flows:
            self.flows = [rec for rec in self.flows if rec[2] >= now]

    def flows_since(self, t: int | None) -> list[str]:
        """Recent flows that occurred at or after `t` (all of them when `t` is None)."""
        return [rec[1] for rec in self.flows if t is None or rec[0] >= t]

    # --- serialisation -----------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Self-contained compact bytes (what a faust table stores)."""
        return packing.dumps_portable([getattr(self, n) for n in SUBJECT_SECTIONS])

    @classmethod
    def from_bytes(cls, raw: bytes) -> SubjectState:
        """The inverse of `to_bytes`."""
        state = cls()
        for name, records in zip(SUBJECT_SECTIONS, packing.loads_portable(raw), strict=True):
            setattr(state, name, records)
        return state

    def to_json(self) -> str:
        """Compact JSON: non-empty sections as lists of records (for tables that prefer text, and debugging)."""
        sections = {name: getattr(self, name) for name in SUBJECT_SECTIONS if getattr(self, name)}
        return json.dumps(sections, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> SubjectState:
        """The inverse of `to_json`."""
        data = json.loads(text)
        state = cls()
        for name, layout in zip(SUBJECT_SECTIONS, packing.LAYOUTS, strict=True):
            records = [
                tuple(tuple(value) if kind in "Ll" else value for kind, value in zip(layout, record, strict=True))
                for record in data.get(name, [])
            ]
            setattr(state, name, records)
        return state

    def pack(self, vocabulary: packing.Vocabulary) -> bytes:
        """Denser in-process bytes whose vocabulary strings are codes into `vocabulary`."""
        return packing.dumps_vocab([getattr(self, n) for n in SUBJECT_SECTIONS], vocabulary)

    @classmethod
    def unpack(cls, raw: bytes, vocabulary: packing.Vocabulary) -> SubjectState:
        """The inverse of `pack`."""
        state = cls.__new__(cls)  # every section is set just below
        for name, records in zip(SUBJECT_SECTIONS, packing.loads_vocab(raw, vocabulary), strict=True):
            setattr(state, name, records)
        state.memo = None
        return state


def _sort_key(record: tuple[Any, ...]) -> tuple[int, str]:
    return record[0], str(record[1])


class RecipientState:
    """Agreements with one recipient, and the recent flows to it."""

    __slots__ = ("agreements", "flows", "terminations")

    def __init__(self) -> None:
        # (signed_t, agreement_id, type, valid_from_t, valid_until_t|None, purposes, cats)
        self.agreements: list[tuple[Any, ...]] = []
        self.terminations: list[tuple[int, str]] = []
        self.flows: list[tuple[int, str, int]] = []

    def apply(self, fact: SharingAgreement | AgreementTerminated) -> bool:
        """Record an agreement or its termination; False for a duplicate."""
        if isinstance(fact, SharingAgreement):
            until = None if fact.valid_until is None else to_us(fact.valid_until)
            rec = (
                to_us(fact.occurred_at), fact.agreement_id, _intern(fact.agreement_type), to_us(fact.valid_from),
                until, _cats(fact.purposes), _cats(fact.categories),
            )  # fmt: skip
            if rec in self.agreements:
                return False
            bisect.insort(self.agreements, rec, key=_sort_key)
            return True
        term = (to_us(fact.occurred_at), fact.agreement_id)
        if term in self.terminations:
            return False
        bisect.insort(self.terminations, term)
        return True

    def terminated(self, agreement_id: str, t: int) -> bool:
        """True when the agreement was terminated at or before `t`."""
        return any(tt <= t and aid == agreement_id for tt, aid in self.terminations)


class State:
    """Everything the evaluator reads: subjects (packed, with a decoded cache), recipients, notice versions.

    `cache_size` decoded subjects are kept (about 1-2 KiB each); a subject outside the cache is decoded from
    its packed bytes on each read (roughly 15-20 us on the benchmark machine).
    """

    __slots__ = (
        "_cache",
        "_cache_size",
        "_notices",
        "_recent",
        "_recipients",
        "_subjects",
        "lateness_us",
        "vocabulary",
    )

    def __init__(self, lateness: timedelta = DEFAULT_LATENESS, cache_size: int = 16_384) -> None:
        self._subjects = SubjectStore()
        self._cache: OrderedDict[str, SubjectState] = OrderedDict()
        self._cache_size = cache_size
        self._recipients: dict[str, RecipientState] = {}
        self._notices: list[tuple[int, str]] = []
        # Recent flows per subject, kept beside (not inside) the packed state so judging a flow never re-packs.
        self._recent: dict[str, list[tuple[int, str, int]]] = {}
        self.vocabulary = packing.Vocabulary()
        self.lateness_us = int(lateness.total_seconds() * 1_000_000)

    def __len__(self) -> int:
        return len(self._subjects)

    def subject(self, subject_id: str) -> SubjectState:
        """The state of one subject (an empty, unstored `SubjectState` when nothing is known)."""
        cache = self._cache
        found = cache.get(subject_id)
        if found is not None:
            cache.move_to_end(subject_id)
            return found
        raw = self._subjects.get(subject_id)
        if raw is None:
            return SubjectState()
        found = SubjectState.unpack(raw, self.vocabulary)
        self._remember(subject_id, found)
        return found

    def _remember(self, subject_id: str, subject: SubjectState) -> None:
        if self._cache_size <= 0:
            return
        self._cache[subject_id] = subject
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _store(self, subject_id: str, subject: SubjectState) -> None:
        self._subjects.put(subject_id, subject.pack(self.vocabulary))
        self._remember(subject_id, subject)

    def put_packed(self, subject_id: str, packed: bytes) -> None:
        """Store a subject already packed with this state's `vocabulary` (bulk loads, benchmarks)."""
        self._cache.pop(subject_id, None)
        self._subjects.put(subject_id, packed)

    def put_subject(self, subject_id: str, subject: SubjectState) -> None:
        """Replace one subject's state (e.g. restored from a faust table)."""
        self._store(subject_id, subject)

    def recipient(self, recipient_id: str) -> RecipientState:
        """Agreements with a recipient (empty when none are known)."""
        return self._recipients.get(recipient_id) or RecipientState()

    def notice_version_at(self, t: int, default: str) -> str:
        """The privacy notice version in force at `t` (the policy's version until a newer one is published)."""
        if not self._notices:
            return default
        version = default
        for at, ver in self._notices:
            if at > t:
                break
            version = ver
        return version

    def apply(self, fact: Fact) -> bool:
        """Record any fact; False when it is a duplicate delivery."""
        if isinstance(fact, SharingAgreement | AgreementTerminated):
            return self._recipients.setdefault(fact.recipient, RecipientState()).apply(fact)
        if isinstance(fact, NoticeVersionPublished):
            entry = (to_us(fact.occurred_at), fact.version)
            if entry in self._notices:
                return False
            bisect.insort(self._notices, entry)
            return True
        subject = self.subject(fact.subject.id)
        changed = subject.apply(fact)
        if changed:
            self._store(fact.subject.id, subject)
        return changed

    # --- re-evaluation after late facts -------------------------------------------------------------------

    def remember_flow(self, flow: DataFlow, now: datetime) -> None:
        """Keep a flow re-evaluable by late facts for the lateness window (from when it arrived)."""
        occurred = to_us(flow.occurred_at)
        now_us = to_us(now)
        ref = (occurred, flow.event_id, max(occurred, now_us) + self.lateness_us)
        for subject_id in dict.fromkeys(s.id for s in flow.subjects):
            refs = [r for r in self._recent.get(subject_id, ()) if r[2] >= now_us]
            refs.append(ref)
            self._recent[subject_id] = refs
        # A recipient can receive thousands of flows a day: its closed ones are dropped by `expire`, not here
        # (`affected_flows` skips them meanwhile), so remembering a flow stays O(log n).
        bisect.insort(self._recipients.setdefault(flow.recipient, RecipientState()).flows, ref)

    def expire(self, now: datetime) -> None:
        """Forget every flow whose lateness window has closed (bounds memory to the window)."""
        now_us = to_us(now)
        for subject_id in list(self._recent):
            refs = [r for r in self._recent[subject_id] if r[2] >= now_us]
            if refs:
                self._recent[subject_id] = refs
            else:
                del self._recent[subject_id]
        for recipient in self._recipients.values():
            recipient.flows = [f for f in recipient.flows if f[2] >= now_us]

    def affected_flows(self, fact: Fact, now: datetime) -> list[str]:
        """Ids of recent flows whose verdict the fact may change: those at or after its effective time."""
        now_us = to_us(now)
        found = reach(fact)
        if found is None:
            return []
        to, key, since = found
        refs = self.recipient(key).flows if to == "recipient" else self._recent.get(key, [])
        return [r[1] for r in refs if r[2] >= now_us and (since is None or r[0] >= since)]


def reach(fact: Fact) -> tuple[Literal["recipient", "subject"], str, int | None] | None:
    """Which open flows a fact may change: those to a recipient or about a subject, occurred at or after `since`.

    `since` is None when every open flow of the subject may change; the whole answer is None when none can.
    """
    if isinstance(fact, SharingAgreement | AgreementTerminated):
        return "recipient", fact.recipient, to_us(fact.occurred_at)
    if isinstance(fact, NoticeVersionPublished):
        return None  # the notice version is recorded, it never changes a verdict
    if isinstance(fact, BirthDateRecorded):
        return "subject", fact.subject.id, None  # a date of birth is timeless: every open flow may change
    since = to_us(fact.trust_notified_at if isinstance(fact, CourtOrderNotified) else fact.occurred_at)
    return "subject", fact.subject.id, since
