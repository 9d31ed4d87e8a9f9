"""A flow judged subject by subject where each subject's state lives, its legs combined into one decision.

The split topology of `docs/streaming.md` (Scaling) as pure logic, with no Kafka. The co-partitioned topics
have `partitions` partitions; a `Member` owns some of them and keeps the facts of the subjects keyed to those,
plus the recipient and notice facts, which every member reads (a global table: small, and needed to combine).

    flow, keyed by its first subject ──► its home member: judges the legs of the subjects it keeps, sends
                                         one `LegRequest` to each partition that keeps any of the others
    `LegRequest` ──► the member keeping those subjects: judges each one's leg on its facts, answers with a
                     `LegResult` to the flow's home, and keeps the legs open to late facts for the lateness window
    `LegResult` ──► home: once every leg is in, `combine` gives the decision (`evaluate`'s, byte for byte)
    late fact ──► the subject's member re-judges the open legs it bears on (and its own flows); a leg that
                  changed goes home again (`revision` + 1), where the flow is combined again and, when its
                  verdicts changed, a superseding decision is made

A flow whose subjects are all kept by its home member never leaves it and is judged as `Replayer` judges it.
Given the same clock, members fed the events of a replay, each getting its share and every message as it
is sent, make exactly `Replayer`'s decisions (`tests/unit/streams/test_legs.py`). Each member's clock is the
latest time it has seen (events, and the flows and results it is sent). A flow still waiting for a leg when a
recipient fact arrives is decided on that fact: the decision it would have got, then superseded, is skipped.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from aiokafka.partitioner import murmur2

from schemas.decisions import Decision
from schemas.events import (
    AgreementTerminated,
    DataFlow,
    Event,
    Fact,
    NoticeVersionPublished,
    SharingAgreement,
    Subject,
)
from schemas.policy import Policy
from streams.evaluate import SubjectLeg, combine, judge_subject
from streams.replay import WAITING, Prior, Replayer, verdicts_of
from streams.state import DEFAULT_LATENESS, reach, to_us

SHARED_FACTS = (SharingAgreement, AgreementTerminated, NoticeVersionPublished)
"""Facts every member applies: the recipient and notice state that combining a flow reads."""


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2), so a key always lands where keyed producers put it."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


@dataclass(frozen=True, slots=True)
class LegRequest:
    """Judge some subjects' legs of a flow: sent to the partition that keeps their facts."""

    flow: DataFlow
    """The whole flow: a subject's checks read flow-level fields, the number of subjects among them."""
    subjects: tuple[Subject, ...]
    home: int
    """The partition of the flow's key, where its legs are combined."""


@dataclass(frozen=True, slots=True)
class LegResult:
    """Subjects' legs of a flow, sent to the flow's home: first judged, or one judged again after a late fact."""

    flow_id: str
    legs: tuple[SubjectLeg, ...]
    judged_at: datetime
    """The judging member's clock: a re-judged leg's superseding decision is made at this time."""
    revision: int
    """0 for the first answer; a re-judged leg's count of changes."""


@dataclass(frozen=True, slots=True)
class SequencesSeen:
    """Sequence numbers of one connector's events taken in by a member, sent to the member that tracks them.

    A connector's events are keyed by subject, so every member sees a share of them; its numbers are tracked in
    one place, the partition its name is keyed to, where a gap means possibly lost events.
    """

    connector: str
    sequences: tuple[int, ...]


Message = Event | LegRequest | LegResult
"""What a member is fed: an event from the input topics, or a leg from another member."""


