"""Decision JSON written straight from text fragments: the bytes of `Decision.to_json_bytes`, without a `Decision`.

`streams.evaluate.decide_json` renders a single-subject decision here. What depends only on the flow's shape and
the policy (recipient, purpose, categories, the head of the explanation, the static rule ids, the policy digest)
is rendered once per shape (`ShapeJson`), what depends only on the set of reason codes once per set
(`CodesJson`); a flow then formats only its own ids, times, subject, notice version and facts relied on.

The layout is pydantic's for `schemas.decisions.Decision`: fields in declaration order, no spaces, strings
escaped as `json.encoder.encode_basestring` escapes them (`"`, `\\`, control characters; everything else
literal, as pydantic's serializer does), UTC datetimes as ISO 8601 with `Z`. Any change to `Decision` must be
made here too: tests/unit/streams/test_render.py compares the two byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from json.encoder import encode_basestring as string

from pydantic import TypeAdapter

from streams.state import from_us, to_us

__all__ = ["CodesJson", "ShapeJson", "datetime_json", "decision_one", "string", "strings"]

_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def strings(values: Iterable[str]) -> str:
    """A JSON array of strings, without spaces."""
    return f"[{','.join(map(string, values))}]"


def datetime_json(value: datetime, micros: int | None = None) -> str:
    """A datetime as pydantic's serializer writes it (a JSON string); `micros` is `to_us(value)` if known."""
    if value.tzinfo is not UTC:
        return _DATETIME.dump_json(value).decode()
    if micros is None:
        micros = to_us(value)
    # pydantic writes what isoformat does (six-digit microseconds only when non-zero), with Z for +00:00; the
    # text up to the hour is shared by every instant in that hour, and isoformat costs more than the rest.
    hour, rest = divmod(micros, _HOUR_US)
    head = _HOURS.get(hour)
    if head is None:
        if len(_HOURS) >= 100_000:
            _HOURS.clear()
        head = _HOURS[hour] = f'"{from_us(hour * _HOUR_US).isoformat()[:14]}'
    fraction = rest % 1_000_000
    if fraction:
        return f'{head}{_TWO[rest // 60_000_000]}:{_TWO[rest // 1_000_000 % 60]}.{fraction:06d}Z"'
    return f'{head}{_TWO[rest // 60_000_000]}:{_TWO[rest // 1_000_000 % 60]}Z"'


_HOUR_US = 3_600_000_000
_HOURS: dict[int, str] = {}
_TWO = [f"{n:02d}" for n in range(60)]


class CodesJson:
    """What a set of reason codes renders to, the same for every flow that reports it."""

    __slots__ = ("because", "joined", "reasons", "verdict")

    def __init__(self, reasons: Iterable[str], because: str) -> None:
        self.reasons = list(reasons)
        # The codes as `decision_id_for` joins them.
        self.joined = ",".join(self.reasons)
        # `"verdict":…,"reasons":[…]`, as in a decision and in each of its disclosures.
        verdict = "violation" if self.reasons else "allowed"
        self.verdict = f'"verdict":"{verdict}","reasons":{strings(self.reasons)}'
        # The explanation's verdict sentence (escaped, unquoted); empty when allowed, where the shape says why.
        self.because = string(f" Violation: {because}.")[1:-1] if self.reasons else ""


class ShapeJson:
    """What a flow's shape renders to under one policy (kept on the memoised shape)."""

    __slots__ = ("allowed", "digest", "flow", "head", "rules", "rules_count")

    def __init__(
        self,
        head_one: str,
        allowed_basis: str,
        recipient: str,
        purpose: str,
        categories: Iterable[str],
        rules: tuple[str, ...],
        digest: str,
    ) -> None:
        # Escaped text inside the explanation's quotes: escaping a concatenation is concatenating the escapes.
        self.head = string(f" {head_one}")[1:-1]
        self.allowed = string(f" Allowed under {allowed_basis}.")[1:-1]
        self.flow = (
            f',"recipient":{string(recipient)},"purpose":{string(purpose)},"categories":{strings(categories)}'
            ',"subject_ids":['
        )
        self.rules_count = len(rules)
        # The shape's own rule ids, keyed by the ids the flow's checks added after them.
        self.rules: dict[tuple[str, ...], str] = {(): strings(rules)}
        self.digest = string(digest)

    def rule_ids(self, rules: list[str]) -> str:
        """The JSON array of a flow's rule ids, which start with the shape's own."""
        added = tuple(rules[self.rules_count :])
        found = self.rules.get(added)
        if found is None:
            found = self.rules[added] = strings(rules)
        return found


def decision_one(
    shape: ShapeJson,
    codes: CodesJson,
    decision_id: str,
    event_id: str,
    day_text: str,
    facts: list[str],
    rule_ids: str,
    subject_id: str,
    subject_kind: str,
    occurred_at: datetime,
    occurred_micros: int,
    decided_at: datetime | None,
    emitted_at: datetime,
    connector: str,
    sequence: int,
    notice_version: str,
    supersedes: str | None,
    revision: int,
) -> bytes:
    """A single-subject decision's JSON bytes (`Decision.to_json_bytes`); `decision_id` is a UUID's text."""
    sid = string(subject_id)
    occurred = datetime_json(occurred_at, occurred_micros)
    # A connector that reports a flow as it happens stamps both times alike: written once.
    same = emitted_at == occurred_at and emitted_at.tzinfo is occurred_at.tzinfo
    emitted = occurred if same else datetime_json(emitted_at)
    if not facts:
        relied, facts_json = "", "[]"
    elif len(facts) == 1:
        # The usual case (one agreement or one consent): one escape serves the explanation and the list.
        fact = string(facts[0])
        relied, facts_json = f" It relied on {fact[1:-1]}.", f"[{fact}]"
    else:
        relied, facts_json = f" It relied on {string(', '.join(facts))[1:-1]}.", strings(facts)
    return (
        f'{{"decision_id":"{decision_id}","flow_event_id":{string(event_id)},{codes.verdict}'
        f',"explanation":"On {day_text}{shape.head}{codes.because or shape.allowed}{relied}"'
        f"{shape.flow}{sid}]"
        f',"occurred_at":{occurred}'
        f',"decided_at":{emitted if decided_at is None else datetime_json(decided_at)},"emitted_at":{emitted}'
        f',"source_connector":{string(connector)},"source_sequence":{sequence}'
        f',"policy_digest":{shape.digest},"notice_version":{string(notice_version)}'
        f',"supersedes":{"null" if supersedes is None else string(supersedes)}'
        f',"rule_ids":{rule_ids},"facts_relied_on":{facts_json}'
        f',"disclosures":[{{"subject_id":{sid},"subject_kind":{string(subject_kind)},{codes.verdict}}}]'
        f',"revision":{revision}}}'
    ).encode()
