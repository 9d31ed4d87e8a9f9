"""Offline replay: events in arrival order in, decisions out, exactly as the stream processor would decide.

    replay_lines(lines, policy) -> ReplayResult         # JSON lines; bad lines become `Rejected`, never stop
    Replayer(policy).feed(event) -> list[Decision]       # one event at a time

A flow gets one decision when it arrives (a re-delivered `event_id` gets none). A fact that arrives late but
carries an earlier effective time re-evaluates the recent flows it bears on (the lateness window); when the
verdict changes, a new decision is emitted that `supersedes` the previous one, never an edit (RULES.md §2).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError

from schemas.decisions import Decision
from schemas.events import DataFlow, Event, EventEnvelope, Fact, parse_event
from schemas.policy import Policy
from streams.evaluate import SubjectLeg, evaluate
from streams.state import DEFAULT_LATENESS, State, to_us

WAITING = 2**62
"""The end of the window of a flow still waiting for a leg: none, until its first decision sets it."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input line that could not be used, with its 1-based line number and why."""

    line: int
    reason: str
    raw: str


Outcome = tuple[str, tuple[str, ...]]
"""A flow's final (verdict, reasons): all a summary or a policy comparison needs of it."""

Verdicts = tuple[str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]
"""A decision's verdict, its reasons and each subject's reasons: a change in any of them is a new decision."""


def verdicts_of(decision: Decision) -> Verdicts:
    """What of `decision` a re-judgment compares with (`Prior.verdicts`)."""
    return (
        decision.verdict,
        tuple(decision.reasons),
        tuple((d.subject_id, tuple(d.reasons)) for d in decision.disclosures),
    )


@dataclass(frozen=True, slots=True)
class Prior:
    """What re-judging an open flow needs of its latest decision: its id, its revision and its verdicts."""

    decision_id: str
    revision: int
    verdicts: Verdicts
    legs: tuple[SubjectLeg, ...] = ()
    """A flow with subjects kept by other members (`streams.legs`): every leg of it known so far."""
    waiting: datetime | None = None
    """Set while such a flow still waits for a leg: the clock when it arrived."""

    @classmethod
    def of(cls, decision: Decision, legs: tuple[SubjectLeg, ...] = ()) -> Prior:
        """The prior that `decision` leaves for the next re-judgment of its flow."""
        return cls(decision.decision_id, decision.revision, verdicts_of(decision), legs)

    @classmethod
    def awaiting(cls, legs: tuple[SubjectLeg, ...], arrived: datetime) -> Prior:
        """The prior of a flow not decided yet: it waits for the legs of subjects kept elsewhere."""
        return cls("", -1, ("", (), ()), legs, arrived)


@dataclass(slots=True)
class ReplayResult:
    """What a replay produced: counts, each flow's final outcome, the rejects, and (when kept) every decision."""

    decisions: list[Decision] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    duplicates: int = 0
    emitted: int = 0
    superseding: int = 0
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def record(self, decision: Decision, keep: bool) -> None:
        """Count one emitted decision; a later decision on the same flow replaces its final outcome."""
        self.emitted += 1
        if decision.supersedes:
            self.superseding += 1
        self.outcomes[decision.flow_event_id] = (decision.verdict, tuple(decision.reasons))
        if keep:
            self.decisions.append(decision)

    def final(self) -> dict[str, Decision]:
        """The latest kept decision on each flow (the verdict on the complete facts)."""
        latest: dict[str, Decision] = {}
        for decision in self.decisions:
            latest[decision.flow_event_id] = decision
        return latest


