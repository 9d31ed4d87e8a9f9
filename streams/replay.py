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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError

from schemas.decisions import Decision
from schemas.events import DataFlow, Event, EventEnvelope, parse_event
from schemas.policy import Policy
from streams.evaluate import evaluate
from streams.state import DEFAULT_LATENESS, State, to_us


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input line that could not be used, with its 1-based line number and why."""

    line: int
    reason: str
    raw: str


@dataclass(slots=True)
class ReplayResult:
    """Every decision in emission order, the rejected lines, and the final decision per flow."""

    decisions: list[Decision] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    duplicates: int = 0

    def final(self) -> dict[str, Decision]:
        """The latest decision on each flow (the verdict on the complete facts)."""
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
        self._latest: dict[str, Decision] = {}
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
        if self.watermark is None or event.emitted_at > self.watermark:
            self.watermark = event.emitted_at
        now = self.watermark
        horizon = to_us(now)
        while self._expiry and self._expiry[0][0] < horizon:
            _, flow_id = heapq.heappop(self._expiry)
            self._flows.pop(flow_id, None)
            self._latest.pop(flow_id, None)
        self._events += 1
        if self._events % 10_000 == 0:
            self.state.expire(now)  # keeps the per-subject flow references bounded by the window
        return now

    def feed(self, event: Event) -> list[Decision]:
        """Apply one event; returns the decisions it produced (none for a duplicate or a fact that changes none)."""
        if self.is_duplicate(event):
            self.duplicates += 1
            return []
        now = self._advance(event)
        if isinstance(event, DataFlow):
            decision = evaluate(event, self.state, self.policy, decided_at=max(now, event.emitted_at))
            self.state.remember_flow(event, now)
            self._flows[event.event_id] = event
            self._latest[event.event_id] = decision
            expires = max(to_us(event.occurred_at), to_us(now)) + self._lateness_us
            heapq.heappush(self._expiry, (expires, event.event_id))
            return [decision]
        affected = self.state.affected_flows(event, now)
        if not self.state.apply(event):
            return []
        produced = []
        for flow_id in affected:
            flow = self._flows.get(flow_id)
            previous = self._latest.get(flow_id)
            if flow is None or previous is None:
                continue
            fresh = evaluate(
                flow,
                self.state,
                self.policy,
                decided_at=now,
                supersedes=previous.decision_id,
                revision=previous.revision + 1,
            )
            if _verdict_changed(previous, fresh):
                self._latest[flow_id] = fresh
                produced.append(fresh)
        return produced


def _verdict_changed(old: Decision, new: Decision) -> bool:
    return (
        old.verdict != new.verdict
        or old.reasons != new.reasons
        or [(d.subject_id, d.reasons) for d in old.disclosures] != [(d.subject_id, d.reasons) for d in new.disclosures]
    )


def replay_lines(lines: Iterable[str | bytes], policy: Policy, lateness: timedelta = DEFAULT_LATENESS) -> ReplayResult:
    """Replay JSON lines in order; invalid lines and reused event ids are rejected, and do not stop the run."""
    replayer = Replayer(policy, lateness)
    result = ReplayResult()
    for number, item in parse_lines(lines):
        if isinstance(item, Rejected):
            result.rejects.append(item)
            continue
        try:
            result.decisions.extend(replayer.feed(item))
        except ValueError as exc:
            result.rejects.append(Rejected(number, str(exc), item.model_dump_json()))
    result.duplicates = replayer.duplicates
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
    final = result.final()
    verdicts = Counter(str(d.verdict) for d in final.values())
    reasons = Counter(code for d in final.values() for code in d.reasons)
    return Summary(
        flows=len(final),
        decisions=len(result.decisions),
        superseded=sum(1 for d in result.decisions if d.supersedes),
        by_verdict=dict(verdicts),
        by_reason=dict(reasons),
    )


@dataclass(frozen=True, slots=True)
class Difference:
    """A flow whose final verdict differs between two policies."""

    flow_event_id: str
    before: tuple[str, list[str]]
    after: tuple[str, list[str]]


def compare(baseline: ReplayResult, candidate: ReplayResult) -> list[Difference]:
    """Flows whose final verdict or reasons differ between two replays of the same events."""
    a, b = baseline.final(), candidate.final()
    out = []
    for flow_id in a.keys() | b.keys():
        da, db = a.get(flow_id), b.get(flow_id)
        before = (da.verdict, list(da.reasons)) if da else ("missing", [])
        after = (db.verdict, list(db.reasons)) if db else ("missing", [])
        if before != after:
            out.append(Difference(flow_id, before, after))
    return sorted(out, key=lambda d: d.flow_event_id)