def encode(message: LegRequest | LegResult | SequencesSeen) -> bytes:
    """A leg message as compact JSON (the value of a record on the legs topic)."""
    if isinstance(message, SequencesSeen):
        seen = {"leg": "seen", "connector": message.connector, "sequences": list(message.sequences)}
        return json.dumps(seen, separators=(",", ":")).encode()
    if isinstance(message, LegRequest):
        subjects = [s.model_dump() for s in message.subjects]
        head = json.dumps({"leg": "request", "home": message.home, "subjects": subjects}, separators=(",", ":"))
        return f'{head[:-1]},"flow":{message.flow.model_dump_json()}}}'.encode()
    body: dict[str, object] = {
        "leg": "result",
        "flow_id": message.flow_id,
        "legs": [leg.to_dict() for leg in message.legs],
        "judged_at": message.judged_at.isoformat(),
        "revision": message.revision,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode(raw: bytes) -> LegRequest | LegResult | SequencesSeen:
    """The inverse of `encode`; ValueError (pydantic's ValidationError among them) for anything else."""
    try:
        return _decode(raw)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a leg message: {type(exc).__name__} {exc}") from exc


def _decode(raw: bytes) -> LegRequest | LegResult | SequencesSeen:
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("a leg message is a JSON object")
    kind = body.get("leg")
    if kind == "request":
        # Validated from the parsed JSON, not parsed a second time: a flow with any other `kind` fails here.
        flow = DataFlow.model_validate(body["flow"])
        subjects = tuple(Subject.model_validate(s) for s in body["subjects"])
        return LegRequest(flow, subjects, int(body["home"]))
    if kind == "result":
        legs = tuple(SubjectLeg.from_dict(leg) for leg in body["legs"])
        return LegResult(str(body["flow_id"]), legs, datetime.fromisoformat(body["judged_at"]), int(body["revision"]))
    if kind == "seen":
        sequences = body["sequences"]
        if not isinstance(sequences, list) or not all(type(n) is int and n >= 0 for n in sequences):
            raise ValueError("a connector's sequence numbers are whole numbers")
        return SequencesSeen(str(body["connector"]), tuple(sequences))
    raise ValueError(f"not a leg message: {kind!r}")


@dataclass(slots=True)
class Sent:
    """What one message made a member send: decisions, and legs to other partitions (partition, message)."""

    decisions: list[Decision] = field(default_factory=list)
    legs: list[tuple[int, LegRequest | LegResult]] = field(default_factory=list)


@dataclass(slots=True)
class Asked:
    """A leg request this member answered: its legs, kept open to late facts about their subjects."""

    request: LegRequest
    legs: list[SubjectLeg]
    """One per subject of the request, in its order."""
    revisions: list[int]
    """How many times each leg changed since it was first sent."""
    expires: int

    def to_bytes(self) -> bytes:
        """The changelog value: the request as sent, then the legs and their revisions."""
        legs = json.dumps([[leg.to_dict(), n] for leg, n in zip(self.legs, self.revisions, strict=True)])
        return encode(self.request) + b"\n" + legs.encode() + b"\n%d" % self.expires

    @classmethod
    def from_bytes(cls, raw: bytes) -> Asked:
        """The inverse of `to_bytes`."""
        request_json, legs_json, expires = raw.split(b"\n")
        request = decode(request_json)
        if not isinstance(request, LegRequest):
            raise ValueError("a kept leg holds its request")
        pairs = json.loads(legs_json)
        return cls(request, [SubjectLeg.from_dict(leg) for leg, _ in pairs], [int(n) for _, n in pairs], int(expires))


AskedKey = tuple[str, str]
"""An answered request: its flow id and its first subject's id."""


class AskedLegs:
    """Answered leg requests kept open to late facts, in memory (`streams.member.AskedOnDisk` keeps them on disk)."""

    def __init__(self) -> None:
        """None yet."""
        self._asked: dict[AskedKey, Asked] = {}
        self._by_subject: dict[str, list[tuple[AskedKey, int]]] = {}
        self._expiry: list[tuple[int, str, str]] = []

    def __contains__(self, key: AskedKey) -> bool:
        return key in self._asked

    def __len__(self) -> int:
        return len(self._asked)

    def get(self, key: AskedKey) -> Asked | None:
        """The answered request, while it is kept."""
        return self._asked.get(key)

    def put(self, key: AskedKey, asked: Asked) -> None:
        """Keep a request answered now, or one whose legs changed."""
        if key not in self._asked:
            for at, subject in enumerate(asked.request.subjects):
                self._by_subject.setdefault(subject.id, []).append((key, at))
            heapq.heappush(self._expiry, (asked.expires, *key))
        self._asked[key] = asked

    def affected(self, subject_id: str, now: int, since: int | None) -> list[tuple[AskedKey, int]]:
        """Kept requests with a leg of the subject, open at `now`, about flows occurred at or after `since`."""
        found = []
        for key, at in self._by_subject.get(subject_id, ()):
            asked = self._asked[key]
            if asked.expires >= now and (since is None or to_us(asked.request.flow.occurred_at) >= since):
                found.append((key, at))
        return found

    def expire(self, horizon: int) -> list[AskedKey]:
        """Forget the requests whose window closed before `horizon`; their keys."""
        closed = []
        while self._expiry and self._expiry[0][0] < horizon:
            _, flow_id, first = heapq.heappop(self._expiry)
            asked = self._asked.pop((flow_id, first), None)
            if asked is None:
                continue
            for subject in asked.request.subjects:
                kept = [k for k in self._by_subject.get(subject.id, ()) if k[0] != (flow_id, first)]
                if kept:
                    self._by_subject[subject.id] = kept
                else:
                    self._by_subject.pop(subject.id, None)
            closed.append((flow_id, first))
        return closed


class Member(Replayer):
    """One worker of the split topology: the partitions it owns, their subjects' facts, and every shared fact.

    A flow with subjects kept elsewhere is open like any other, through the storage hooks of `Replayer` (which
    `streams.processor.StreamState` keeps on disk); its `Prior` carries its legs, and while it waits for one,
    when it arrived. The legs this member judges for other members' flows are kept here.
    """

    def __init__(
        self,
        policy: Policy,
        partitions: int,
        owned: Iterable[int],
        lateness: timedelta = DEFAULT_LATENESS,
        *,
        asked: AskedLegs | None = None,
        **storage: Any,
    ) -> None:
        """A member owning `owned` of the `partitions` partitions, with no state yet.

        `asked` keeps the requests it answers (in memory unless given); `storage` is for a subclass.
        """
        super().__init__(policy, lateness, **storage)
        self.partitions = partitions
        self.owned = frozenset(owned)
        if not self.owned or not self.owned <= set(range(partitions)):
            raise ValueError(f"a member owns some of partitions 0-{partitions - 1}, not {sorted(self.owned)}")
        self._asked = AskedLegs() if asked is None else asked

    def partition(self, subject_id: str) -> int:
        """The partition a subject's facts (and flows keyed by it) are on."""
        return partition_of(subject_id.encode(), self.partitions)

    def keeps(self, subject_id: str) -> bool:
        """True when this member keeps the subject's facts."""
        return self.partition(subject_id) in self.owned

    def take(self, message: Message) -> Sent:
        """Apply one message; what it made this member send."""
        sent = Sent()
        if isinstance(message, LegRequest):
            self._judge_leg(message, sent)
        elif isinstance(message, LegResult):
            self._take_leg(message, sent)
        elif isinstance(message, DataFlow):
            self._flow(message, sent)
        else:
            self._fact(message, sent)
        return sent

    # --- at the flow's home ------------------------------------------------------------------------------------

    def _flow(self, flow: DataFlow, sent: Sent) -> None:
        remote = [s for s in _distinct(flow) if not self.keeps(s.id)]
        if not remote:
            sent.decisions.extend(Replayer.feed(self, flow))  # every subject is here: judged as a replay judges it
            return
        if self.is_duplicate(flow):
            self.duplicates += 1
            return
        now = self._advance(flow)
        self._open_as(flow, Prior.awaiting(self._local_legs(flow, ()), now), now, WAITING)
        home = self.partition(flow.subjects[0].id)
        elsewhere: dict[int, list[Subject]] = {}
        for subject in remote:
            elsewhere.setdefault(self.partition(subject.id), []).append(subject)
        sent.legs.extend((p, LegRequest(flow, tuple(subjects), home)) for p, subjects in elsewhere.items())

    def _local_legs(self, flow: DataFlow, known: Iterable[SubjectLeg]) -> tuple[SubjectLeg, ...]:
        """`known` with the legs of the subjects kept here judged (again) on their facts now."""
        legs = {leg.subject_id: leg for leg in known}
        for subject in _distinct(flow):
            if self.keeps(subject.id):
                legs[subject.id] = judge_subject(flow, subject, self.state, self.policy)
        return tuple(legs.values())

    def _take_leg(self, result: LegResult, sent: Sent) -> None:
        self._advance_to(result.judged_at)
        found = self._open_flow(result.flow_id)
        if found is None:
            return  # the flow left the lateness window here
        flow, prior = found
        legs = tuple({leg.subject_id: leg for leg in (*prior.legs, *result.legs)}.values())
        if prior.waiting is None:
            self._recombine(flow, prior, legs, result.judged_at, sent)
            return
        have = {leg.subject_id for leg in legs}
        if not all(s.id in have for s in flow.subjects):
            self._keep(flow.event_id, replace(prior, legs=legs))
            return
        decided_at = max(prior.waiting, flow.emitted_at)
        decision = combine(flow, legs, self.state, self.policy, decided_at=decided_at)
        # Its window runs from when it arrived, as any flow's; one that closed meanwhile closes now, decided.
        expires = max(to_us(flow.occurred_at), to_us(prior.waiting)) + self._lateness_us
        self._keep(flow.event_id, Prior.of(decision, legs), expires)
        sent.decisions.append(decision)

    def _recombine(self, flow: DataFlow, prior: Prior, legs: tuple[SubjectLeg, ...], now: datetime, sent: Sent) -> None:
        fresh = combine(
            flow,
            legs,
            self.state,
            self.policy,
            decided_at=now,
            supersedes=prior.decision_id,
            revision=prior.revision + 1,
        )
        if verdicts_of(fresh) == prior.verdicts:
            if legs != prior.legs:
                self._keep(flow.event_id, replace(prior, legs=legs))  # the same verdicts on other rules or facts
            return
        self._keep(flow.event_id, Prior.of(fresh, legs))
        sent.decisions.append(fresh)

    # --- where a subject's facts are kept -----------------------------------------------------------------------

    def _judge_leg(self, request: LegRequest, sent: Sent) -> None:
        flow = request.flow
        now = self._advance(flow)
        key = (flow.event_id, request.subjects[0].id)
        if key in self._asked:
            return  # asked again: the answer was sent with the first request
        legs = [judge_subject(flow, subject, self.state, self.policy) for subject in request.subjects]
        expires = max(to_us(flow.occurred_at), to_us(now)) + self._lateness_us
        self._keep_asked(key, Asked(request, legs, [0] * len(legs), expires))
        sent.legs.append((request.home, LegResult(flow.event_id, tuple(legs), now, 0)))

    def _keep_asked(self, key: AskedKey, asked: Asked) -> None:
        """Keep an answered request open to late facts (also how a restore puts one back)."""
        self._asked.put(key, asked)
        self._asked_changed(key)

    def _asked_changed(self, key: AskedKey) -> None:
        """An answered request was kept or one of its legs changed (a hook: `MemberState` writes it down)."""

    def _asked_closed(self, key: AskedKey) -> None:
        """An answered request left the lateness window (a hook: `MemberState` deletes it)."""

    def _expire(self, horizon: int) -> None:
        super()._expire(horizon)
        for key in self._asked.expire(horizon):
            self._asked_closed(key)

    # --- facts ------------------------------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Decision]:
        """Not for a member: it may have legs to send for any event (`take`)."""
        raise TypeError("a Member takes events with take(), which also returns the legs to send")

    def _fact(self, fact: Fact, sent: Sent) -> None:
        # Replayer.feed's fact branch, for flows with legs elsewhere and the legs kept here besides.
        if self.is_duplicate(fact):
            self.duplicates += 1
            return
        now = self._advance(fact)
        affected = self._affected(fact, now)
        asked = self._asked_affected(fact, now)
        if not self.state.apply(fact):
            return
        for flow_id in affected:
            found = self._open_flow(flow_id)
            if found is None:
                continue
            flow, prior = found
            if not prior.legs:  # every subject is here
                fresh = self._rejudge(flow_id, now)
                if fresh is not None:
                    sent.decisions.append(fresh)
                continue
            # A leg reads its subject's facts only: a recipient fact changes none, and is read when combining.
            legs = prior.legs if isinstance(fact, SHARED_FACTS) else self._local_legs(flow, prior.legs)
            if prior.waiting is not None:
                if legs != prior.legs:
                    self._keep(flow_id, replace(prior, legs=legs))
            else:
                self._recombine(flow, prior, legs, now, sent)
        for key, at in asked:
            self._rejudge_leg(key, at, now, sent)

    def _asked_affected(self, fact: Fact, now: datetime) -> list[tuple[AskedKey, int]]:
        """The answered requests with a leg the fact may change, and that leg's place in the request."""
        found = reach(fact)
        if found is None or found[0] != "subject":
            return []
        _, subject_id, since = found
        return self._asked.affected(subject_id, to_us(now), since)

    def _rejudge_leg(self, key: AskedKey, at: int, now: datetime, sent: Sent) -> None:
        asked = self._asked.get(key)
        assert asked is not None, f"re-judging a leg of {key} that is not kept"
        request = asked.request
        leg = judge_subject(request.flow, request.subjects[at], self.state, self.policy)
        if leg != asked.legs[at]:
            asked.legs[at] = leg
            asked.revisions[at] += 1
            self._asked.put(key, asked)
            self._asked_changed(key)
            sent.legs.append((request.home, LegResult(request.flow.event_id, (leg,), now, asked.revisions[at])))


def _distinct(flow: DataFlow) -> list[Subject]:
    # A subject named twice is judged once, as its first mention (as `evaluate` does).
    first: dict[str, Subject] = {}
    for subject in flow.subjects:
        first.setdefault(subject.id, subject)
    return list(first.values())