def describe(exc: ValidationError) -> str:
    """One line per problem, naming the field path."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<event>'}: {err['msg']}" for err in exc.errors(include_url=False)
    )


def parse_lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, Event | Rejected]]:
    """(line number, event or `Rejected`) per non-blank line; invalid lines never stop the iteration."""
    for number, line in enumerate(lines, start=1):
        text = line.decode("utf-8", "backslashreplace") if isinstance(line, bytes) else line
        if not text.strip():
            continue
        try:
            yield number, parse_event(text)
        except ValidationError as exc:
            yield number, Rejected(number, f"invalid event: {describe(exc)}", text.rstrip("\n"))
        except ValueError as exc:
            yield number, Rejected(number, f"unreadable event: {exc}", text.rstrip("\n"))


class Replayer:
    """The stream processor's logic without Kafka: state, recent flows and the latest decision per flow."""

    def __init__(self, policy: Policy, lateness: timedelta = DEFAULT_LATENESS) -> None:
        self.policy = policy
        self.state = State(lateness=lateness)
        self._payloads: dict[str, bytes] = {}
        self._flows: dict[str, DataFlow] = {}
        self._latest: dict[str, Prior] = {}
        self._expiry: list[tuple[int, str]] = []
        self._lateness_us = int(lateness.total_seconds() * 1_000_000)
        self.watermark: datetime | None = None
        self.duplicates = 0
        self._events = 0

    def is_duplicate(self, event: EventEnvelope) -> bool:
        """True for a re-delivery; raises ValueError when an event_id is reused for a different payload."""
        payload = hashlib.blake2b(event.model_dump_json().encode(), digest_size=16).digest()
        seen = self._payloads.get(event.event_id)
        if seen is None:
            self._payloads[event.event_id] = payload
            return False
        if seen != payload:
            raise ValueError(f"event_id {event.event_id!r} reused with a different payload")
        return True

    def _advance(self, event: EventEnvelope) -> datetime:
        return self._advance_to(event.emitted_at)

    def _advance_to(self, moment: datetime) -> datetime:
        if self.watermark is None or moment > self.watermark:
            self.watermark = moment
        now = self.watermark
        self._expire(to_us(now))
        self._events += 1
        if self._events % 10_000 == 0:
            self.state.expire(now)  # keeps the per-subject flow references bounded by the window
        return now

    # How open flows are kept: objects here; `streams.processor.StreamState` keeps their JSON on disk instead.

    def _open(self, flow: DataFlow, decision: Decision, now: datetime, expires: int) -> None:
        self.state.remember_flow(flow, now)
        self._flows[flow.event_id] = flow
        self._latest[flow.event_id] = Prior.of(decision)
        heapq.heappush(self._expiry, (expires, flow.event_id))

    def _open_as(self, flow: DataFlow, prior: Prior, now: datetime, expires: int) -> None:
        """Open a flow with a prior that is not a decision's (one waiting for legs judged elsewhere)."""
        self.state.remember_flow(flow, now)
        self._flows[flow.event_id] = flow
        self._latest[flow.event_id] = prior
        if expires < WAITING:
            heapq.heappush(self._expiry, (expires, flow.event_id))

    def _keep(self, flow_id: str, prior: Prior, expires: int | None = None) -> None:
        """An open flow's new prior and, when given, the end of its window (a waiting flow decided at last)."""
        self._latest[flow_id] = prior
        if expires is not None:
            heapq.heappush(self._expiry, (expires, flow_id))

    def _expire(self, horizon: int) -> None:
        while self._expiry and self._expiry[0][0] < horizon:
            _, flow_id = heapq.heappop(self._expiry)
            self._close(flow_id)

    def _affected(self, fact: Fact, now: datetime) -> list[str]:
        return self.state.affected_flows(fact, now)

    def _open_flow(self, flow_id: str) -> tuple[DataFlow, Prior] | None:
        flow = self._flows.get(flow_id)
        previous = self._latest.get(flow_id)
        return None if flow is None or previous is None else (flow, previous)

    def _supersede(self, flow_id: str, decision: Decision) -> None:
        self._keep(flow_id, Prior.of(decision))

    def _close(self, flow_id: str) -> None:
        self._flows.pop(flow_id, None)
        self._latest.pop(flow_id, None)

    def feed(self, event: Event) -> list[Decision]:
        """Apply one event; returns the decisions it produced (none for a duplicate or a fact that changes none)."""
        if self.is_duplicate(event):
            self.duplicates += 1
            return []
        now = self._advance(event)
        if isinstance(event, DataFlow):
            decision = evaluate(event, self.state, self.policy, decided_at=max(now, event.emitted_at))
            expires = max(to_us(event.occurred_at), to_us(now)) + self._lateness_us
            self._open(event, decision, now, expires)
            return [decision]
        affected = self._affected(event, now)
        if not self.state.apply(event):
            return []
        produced = []
        for flow_id in affected:
            fresh = self._rejudge(flow_id, now)
            if fresh is not None:
                produced.append(fresh)
        return produced

    def _rejudge(self, flow_id: str, now: datetime) -> Decision | None:
        """An open flow judged again after a fact: the superseding decision when its verdicts changed."""
        found = self._open_flow(flow_id)
        if found is None:
            return None
        flow, previous = found
        fresh = evaluate(
            flow,
            self.state,
            self.policy,
            decided_at=now,
            supersedes=previous.decision_id,
            revision=previous.revision + 1,
        )
        if verdicts_of(fresh) == previous.verdicts:
            return None
        self._supersede(flow_id, fresh)
        return fresh


def replay_lines(
    lines: Iterable[str | bytes],
    policy: Policy,
    lateness: timedelta = DEFAULT_LATENESS,
    *,
    on_decision: Callable[[Decision], None] | None = None,
    keep_decisions: bool = True,
    progress: Callable[[int, ReplayResult], None] | None = None,
    progress_every: int = 100_000,
) -> ReplayResult:
    """Replay JSON lines in order; invalid lines and reused event ids are rejected, and do not stop the run.

    `on_decision` sees every decision as it is made (to stream them to a file); with `keep_decisions=False`
    only each flow's final outcome is kept, so years of history replay in bounded memory. `progress` is called
    every `progress_every` lines with the line number and the result so far.
    """
    replayer = Replayer(policy, lateness)
    result = ReplayResult()
    number = 0
    for number, item in parse_lines(lines):
        if progress is not None and number % progress_every == 0:
            progress(number, result)
        if isinstance(item, Rejected):
            result.rejects.append(item)
            continue
        try:
            decisions = replayer.feed(item)
        except ValueError as exc:
            result.rejects.append(Rejected(number, str(exc), item.model_dump_json()))
            continue
        for decision in decisions:
            result.record(decision, keep_decisions)
            if on_decision is not None:
                on_decision(decision)
    result.duplicates = replayer.duplicates
    if progress is not None:
        progress(number, result)
    return result


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts over the final decision of each flow."""

    flows: int
    decisions: int
    superseded: int
    by_verdict: dict[str, int]
    by_reason: dict[str, int]

    def render(self) -> str:
        """A short plain-text report."""
        lines = [
            f"flows judged: {self.flows}   decisions emitted: {self.decisions}   superseding: {self.superseded}",
            "verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_verdict.items())),
        ]
        if self.by_reason:
            lines.append("reasons:")
            lines += [f"  {code:<42} {count}" for code, count in sorted(self.by_reason.items(), key=lambda kv: -kv[1])]
        return "\n".join(lines)


def summarise(result: ReplayResult) -> Summary:
    """Counts by final verdict and by reason code."""
    outcomes = result.outcomes.values()
    return Summary(
        flows=len(result.outcomes),
        decisions=result.emitted,
        superseded=result.superseding,
        by_verdict=dict(Counter(verdict for verdict, _ in outcomes)),
        by_reason=dict(Counter(code for _, reasons in outcomes for code in reasons)),
    )


@dataclass(frozen=True, slots=True)
class Difference:
    """A flow whose final verdict differs between two policies."""

    flow_event_id: str
    before: tuple[str, list[str]]
    after: tuple[str, list[str]]


def compare(baseline: ReplayResult, candidate: ReplayResult) -> list[Difference]:
    """Flows whose final verdict or reasons differ between two replays of the same events."""
    a, b = baseline.outcomes, candidate.outcomes
    missing: Outcome = ("missing", ())
    out = []
    for flow_id in a.keys() | b.keys():
        before, after = a.get(flow_id, missing), b.get(flow_id, missing)
        if before != after:
            out.append(Difference(flow_id, (before[0], list(before[1])), (after[0], list(after[1]))))
    return sorted(out, key=lambda d: d.flow_event_id)
