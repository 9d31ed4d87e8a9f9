"""The policy evaluator: one pure function from (flow, state as of occurred_at, policy) to a `Decision`.

    evaluate(flow: DataFlow, state: State, policy: Policy, *, decided_at: datetime | None = None,
             supersedes: str | None = None, revision: int = 0) -> Decision

No I/O, no clock (``decided_at`` defaults to the flow's ``emitted_at`` so the same input gives the same
decision), no exceptions for violations: a violation is a value. To judge a flow in a test::

    from schemas.events import parse_event
    from schemas.policy import load_policy
    from streams.evaluate import evaluate
    from streams.state import State

    policy = load_policy("policy")            # the Trust's register (validated, hashed)
    state = State()
    state.apply(parse_event(fact_json))       # any number of facts, in any order
    decision = evaluate(parse_event(flow_json), state, policy)
    assert decision.reasons == ["NO_CONSENT"]

The order of checks follows RULES.md §2 (recipient, sale, basis, conditions, consent, minimisation, agreement,
transfer, then court orders, entitlement, harm, objections, retention, channel); the *reported* order of
reason codes is the rank in `schemas.decisions.ReasonCode` (most specific first, RULES.md §1).

What a flow's own fields and the policy decide (its *shape*: recipient, grant, static reasons, explanation
pieces) is worked out once per shape and memoised on the policy index; a single-subject flow of a simple shape
then runs only the checks that read state as of its time (the agreement, the subject's consents, objections,
court orders, retention and age). `evaluate_uncached` gives the same decision without the memo or that plan:
it is the reference they are tested against (tests/unit/streams/test_evaluate_plan.py). `decide_json` gives
`evaluate(...).to_json_bytes()` byte for byte; on the single-subject plan it writes the JSON straight from
fragments pre-rendered per shape and per set of reason codes (`streams.render`), without building a `Decision`
(tests/unit/streams/test_render.py).

A flow about several people can also be judged subject by subject: `judge_subject` reads only one subject's
state and gives its `SubjectLeg`; `combine` adds the flow-level checks (recipient and notice state) and gives the
same decision `evaluate` gives on all of the state at once (tests/unit/streams/test_evaluate_legs.py). The
general path itself is built from them, so the two cannot drift apart.

Where RULES.md is silent, the evaluator does what a careful school DPO would expect (each is commented where
it is implemented):

- A flow's recipient, purpose or category that the register does not know is a violation (fail closed).
- A date of birth that is unknown: a PR holder's consent is accepted (the pupil is presumed a child), but a
  pupil's own consent is not (nobody can show they were old enough).
- A withdrawal naming a scope ends every earlier consent it overlaps, by anyone entitled to consent for the
  subject; a parent's refusal ends only that parent's own earlier consent (except for biometrics, where any
  parent's refusal or objection binds); nobody but the pupil can withdraw a competent pupil's own consent.
- A pupil's own consent to biometrics counts only if given at 18 or over; given younger it stays void after
  the 18th birthday (as for an ISS before 13), so an adult pupil must consent afresh.
- An objection or refusal to biometrics binds when it comes from the child or a parent in the education-law
  sense (a natural parent with or without PR, a PR holder, a guardian, anyone with care of the child, the local
  authority under a care order); a neighbour's or other non-parent's does not.
- A withdrawal naming a consent id reaches exactly that consent's scope (recipient, purpose, categories), also
  when a competent pupil's withdrawal overrides a parent's consent; an id the Trust holds no earlier consent
  for withdraws nothing (if the consent arrives late, the affected flows are re-evaluated).
- An agreement signed after a flow never covers it, whatever its valid_from says.
- DPF certification is taken from the register, never from the connector's claim.
- The connector's to_data_subject flag is believed only for a flow to the family whose request was made by the
  flow's subject (every subject, if several): a processor or partner is never the data subject, nor is a parent
  receiving the child's data, so those transfers are checked whatever the flag says.
- Every flow to the family, operational school updates too, must name who received it (a court order can
  only be honoured that way); the education-law parent and adult-pupil tests apply to all of them, the PR
  and competent-child tests of §6.12 to SARs.
- A pupil's own consent at 13-17 (outside an ISS) rests on the latest competence assessment made by the time
  of the consent that covers its purpose; the assessment the consent form cites counts only on those terms.
- Cool Milk's "FSM flag for over-5s" is read as from the 5th birthday (when the under-5s' free milk ends);
  a pupil with no recorded date of birth cannot be shown to be five, so the flag is not permitted.
- A safeguarding referral is never blocked because the child has left.
- A report to parents after the pupil has left the Trust is not among §6.6's exceptions (the annual report is
  due while the pupil is on roll), so it is RETENTION_EXCEEDED; the family can still make a SAR.
- The CP-file rule (separately, to the DSL) binds transfers to schools: a CP-file purpose must be addressed to
  the DSL and carry only what its grant permits, and CP-file data sent to a school under any other purpose is
  not separate. CP-file content in a referral to children's social care, health or the police is judged as
  safeguarding data (secure channel only): §6.9 makes that sharing lawful and those agencies have no DSL.
- KCSIE's "within 5 days" for the CP file is not checked: RULES.md §1 has no code for a late transfer
  (INSECURE_CHANNEL is about the channel, RETENTION_EXCEEDED about keeping data too long), so a late CP file
  is a gap the DSL's own monitoring must cover.
- Art 9 data a recipient may receive only with explicit consent reports SPECIAL_CATEGORY_WITHOUT_CONDITION;
  ordinary data in the same flow without consent still reports NO_CONSENT.
- A category the recipient may not receive at all is minimisation, not also a consent failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

from schemas.decisions import REASON_ORDER, Decision, ReasonCode, SubjectVerdict, decision_id_for, decision_id_of
from schemas.events import DataFlow, Subject
from schemas.policy import GrantIndex, Policy, PolicyIndex, RecipientDef, covered_by
from streams.render import CodesJson, ShapeJson, decision_one
from streams.state import CARE, DELEGATED, EXPLICIT, PR, WRITTEN, State, SubjectState, from_us, to_us

LONDON = ZoneInfo("Europe/London")
"""Ages are worked out on the London date of occurred_at (RULES.md §2)."""

R = ReasonCode

# Purpose kinds whose flows must not rely on consent, so a refusal, withdrawal or objection never blocks them
# (RULES.md §5 "Where consent state is irrelevant").
_CONSENT_IRRELEVANT = frozenset(
    {"statutory", "safeguarding", "vital_interests", "law_enforcement", "court", "ctf", "legal", "cctv"}
)
_NATURAL_PARENTS = frozenset({"mother", "father", "parent"})
# Relationships that make a person a parent for biometric objections without a recorded flag: natural parents,
# guardians (who hold PR) and foster carers (who have care) - Education Act 1996 s576, as POFA 2012 s27 uses it.
_PARENT_RELATIONSHIPS = _NATURAL_PARENTS | {"guardian", "special_guardian", "foster_carer"}
_FAMILY = "family"
"""The recipient group of the pupil's family and the data subjects themselves (RULES.md §4 Family)."""
_DISCLOSURE_KINDS = frozenset({"family", "subject_access"})
_SCHOOL = "school"
"""The recipient group of other schools, where a CP file goes separately to the DSL (RULES.md §4)."""
_EXPLANATIONS: dict[str, str] = {
    R.UNKNOWN_RECIPIENT: "the recipient is not in the Trust's register",
    R.SALE_OF_DATA: "the Trust received consideration for the data, which consent cannot cure",
    R.MARKETING_WITHOUT_CONSENT: "marketing was sent without an opt-in in force",
    R.PHOTO_WITHOUT_PERMISSION: "a pupil's image was used promotionally without permission in force",
    R.LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS: (
        "the police disclosure had no court order or warrant, no written Sch 2 para 2 request, and no emergency"
    ),
    R.COURT_ORDER_RESTRICTION: "the disclosure breaches a court order the Trust had been notified of",
    R.REQUESTER_NOT_ENTITLED: "the requester is not entitled to this child's data",
    R.HARMFUL_DISCLOSURE: "the data are exempt because disclosure would harm the child",
    R.OBJECTION_NOT_HONOURED: "a binding objection was ignored",
    R.CONSENT_WITHDRAWN: "consent was withdrawn at or before the flow",
    R.CONSENT_GIVER_NOT_AUTHORISED: "the person who gave consent could not give it",
    R.NO_CONSENT: "no valid consent covered this recipient, purpose and categories at the time",
    R.NO_LAWFUL_BASIS: "no Art 6 basis fits this recipient and purpose",
    R.CATEGORY_NOT_PERMITTED_FOR_RECIPIENT: "data outside the recipient's permitted set or the purpose was sent",
    R.SPECIAL_CATEGORY_WITHOUT_CONDITION: "special category data had no valid Art 9 condition",
    R.CRIMINAL_DATA_WITHOUT_CONDITION: "criminal offence data had no DPA Sch 1 condition",
    R.NO_SHARING_AGREEMENT: "there was no Art 28 contract or data sharing agreement",
    R.AGREEMENT_EXPIRED: "the agreement was not in force at the time",
    R.INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD: "a restricted transfer had no adequacy, safeguard or exception",
    R.RETENTION_EXCEEDED: "the data should no longer have been held or shared for this purpose",
    R.INSECURE_CHANNEL: "sensitive or bulk data went by a channel that is not secure",
}
# An agreement of the left-hand type satisfies a need of any right-hand type.
_SATISFIES: dict[str, frozenset[str]] = {
    "art28_contract": frozenset({"art28_contract"}),
    "dsa": frozenset({"dsa", "art28_contract"}),
    "sla": frozenset({"sla", "art28_contract"}),
    "engagement_letter": frozenset({"engagement_letter", "engagement_terms"}),
    "engagement_terms": frozenset({"engagement_terms", "engagement_letter"}),
}


def ordered(reasons: set[str] | frozenset[str] | list[str]) -> list[str]:
    """Reason codes in report order (RULES.md §1: most specific first)."""
    if not reasons:
        return []
    return [str(code) for code in sorted(set(reasons), key=REASON_ORDER.__getitem__)]


def age_on(birth: date, day: date) -> int:
    """Whole years on `day`; a birthday counts from its start (29 February: from 1 March in other years)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


_LONDON_DAYS: dict[int, tuple[date, str]] = {}
_HOUR_US = 3_600_000_000


def _london_day(micros: int) -> tuple[date, str]:
    """The Europe/London calendar date of an instant, with its ISO text (for the explanation)."""
    # London's offset from UTC is a whole number of hours, so the London date is constant within a UTC hour.
    hour = micros // _HOUR_US
    found = _LONDON_DAYS.get(hour)
    if found is None:
        day = from_us(hour * _HOUR_US).astimezone(LONDON).date()
        found = (day, day.isoformat())
        if len(_LONDON_DAYS) > 200_000:
            _LONDON_DAYS.clear()
        _LONDON_DAYS[hour] = found
    return found


_BORN_BY: dict[tuple[date, int], int] = {}


def born_by(day: date, years: int) -> int:
    """The ordinal of the latest birth date at which a person is `years` old on `day` (`age_on` >= `years`)."""
    # Age limits compare this with the recorded birth ordinal, so a flow does no date arithmetic: born on or
    # before it is old enough (a 29 February birthday counts from 1 March, as in `age_on`).
    found = _BORN_BY.get((day, years))
    if found is None:
        year = day.year - years
        if year < 1:
            found = 0  # nobody alive was born that long ago
        else:
            try:
                found = date(year, day.month, day.day).toordinal()
            except ValueError:  # 29 February in a common year: born on the 28th is old enough, the 1st is not
                found = date(year, 2, 28).toordinal()
        if len(_BORN_BY) > 100_000:
            _BORN_BY.clear()
        _BORN_BY[(day, years)] = found
    return found


def london_date(micros: int) -> date:
    """The Europe/London calendar date of an instant."""
    return _london_day(micros)[0]


class _Shape:
    """What follows from a flow's own fields and the policy alone: memoised per policy (`PolicyIndex.flow_memo`).

    Most flows repeat a handful of shapes (a nightly MIS sync, a meal-provider update), so everything here,
    the static reasons and the pieces of the explanation included, is worked out once per shape.
    """

    __slots__ = (
        "accepted",
        "allowed_basis",
        "art9",
        "art9_consent",
        "art10",
        "biometric",
        "categories",
        "consent_need",
        "consent_relevant",
        "disclosure",
        "grant",
        "group",
        "head_one",
        "json",
        "kind",
        "min_age",
        "needed",
        "needs_consent",
        "ordinary",
        "reasons",
        "recipient",
        "registered",
        "rules",
        "simple",
        "what",
        "where",
    )

    def __init__(self, ctx: _Flow) -> None:
        grant, recipient, flow, kind = ctx.grant, ctx.recipient, ctx.flow, ctx.kind
        self.recipient, self.grant, self.kind, self.group = recipient, grant, kind, ctx.group
        self.reasons = frozenset(ctx.reasons)
        self.rules = tuple(ctx.rules)
        self.categories = ctx.categories
        self.ordinary, self.art9, self.art10 = ctx.ordinary, ctx.art9, ctx.art10
        self.consent_relevant = kind not in _CONSENT_IRRELEVANT
        self.disclosure = ctx.group == _FAMILY or kind in _DISCLOSURE_KINDS
        need = grant.grant.consent if grant is not None else "never"
        self.consent_need = need
        permits = ctx.idx.permits
        # The categories a subject's consent must cover (RULES.md §5); categories the recipient may not receive
        # at all are a minimisation failure, not a consent failure, so they are left out here.
        self.needed: tuple[str, ...] = ()
        self.art9_consent: tuple[str, ...] = ()
        if grant is not None and need != "never":
            if need == "required":
                self.needed = tuple(c for c in ctx.ordinary + ctx.art10 if permits(grant, c))
            art9 = tuple(c for c in ctx.art9 if permits(grant, c))
            if art9 and not (need == "required" and grant.art9_conditions - {"explicit_consent"}):
                self.art9_consent = art9
        # Age-limited categories (RULES.md §4, Cool Milk): the flow fails if the pupil is under the highest limit
        # of any limited category it carries, so one number decides.
        limits = [
            minimum
            for key, minimum in (grant.min_ages if grant is not None else ())
            if any(covered_by(c, (key,)) or covered_by(key, (c,)) for c in ctx.categories)
        ]
        self.min_age: int | None = max(limits) if limits else None
        who = recipient.name if recipient is not None else f"an unregistered recipient ({flow.recipient})"
        purpose = grant.purpose.label if grant is not None else flow.purpose
        self.what = ", ".join(ctx.categories)
        self.where = f" went to {who} for {purpose}, by {flow.channel}."
        self.head_one = f"{self.what} about 1 person{self.where}"
        self.allowed_basis = flow.lawful_basis or (grant.grant.bases[0] if grant is not None else "")
        # The plan of the single-subject path (`_evaluate_one`): the agreement types that satisfy the grant,
        # whether the subject's consent must be judged, and whether the shape needs none of the flow-level
        # checks that read a request, several subjects or the data's age (police, courts, the family, transfers
        # to the data subject), which only the general path runs.
        self.accepted = _SATISFIES[grant.agreement] if grant is not None and grant.agreement != "none" else None
        self.needs_consent = self.consent_relevant and need != "never"
        self.biometric = kind == "biometric"
        self.registered = recipient.key if recipient is not None else ""
        self.simple = grant is None or not (
            kind in ("law_enforcement", "court") or self.disclosure or (flow.to_data_subject and ctx.group == _FAMILY)
        )
        # Its pre-rendered decision JSON fragments (`decide_json`), made the first time they are needed.
        self.json: ShapeJson | None = None


class _Flow:
    """Everything derived once per evaluation."""

    __slots__ = (
        "_age",
        "_age_of",
        "art9",
        "art10",
        "categories",
        "day",
        "facts",
        "flow",
        "grant",
        "group",
        "idx",
        "indexed",
        "kind",
        "ordinary",
        "purpose",
        "reasons",
        "recipient",
        "rules",
        "shape",
        "state",
        "t",
    )

    # Set from the flow's shape by `_use_shape` before any check reads them.
    shape: _Shape
    recipient: RecipientDef | None
    grant: GrantIndex | None
    group: str
    kind: str
    rules: list[str]
    categories: tuple[str, ...]
    ordinary: tuple[str, ...]
    art9: tuple[str, ...]
    art10: tuple[str, ...]

    def __init__(self, flow: DataFlow, state: State, idx: PolicyIndex, t: int, day: date) -> None:
        self.flow = flow
        self.state = state
        self.idx = idx
        self.t = t
        self.day = day
        self.purpose = flow.purpose
        self.reasons: set[str] = set()
        self.facts: list[str] = []
        # Whether the subject's per-shape consent index may be used (the plan); the general path scans instead,
        # so the two can be checked against each other.
        self.indexed = False
        self._age_of: SubjectState | None = None
        self._age: int | None = None

    def age(self, subject: SubjectState, micros: int | None = None) -> int | None:
        """The pupil's age on the London date of `micros` (default: the flow), or None without a birth date."""
        if micros is None or micros == self.t:
            # The age on the flow's day is asked for by several checks: worked out once per subject.
            if subject is not self._age_of:
                birth = subject.birth_date()
                self._age = None if birth is None else age_on(birth, self.day)
                self._age_of = subject
            return self._age
        birth = subject.birth_date()
        if birth is None:
            return None
        return age_on(birth, london_date(micros))


def _on_plan(shape: _Shape, fields: dict[str, Any], subjects: list[Subject]) -> bool:
    # The single-subject plan covers simple shapes of one subject whose data has no age of its own.
    return shape.simple and len(subjects) == 1 and fields["data_recorded_at"] is None


def evaluate(
    flow: DataFlow,
    state: State,
    policy: Policy,
    *,
    decided_at: datetime | None = None,
    supersedes: str | None = None,
    revision: int = 0,
) -> Decision:
    """Judge one flow on the facts as they stood at its `occurred_at`; never raises for a violation."""
    # One C-level read of the scalar fields from the (validated, frozen) model's __dict__: a dozen pydantic
    # attribute reads per flow cost more than the lookups they serve.
    fields = flow.__dict__
    subjects = fields["subjects"]
    shape = _shape_for(flow, fields, subjects, state, policy.index)
    if _on_plan(shape, fields, subjects):
        return _evaluate_one(flow, fields, subjects[0], shape, state, policy, decided_at, supersedes, revision)
    return _evaluate_any(flow, state, policy, shape, decided_at, supersedes, revision)


def decide_json(
    flow: DataFlow,
    state: State,
    policy: Policy,
    *,
    decided_at: datetime | None = None,
    supersedes: str | None = None,
    revision: int = 0,
) -> bytes:
    """`evaluate(...).to_json_bytes()`, byte for byte; the single-subject plan renders it without a `Decision`."""
    fields = flow.__dict__
    subjects = fields["subjects"]
    shape = _shape_for(flow, fields, subjects, state, policy.index)
    if not _on_plan(shape, fields, subjects):
        return _evaluate_any(flow, state, policy, shape, decided_at, supersedes, revision).to_json_bytes()
    subject = subjects[0]
    t, day_text, codes, rules, facts = _judge_one(flow, fields, subject, shape, state, policy)
    pieces = shape.json
    if pieces is None:
        pieces = shape.json = ShapeJson(
            shape.head_one, shape.allowed_basis, fields["recipient"], fields["purpose"], fields["categories"],
            shape.rules, policy.digest,
        )  # fmt: skip
    key = codes if isinstance(codes, frozenset) else frozenset(codes)
    rendered = _CODES_JSON.get(key)
    if rendered is None:
        if len(_CODES_JSON) >= 10_000:
            _CODES_JSON.clear()
        rendered = _CODES_JSON[key] = CodesJson(*_ordered(policy.index, key))
    event_id = fields["event_id"]
    source = fields["source"]
    facts_text = ",".join(facts)
    material = f"{event_id}|{policy.digest}|{rendered.joined}|{facts_text}|{supersedes or ''}"
    return decision_one(
        pieces, rendered, decision_id_of(material), event_id, day_text, facts, pieces.rule_ids(rules), subject.id,
        subject.kind, fields["occurred_at"], t, decided_at, fields["emitted_at"], source.connector, source.sequence,
        state.notice_version_at(t, policy.trust.notice_version), supersedes, revision,
    )  # fmt: skip


# What each set of reason codes renders to (codes, order and texts are the same under every policy).
_CODES_JSON: dict[frozenset[str], CodesJson] = {}


def _shape_for(
    flow: DataFlow, fields: dict[str, Any], subjects: list[Subject], state: State, idx: PolicyIndex
) -> _Shape:
    """The flow's shape: everything that depends only on its own fields and the policy, memoised per policy."""
    key = (_SHAPE_FIELDS(fields), tuple(fields["categories"]), max(fields["record_count"], len(subjects)))
    memo = idx.flow_memo
    shape: _Shape | None = memo.get(key)
    if shape is None:
        shape = _shape_of(flow, state, idx)
        if len(memo) >= 100_000:
            memo.clear()
        memo[key] = shape
    return shape


def evaluate_uncached(
    flow: DataFlow,
    state: State,
    policy: Policy,
    *,
    decided_at: datetime | None = None,
    supersedes: str | None = None,
    revision: int = 0,
) -> Decision:
    """`evaluate` without the shape memo or the single-subject plan: the reference both are tested against."""
    shape = _shape_of(flow, state, policy.index)
    return _evaluate_any(flow, state, policy, shape, decided_at, supersedes, revision)


@dataclass(frozen=True, slots=True)
class SubjectLeg:
    """One subject's part of a flow's verdict: what that subject's own facts add to the flow-level checks.

    `judge_subject` needs only the flow, the policy and that one subject's state, so a flow about several pupils
    can be judged subject by subject wherever each subject's state is kept; `combine` then gives exactly the
    decision `evaluate` gives on all of the state at once.
    """

    subject_id: str
    reasons: frozenset[str]
    rules: tuple[str, ...]
    """Rule ids the subject's checks applied, in order (appended after the flow-level ones)."""
    facts: tuple[str, ...]
    """Facts (consents, objections, court orders) the subject's checks relied on, in order."""

    def to_dict(self) -> dict[str, object]:
        """The leg as plain JSON values (reasons sorted)."""
        return {
            "subject_id": self.subject_id,
            "reasons": sorted(self.reasons),
            "rules": self.rules,
            "facts": self.facts,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> SubjectLeg:
        """The inverse of `to_dict`; KeyError or TypeError when a field is missing or not a list."""
        return cls(
            str(value["subject_id"]),
            frozenset(map(str, value["reasons"])),
            tuple(map(str, value["rules"])),
            tuple(map(str, value["facts"])),
        )


def judge_subject(flow: DataFlow, subject: Subject, state: State, policy: Policy) -> SubjectLeg:
    """The subject's own checks of a flow, reading no state but that subject's (`state.subject(subject.id)`)."""
    idx = policy.index
    shape = _shape_for(flow, flow.__dict__, flow.subjects, state, idx)
    t = to_us(flow.occurred_at)
    ctx = _Flow(flow, state, idx, t, _london_day(t)[0])
    _use_shape(ctx, shape)
    return _leg(ctx, shape, subject, state)


def _leg(ctx: _Flow, shape: _Shape, subject: Subject, state: State) -> SubjectLeg:
    if shape.grant is None:
        return SubjectLeg(subject.id, frozenset(), (), ())  # nothing about the subject can be judged
    ctx.rules, ctx.facts = [], []  # collect only what this subject's checks add
    own = _check_subject(ctx, shape, subject, state.subject(subject.id))
    return SubjectLeg(subject.id, frozenset(own or ()), tuple(ctx.rules), tuple(ctx.facts))


def combine(
    flow: DataFlow,
    legs: Sequence[SubjectLeg],
    state: State,
    policy: Policy,
    *,
    decided_at: datetime | None = None,
    supersedes: str | None = None,
    revision: int = 0,
) -> Decision:
    """One decision from the flow-level checks (reading recipient and notice state) and each subject's leg."""
    shape = _shape_for(flow, flow.__dict__, flow.subjects, state, policy.index)
    return _combine(flow, {leg.subject_id: leg for leg in legs}, state, policy, shape, decided_at, supersedes, revision)


def _evaluate_any(
    flow: DataFlow,
    state: State,
    policy: Policy,
    shape: _Shape,
    decided_at: datetime | None,
    supersedes: str | None,
    revision: int,
) -> Decision:
    """The general path: any number of subjects, every flow-level check."""
    t = to_us(flow.occurred_at)
    ctx = _Flow(flow, state, policy.index, t, _london_day(t)[0])
    _use_shape(ctx, shape)
    legs: dict[str, SubjectLeg] = {}
    for subject in flow.subjects:
        if subject.id not in legs:
            legs[subject.id] = _leg(ctx, shape, subject, state)
    return _combine(flow, legs, state, policy, shape, decided_at, supersedes, revision)


def _combine(
    flow: DataFlow,
    legs: dict[str, SubjectLeg],
    state: State,
    policy: Policy,
    shape: _Shape,
    decided_at: datetime | None,
    supersedes: str | None,
    revision: int,
) -> Decision:
    idx = policy.index
    t = to_us(flow.occurred_at)
    day, day_text = _london_day(t)
    ctx = _Flow(flow, state, idx, t, day)
    _use_shape(ctx, shape)
    if ctx.grant is not None and ctx.recipient is not None:
        _dynamic_checks(ctx, ctx.grant, ctx.recipient)
    static = shape.reasons
    subjects = flow.subjects
    if len(subjects) == 1:
        # One subject: its reasons are the flow's.
        subject = subjects[0]
        own = _apply_leg(ctx, legs[subject.id])
        codes = static | ctx.reasons | own if own else (static | ctx.reasons if ctx.reasons else static)
        reasons, because = _ordered(idx, codes)
        verdicts = [_verdict(subject, reasons)]
        head = f"On {day_text} {shape.head_one}"
    else:
        flow_codes = static | ctx.reasons
        ctx.reasons = set(flow_codes)
        verdicts = []
        all_codes = set(flow_codes)
        seen: set[str] = set()
        reasons = []
        for subject in subjects:
            if subject.id in seen:
                continue
            seen.add(subject.id)
            own = _apply_leg(ctx, legs[subject.id])
            if own:
                all_codes |= own
            reasons = _ordered(idx, flow_codes | own if own else flow_codes)[0]
            verdicts.append(_verdict(subject, reasons))
        if len(verdicts) > 1:
            reasons, because = _ordered(idx, all_codes)  # with one subject, its reasons are the flow's
            count = len(verdicts)
            head = f"On {day_text} {shape.what} about {count} people{shape.where}"
        else:
            reasons, because = _ordered(idx, set(reasons))
            head = f"On {day_text} {shape.head_one}"
    facts = ctx.facts
    if len(facts) > 1:
        # A consent covering both ordinary and Art 9 categories is relied on twice; name each fact once.
        facts = list(dict.fromkeys(facts))
    relied = f" It relied on {', '.join(facts)}." if facts else ""
    if not reasons:
        explanation = f"{head} Allowed under {shape.allowed_basis}.{relied}"
    else:
        explanation = f"{head} Violation: {because}.{_affected(ctx, verdicts)}{relied}"
    subject_ids = [s.id for s in subjects]
    return _decision(
        flow, state, policy, t, reasons, explanation, facts, ctx.rules, verdicts, subject_ids, decided_at, supersedes,
        revision,
    )  # fmt: skip


def _apply_leg(ctx: _Flow, leg: SubjectLeg) -> frozenset[str] | None:
    """Add a subject's rules and facts after what came before, as if its checks had run here; its reasons."""
    ctx.rules.extend(leg.rules)
    ctx.facts.extend(leg.facts)
    return leg.reasons or None


def _evaluate_one(
    flow: DataFlow,
    fields: dict[str, Any],
    subject: Subject,
    shape: _Shape,
    state: State,
    policy: Policy,
    decided_at: datetime | None,
    supersedes: str | None,
    revision: int,
) -> Decision:
    """The single-subject plan (`_judge_one`) assembled into a `Decision`."""
    t, day_text, codes, rules, facts = _judge_one(flow, fields, subject, shape, state, policy)
    reasons, because = _ordered(policy.index, codes)
    relied = f" It relied on {', '.join(facts)}." if facts else ""
    if reasons:
        explanation = f"On {day_text} {shape.head_one} Violation: {because}.{relied}"
    else:
        explanation = f"On {day_text} {shape.head_one} Allowed under {shape.allowed_basis}.{relied}"
    sid = subject.id
    verdict = _new_subject_verdict(
        {"subject_id": sid, "subject_kind": subject.kind, "verdict": "violation" if reasons else "allowed",
         "reasons": list(reasons)}
    )  # fmt: skip
    return _decision(
        flow, state, policy, t, reasons, explanation, facts, rules, [verdict], [sid], decided_at, supersedes, revision
    )


def _judge_one(
    flow: DataFlow, fields: dict[str, Any], subject: Subject, shape: _Shape, state: State, policy: Policy
) -> tuple[int, str, frozenset[str] | set[str], list[str], list[str]]:
    """The single-subject plan: the shape's static reasons, then only the time-dependent checks it can need.

    Returns (occurred_at in microseconds, its London date as text, the reason codes, the rule ids, the facts
    relied on, each named once). Gives exactly what `_evaluate_any` finds (tests/unit/streams/
    test_evaluate_plan.py): for a simple shape the only flow-level check that reads state is the agreement, and
    a subject with nothing but a birth date and school moves needs only the retention and age checks, so the
    per-flow context is built only when the subject's consents, objections or court orders must be read.
    """
    t = to_us(fields["occurred_at"])
    day, day_text = _london_day(t)
    rules = list(shape.rules)
    facts: list[str] = []
    codes = shape.reasons
    grant = shape.grant
    if grant is not None:
        found: set[str] = set()
        accepted = shape.accepted
        if accepted is not None:
            rules.append("6.1.agreement")
            agreement_id, code = _agreement_at(
                state, fields["recipient"], shape.registered, accepted, fields["purpose"], shape.categories, t
            )
            if agreement_id is not None:
                facts.append(agreement_id)
            if code is not None:
                found.add(code)
        sstate = state.subject(subject.id)
        own: set[str] | None
        if (
            shape.needs_consent
            or sstate.court_orders
            or (shape.consent_relevant and (sstate.objections or (shape.biometric and sstate.refusals)))
        ):
            ctx = _Flow(flow, state, policy.index, t, day)
            _use_shape(ctx, shape)
            # The flow-level checks have run above: the subject's checks add to what they found.
            ctx.rules, ctx.facts, ctx.reasons = rules, facts, found
            ctx.indexed = True
            own = _check_subject(ctx, shape, subject, sstate)
        elif subject.kind == "pupil":
            own = _pupil_limits(policy, shape, grant, sstate, t, day, fields["legal_hold"], None)
        else:
            own = None
        if found:
            codes = codes | found
        if own:
            codes = codes | own
    if len(facts) > 1:
        # A consent covering both ordinary and Art 9 categories is relied on twice; name each fact once.
        facts = list(dict.fromkeys(facts))
    return t, day_text, codes, rules, facts


def _decision(
    flow: DataFlow,
    state: State,
    policy: Policy,
    t: int,
    reasons: list[str],
    explanation: str,
    facts: list[str],
    rules: list[str],
    verdicts: list[SubjectVerdict],
    subject_ids: list[str],
    decided_at: datetime | None,
    supersedes: str | None,
    revision: int,
) -> Decision:
    digest = policy.digest
    fields = flow.__dict__
    source = fields["source"]
    event_id = fields["event_id"]
    return _new_decision(
        {
            "decision_id": decision_id_for(event_id, digest, reasons, facts, supersedes),
            "flow_event_id": event_id,
            "verdict": "violation" if reasons else "allowed",
            "reasons": reasons,
            "explanation": explanation,
            "recipient": fields["recipient"],
            "purpose": fields["purpose"],
            "categories": list(fields["categories"]),
            "subject_ids": subject_ids,
            "occurred_at": fields["occurred_at"],
            "decided_at": decided_at or fields["emitted_at"],
            "emitted_at": fields["emitted_at"],
            "source_connector": source.connector,
            "source_sequence": source.sequence,
            "policy_digest": digest,
            "notice_version": state.notice_version_at(t, policy.trust.notice_version),
            "supersedes": supersedes,
            "rule_ids": rules,
            "facts_relied_on": facts,
            "disclosures": verdicts,
            "revision": revision,
        }
    )


_new_decision = Decision.trusted_from
_new_subject_verdict = SubjectVerdict.trusted_from


def _verdict(subject: Subject, reasons: list[str]) -> SubjectVerdict:
    return _new_subject_verdict(
        {
            "subject_id": subject.id,
            "subject_kind": subject.kind,
            "verdict": "violation" if reasons else "allowed",
            # Each verdict gets its own list (the decision's list may be the same codes, never the same list).
            "reasons": list(reasons),
        }
    )


def _ordered(idx: PolicyIndex, codes: frozenset[str] | set[str]) -> tuple[list[str], str]:
    """(reason codes in report order, the "because" text): memoised per set of codes on the policy index."""
    if not codes:
        return [], ""
    memo = idx.reasons_memo
    key = codes if isinstance(codes, frozenset) else frozenset(codes)
    found = memo.get(key)
    if found is None:
        ranked = tuple(ordered(key))
        found = (ranked, "; ".join(_EXPLANATIONS[r] for r in ranked))
        if len(memo) >= 10_000:
            memo.clear()
        memo[key] = found
    return list(found[0]), found[1]


# --- flow-level checks ---------------------------------------------------------------------------------------


# The flow's own fields that decide its shape (with its categories and its size, added by `evaluate`).
_SHAPE_FIELDS = itemgetter(
    "recipient", "purpose", "lawful_basis", "condition", "channel", "destination_country", "transfer_safeguard",
    "consideration", "emergency", "to_data_subject", "addressed_to_dsl", "unredacted_third_party_data",
)  # fmt: skip


_EPOCH_DAY = date(1970, 1, 1)


def _shape_of(flow: DataFlow, state: State, idx: PolicyIndex) -> _Shape:
    """Run the static checks (the flow's own fields and the policy, never the state or the time) into a shape."""
    ctx = _Flow(flow, state, idx, 0, _EPOCH_DAY)
    ctx.rules = []
    ctx.recipient, ctx.grant, ctx.group, ctx.kind = None, None, "", ""
    ctx.ordinary = ctx.art9 = ctx.art10 = ()
    ctx.categories = tuple(dict.fromkeys(flow.categories))
    _static_checks(ctx)
    return _Shape(ctx)


def _use_shape(ctx: _Flow, shape: _Shape) -> None:
    """Give the context its shape's derived fields and fresh lists for what the checks find."""
    ctx.shape = shape
    ctx.recipient, ctx.grant, ctx.kind, ctx.group = shape.recipient, shape.grant, shape.kind, shape.group
    ctx.categories, ctx.ordinary, ctx.art9, ctx.art10 = shape.categories, shape.ordinary, shape.art9, shape.art10
    ctx.rules = list(shape.rules)
    # Flow-level reasons found so far are the shape's; the dynamic checks add to a fresh set.
    ctx.reasons = set()


def _static_checks(ctx: _Flow) -> None:
    flow, idx, reasons, rules = ctx.flow, ctx.idx, ctx.reasons, ctx.rules
    rules.append("4.register")
    recipient = idx.recipient(flow.recipient)
    rules.append("6.3.sale")
    if flow.consideration != "none":
        reasons.add(R.SALE_OF_DATA)
    if recipient is None:
        reasons.add(R.UNKNOWN_RECIPIENT)  # fail closed: nothing else can be judged without the register
        return
    ctx.recipient = recipient
    ctx.group = recipient.group
    rules.append("2.basis")
    grant = idx.grants.get((recipient.key, flow.purpose))
    if grant is None:
        reasons.add(R.NO_LAWFUL_BASIS)  # the purpose is unknown, or not one this recipient may receive data for
        return
    ctx.grant = grant
    ctx.kind = grant.purpose.kind
    _check_basis(ctx, grant)
    _classify_and_check_categories(ctx, grant)
    if not (flow.to_data_subject and ctx.group == _FAMILY):
        _check_transfer(ctx, recipient)  # the connector's to_data_subject flag counts only towards the family
    _check_channel(ctx)


def _dynamic_checks(ctx: _Flow, grant: GrantIndex, recipient: RecipientDef) -> None:
    if ctx.kind in ("law_enforcement", "court"):
        ctx.rules.append("6.10.police_courts")
        if not _request_is_basis(ctx):
            ctx.reasons.add(R.LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS)
    _check_agreement(ctx, grant, recipient)
    if ctx.flow.to_data_subject and ctx.group == _FAMILY:
        request = ctx.flow.request
        # Only the request shows the person receiving the data is its data subject (§6.7); with several
        # subjects the others' data would reach someone who is not their data subject.
        to_subject = request is not None and all(s.id == request.requester for s in ctx.flow.subjects)
        _check_transfer(ctx, recipient, to_subject=to_subject)
    _check_harm_and_data_age(ctx)


def _check_basis(ctx: _Flow, grant: GrantIndex) -> None:
    flow, reasons = ctx.flow, ctx.reasons
    stated = flow.lawful_basis
    if stated is not None and (stated not in ctx.idx.bases or stated not in grant.bases):
        reasons.add(R.NO_LAWFUL_BASIS)  # an unknown basis, or one that does not fit (DfE: never consent)
    vital = ctx.kind == "vital_interests" or stated == "vital_interests"
    if vital:
        ctx.rules.append("6.8.vital_interests")
        if not flow.emergency:
            reasons.add(R.NO_LAWFUL_BASIS)  # never for planning ahead when the parent can be asked (§6.8)


def _request_is_basis(ctx: _Flow) -> bool:
    request = ctx.flow.request
    if ctx.flow.emergency or (request is not None and request.emergency):
        if request is not None and request.reference:
            ctx.facts.append(request.reference)
        return ctx.kind == "law_enforcement"  # a missing child or a risk to life needs no form (§6.10)
    if request is None:
        return False
    if request.authority in ("court_order", "warrant"):
        if request.reference:
            ctx.facts.append(request.reference)
        return bool(request.reference)
    if ctx.kind == "court":
        return False
    if request.authority == "written_sch2_para2":
        ok = request.signed_by_inspector_or_above and request.names_person and request.names_incident
        if ok and request.reference:
            ctx.facts.append(request.reference)
        return ok
    return False


def _classify_and_check_categories(ctx: _Flow, grant: GrantIndex) -> None:
    idx, reasons, flow = ctx.idx, ctx.reasons, ctx.flow
    ctx.rules.append("3.conditions")
    ctx.rules.append("6.2.minimisation")
    stated = flow.condition
    stated_ok = stated is None or stated in grant.art9_conditions or stated in grant.art10_conditions
    needs_explicit = grant.grant.consent in ("required", "art9_explicit")
    ordinary: list[str] = []
    art9: list[str] = []
    art10: list[str] = []
    for category in ctx.categories:
        cls = idx.category_class(category)
        if cls is None:
            reasons.add(R.CATEGORY_NOT_PERMITTED_FOR_RECIPIENT)  # fail closed: not in the taxonomy at all
            continue
        permitted = idx.permits(grant, category)
        if cls == "art9":
            art9.append(category)
            if not permitted:
                reasons.add(R.CATEGORY_NOT_PERMITTED_FOR_RECIPIENT)
                reasons.add(R.SPECIAL_CATEGORY_WITHOUT_CONDITION)
            elif grant.art9_conditions and stated_ok:
                pass
            elif needs_explicit:
                pass  # explicit consent is the condition: judged per subject
            else:
                reasons.add(R.SPECIAL_CATEGORY_WITHOUT_CONDITION)
        elif cls == "art10":
            art10.append(category)
            if not permitted:
                reasons.add(R.CATEGORY_NOT_PERMITTED_FOR_RECIPIENT)
                reasons.add(R.CRIMINAL_DATA_WITHOUT_CONDITION)
            elif not grant.art10_conditions or not stated_ok:
                reasons.add(R.CRIMINAL_DATA_WITHOUT_CONDITION)
        else:
            ordinary.append(category)
            if not permitted:
                reasons.add(R.CATEGORY_NOT_PERMITTED_FOR_RECIPIENT)
    ctx.ordinary, ctx.art9, ctx.art10 = tuple(ordinary), tuple(art9), tuple(art10)
    if flow.unredacted_third_party_data:
        reasons.add(R.CATEGORY_NOT_PERMITTED_FOR_RECIPIENT)  # third parties' data left unredacted (§6.2)


def _check_agreement(ctx: _Flow, grant: GrantIndex, recipient: RecipientDef) -> None:
    need = grant.agreement
    if need == "none":
        return
    ctx.rules.append("6.1.agreement")
    agreement_id, code = _agreement_at(
        ctx.state, ctx.flow.recipient, recipient.key, _SATISFIES[need], ctx.purpose, ctx.categories, ctx.t
    )
    if agreement_id is not None:
        ctx.facts.append(agreement_id)
    if code is not None:
        ctx.reasons.add(code)


def _agreement_at(
    state: State,
    flow_recipient: str,
    registered_key: str,
    accepted: frozenset[str],
    purpose: str,
    categories: tuple[str, ...],
    t: int,
) -> tuple[str | None, str | None]:
    """(the agreement in force relied on, the reason code): an agreement of an accepted type at `t`."""
    own = state.recipient(flow_recipient)
    candidates = own.agreements
    registered = own
    if flow_recipient != registered_key:
        registered = state.recipient(registered_key)
        candidates = candidates + registered.agreements
    signed = False
    for rec in candidates:
        signed_t, agreement_id, kind, valid_from, valid_until, purposes, cats = rec
        # An agreement signed after the flow never covers it, whatever its valid_from says (not retroactive).
        if signed_t > t or kind not in accepted or (purposes and purpose not in purposes):
            continue
        signed = True
        if valid_from <= t and (valid_until is None or t <= valid_until):
            if (own.terminations and own.terminated(agreement_id, t)) or (
                registered.terminations and registered.terminated(agreement_id, t)
            ):
                continue
            if cats and not all(covered_by(c, cats) for c in categories):
                return agreement_id, R.CATEGORY_NOT_PERMITTED_FOR_RECIPIENT  # beyond the contract's scope
            return agreement_id, None
    return None, R.AGREEMENT_EXPIRED if signed else R.NO_SHARING_AGREEMENT


def _check_transfer(ctx: _Flow, recipient: RecipientDef, *, to_subject: bool = False) -> None:
    flow, idx = ctx.flow, ctx.idx
    home = idx.policy.transfers.home_country
    countries = {flow.destination_country, recipient.hosting_country} - {home}
    if not countries or to_subject:
        return  # sending to the data subject abroad is not a restricted transfer (§6.7)
    ctx.rules.append("6.7.transfer")
    safeguard = flow.transfer_safeguard
    for country in countries:
        if country in idx.adequate:
            continue
        # DPF certification is a fact about the recipient the Trust has checked, so it comes from the register.
        if country in idx.dpf_countries and recipient.dpf_uk_extension:
            continue
        if safeguard in idx.art46:
            continue
        if safeguard == "art49_vital_interests" and flow.emergency:
            continue
        if safeguard == "art49_legal_claims" and ctx.kind in ("legal", "court"):
            continue
        ctx.reasons.add(R.INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD)
        return


def _check_harm_and_data_age(ctx: _Flow) -> None:
    flow, reasons, idx = ctx.flow, ctx.reasons, ctx.idx
    if ctx.group == _FAMILY or ctx.kind in _DISCLOSURE_KINDS:
        ctx.rules.append("6.12.harm")
        request = flow.request
        to_child = request is not None and request.requester in {s.id for s in flow.subjects}
        abuse = flow.contains_child_abuse_data or any(covered_by(c, idx.child_abuse_categories) for c in ctx.categories)
        best = request is not None and request.best_interests
        if flow.serious_harm or (abuse and not best and not to_child):
            reasons.add(R.HARMFUL_DISCLOSURE)
    if flow.data_recorded_at is not None and not flow.legal_hold:
        ctx.rules.append("6.6.retention")
        retention = idx.policy.retention
        recorded = to_us(flow.data_recorded_at)
        age_days = (ctx.t - recorded) / 86_400_000_000
        cctv = any(covered_by(c, idx.cctv_categories) for c in ctx.categories)
        if cctv and age_days > retention.cctv_days:
            reasons.add(R.RETENTION_EXCEEDED)
        register = any(covered_by(c, idx.register_categories) for c in ctx.categories)
        if register and age_on(london_date(recorded), ctx.day) >= retention.register_years:
            reasons.add(R.RETENTION_EXCEEDED)


def _check_channel(ctx: _Flow) -> None:
    flow, reasons, idx = ctx.flow, ctx.reasons, ctx.idx
    ctx.rules.append("6.13.channel")
    safeguarding = any(covered_by(c, idx.safeguarding_categories) for c in ctx.categories)
    bulk = max(flow.record_count, len(flow.subjects)) >= idx.policy.channels.bulk_threshold
    if (ctx.art9 or ctx.art10 or safeguarding or bulk) and flow.channel not in idx.secure_channels:
        reasons.add(R.INSECURE_CHANNEL)
    if flow.purpose in idx.cp_file_purposes:
        # The CP file goes separately from the main file, to the DSL (KCSIE; §6.13): judged by the purpose, so a
        # CP file labelled plain `safeguarding` is caught too; it may hold whatever its grant permits (Art 10 too).
        grant = ctx.grant
        if not flow.addressed_to_dsl or grant is None or not all(idx.permits(grant, c) for c in ctx.categories):
            reasons.add(R.INSECURE_CHANNEL)
    elif ctx.group == _SCHOOL and any(covered_by(c, idx.cp_file_categories) for c in ctx.categories):
        reasons.add(R.INSECURE_CHANNEL)  # a CP file sent to a school with the main file (e.g. in the CTF)


# --- subject-level checks ------------------------------------------------------------------------------------


def _check_subject(ctx: _Flow, shape: _Shape, subject: Subject, sstate: SubjectState) -> set[str] | None:
    """The subject's own reasons (None when there are none)."""
    reasons: set[str] = set()
    grant = shape.grant
    assert grant is not None
    kind = shape.kind
    if shape.consent_relevant:
        if shape.consent_need != "never":
            _check_consent(ctx, shape, subject, sstate, reasons)
        # Only a recorded objection (or, for biometrics, a refusal) can make this check find anything.
        if sstate.objections or (kind == "biometric" and sstate.refusals):
            _check_objections(ctx, subject, sstate, reasons)
    if subject.kind == "pupil":
        if sstate.court_orders:
            _check_court_orders(ctx, sstate, reasons)
        if shape.disclosure:
            # Any flow to the family, not only reports and SARs, needs an entitled requester (§6.11, §4 Family).
            _check_entitlement(ctx, subject, sstate, reasons)
        _pupil_limits(ctx.idx.policy, shape, grant, sstate, ctx.t, ctx.day, ctx.flow.legal_hold, reasons)
    if kind == "law_enforcement" and ctx.flow.request is not None and not ctx.flow.emergency:
        named = ctx.flow.request.named_subject_ids
        if (named and subject.id not in named) or (not named and len(ctx.flow.subjects) > 1):
            reasons.add(R.CATEGORY_NOT_PERMITTED_FOR_RECIPIENT)  # a trawl: records outside the request (§6.2)
    return reasons or None


def _pupil_limits(
    policy: Policy,
    shape: _Shape,
    grant: GrantIndex,
    sstate: SubjectState,
    t: int,
    day: date,
    legal_hold: bool,
    out: set[str] | None,
) -> set[str] | None:
    """Retention and age limits of a pupil's data, added to `out` (a new set when None and one applies)."""
    if not legal_hold and _retention_exceeded(policy, grant, shape.recipient, sstate, t, day):
        out = out if out is not None else set()
        out.add(R.RETENTION_EXCEEDED)
    if shape.min_age is not None:
        births = sstate.births
        # Fail closed: without a date of birth the age cannot be shown.
        if not births or births[-1][1] > born_by(day, shape.min_age):
            out = out if out is not None else set()
            out.add(R.CATEGORY_NOT_PERMITTED_FOR_RECIPIENT)
    return out


def _touches(ctx: _Flow, recipient: str | None, rclass: str | None, purpose: str | None, cats: tuple[str, ...]) -> bool:
    """Does a withdrawal, refusal or objection scope (None / empty meaning "any") reach this flow?"""
    flow_recipient = ctx.flow.recipient
    if (
        recipient is not None
        and recipient != flow_recipient
        and (ctx.recipient is None or recipient != ctx.recipient.key)
    ):
        return False
    if rclass is not None and rclass != ctx.group:
        return False
    if purpose is not None and purpose != ctx.purpose:
        return False
    if cats:
        return any(covered_by(c, cats) or any(covered_by(w, (c,)) for w in cats) for c in ctx.categories)
    return True


def _withdrawal_touches(ctx: _Flow, sstate: SubjectState, w: tuple[Any, ...]) -> bool:
    """Does a withdrawal reach this flow? One naming a consent id reaches exactly that consent's scope."""
    if w[1] is None:
        return _touches(ctx, w[5], w[6], w[7], w[8])
    for c in sstate.consents:
        # The withdrawn consent must have been given before the withdrawal; an unknown id withdraws nothing.
        if c[0] > w[0]:
            break
        if c[1] == w[1]:
            return _touches(ctx, c[5], c[6], c[7], c[8])
    return False


def _consent_covers(ctx: _Flow, rec: tuple[Any, ...], needed: Sequence[str]) -> bool:
    recipient, rclass, purpose, cats = rec[5], rec[6], rec[7], rec[8]
    if purpose != ctx.purpose:
        return False
    if recipient is not None:
        if recipient != ctx.flow.recipient and (ctx.recipient is None or recipient != ctx.recipient.key):
            return False
    elif rclass != ctx.group:
        return False
    return all(covered_by(c, cats) for c in needed)


def _self_consent_ok(ctx: _Flow, sstate: SubjectState, given: int) -> bool:
    age = ctx.age(sstate, given)
    if age is None:
        return False  # without a date of birth the Trust cannot show the pupil could consent alone
    if ctx.kind == "iss":
        return age >= 13  # Art 8 / DPA s9: self-consent before 13 is void, and stays void after the birthday
    if age >= 18:
        return True
    if ctx.kind == "biometric":
        return False  # POFA 2012 s27: a child's biometrics need a parent's written consent, never the child's own
    # The latest assessment made by the time of the consent and covering its purpose decides (§2: the facts as
    # they stood), whichever assessment the consent form cites.
    return age >= 13 and sstate.competent_at(given, ctx.purpose) is not None


def _authorised(
    ctx: _Flow, subject: Subject, sstate: SubjectState, actor: str, rel: str, flags: int, given: int
) -> bool:
    """Could this person give (or withdraw) consent for this subject (RULES.md §5 "Who may consent")?"""
    if subject.kind == "parent":
        return actor == subject.id or rel == "self"  # an adult consents for themselves only
    if actor == subject.id or rel == "self":
        return _self_consent_ok(ctx, sstate, given)
    age_now = ctx.age(sstate)
    if age_now is not None and age_now >= 18:
        return False  # PR ends at 18 (Children Act 1989 s105); earlier parental consent lapses
    # The Trust's latest record of the person's standing at the flow overrides what the consent form said.
    standing = sstate.standing(actor, ctx.t)
    if standing is not None:
        rel, flags = standing
    if rel == "local_authority":
        return bool(flags & PR) or sstate.care_order_at(ctx.t) is not None
    if rel == "foster_carer":
        return bool(flags & DELEGATED)
    return bool(flags & PR)


def _pupil_competent(ctx: _Flow, sstate: SubjectState) -> bool:
    age = ctx.age(sstate)
    if age is None:
        return False
    if age >= 18:
        return True
    if age >= 13 and ctx.kind == "iss":
        return True
    return age >= 13 and sstate.competent_at(ctx.t, ctx.purpose) is not None


def _ended(ctx: _Flow, subject: Subject, sstate: SubjectState, rec: tuple[Any, ...]) -> bool:
    """Was this consent withdrawn (or refused again by its giver) at or before the flow?"""
    t, given, consent_id, giver = ctx.t, rec[0], rec[1], rec[2]
    # A pupil's own (valid) consent is theirs to withdraw: a parent cannot override a competent child's decision.
    own = giver == subject.id or rec[3] == "self"
    for w in sstate.withdrawals:
        if w[0] > t:
            break
        if w[0] < given:
            continue
        if w[1] is not None:
            if w[1] != consent_id:
                continue
        elif not _touches(ctx, w[5], w[6], w[7], w[8]):
            continue
        if w[2] == giver or (not own and _authorised(ctx, subject, sstate, w[2], w[3], w[4], w[0])):
            return True
    for r in sstate.refusals:
        if r[0] > t:
            break
        if r[0] >= given and r[1] == giver and _touches(ctx, r[4], r[5], r[6], r[7]):
            return True
    if ctx.kind == "marketing":
        for o in sstate.objections:
            if o[0] > t:
                break
            # An opt-out by any channel takes effect immediately (§6.4): an objection to marketing withdraws.
            if (
                o[0] >= given
                and o[9] == "direct_marketing"
                and not sstate.objection_ended(o[1], t)
                and (o[2] == giver or _authorised(ctx, subject, sstate, o[2], o[3], o[4], o[0]))
                and _touches(ctx, o[5], o[6], o[7], o[8])
            ):
                return True
    return False


def _pupil_veto(ctx: _Flow, sstate: SubjectState, subject: Subject) -> str | None:
    """A competent pupil's refusal or withdrawal beats a parent's consent (RULES.md §5)."""
    if subject.kind != "pupil" or not _pupil_competent(ctx, sstate):
        return None
    t = ctx.t
    last: tuple[int, str] | None = None
    for c in sstate.consents:
        if c[0] > t:
            break
        if (c[2] == subject.id or c[3] == "self") and _consent_covers(ctx, c, ctx.categories):
            last = max(last or (c[0], "consent"), (c[0], "consent"))
    for w in sstate.withdrawals:
        mine = w[0] <= t and (w[2] == subject.id or w[3] == "self")
        if mine and (last is None or w[0] >= last[0]) and _withdrawal_touches(ctx, sstate, w):
            last = (w[0], "withdrawn")
    for r in sstate.refusals:
        mine = r[0] <= t and (r[1] == subject.id or r[2] == "self")
        if mine and (last is None or r[0] >= last[0]) and _touches(ctx, r[4], r[5], r[6], r[7]):
            last = (r[0], "refused")
    if last is None or last[1] == "consent":
        return None
    return last[1]


def _consent_outcome(
    ctx: _Flow, subject: Subject, sstate: SubjectState, needed: Sequence[str], explicit: bool
) -> tuple[str, list[str]]:
    """("ok" | "withdrawn" | "unauthorised" | "absent", consent ids relied on)."""
    t = ctx.t
    withdrawn = unauthorised = False
    ids: list[str] = []
    if ctx.indexed:
        memo = sstate.memo
        if memo is None:
            memo = sstate.memo = {}
        key = (ctx.shape, explicit)
        candidates = memo.get(key)
        if candidates is None:
            candidates = memo[key] = _consent_candidates(ctx, sstate, needed, explicit)
    else:
        candidates = _consent_candidates(ctx, sstate, needed, explicit)
    for rec in candidates:
        if rec[0] > t:
            break  # consent is never retroactive: valid from given_at inclusive
        if _ended(ctx, subject, sstate, rec):
            withdrawn = True
            continue
        if not _authorised(ctx, subject, sstate, rec[2], rec[3], rec[4], rec[0]):
            unauthorised = True
            continue
        ids.append(rec[1])
    if ids:
        veto = _pupil_veto(ctx, sstate, subject)
        if veto == "withdrawn":
            return "withdrawn", []
        if veto == "refused":
            return "absent", []
        return "ok", ids
    if withdrawn:
        return "withdrawn", []
    if unauthorised:
        return "unauthorised", []
    return "absent", []


def _consent_candidates(
    ctx: _Flow, sstate: SubjectState, needed: Sequence[str], explicit: bool
) -> tuple[tuple[Any, ...], ...]:
    """The subject's consents (in time order) whose scope and form could support this shape, whenever given."""
    biometric = ctx.kind == "biometric"
    return tuple(
        rec
        for rec in sstate.consents
        if _consent_covers(ctx, rec, needed)
        and not (explicit and not rec[4] & EXPLICIT)
        and not (biometric and not rec[4] & WRITTEN)  # POFA 2012 s27: written consent
    )


def _check_consent(ctx: _Flow, shape: _Shape, subject: Subject, sstate: SubjectState, out: set[str]) -> None:
    ctx.rules.append("5.consent")
    needed = shape.needed
    if needed:
        status, ids = _consent_outcome(ctx, subject, sstate, needed, explicit=False) if sstate.consents else _ABSENT
        ctx.facts.extend(ids)
        if status != "ok":
            lead = {"marketing": R.MARKETING_WITHOUT_CONSENT, "promotional_photo": R.PHOTO_WITHOUT_PERMISSION}.get(
                ctx.kind
            )
            if lead is not None:
                ctx.rules.append("6.4.marketing" if ctx.kind == "marketing" else "6.5.photos")
                out.add(lead)  # their own code leads; add the cause only when consent was not simply absent
                if status == "withdrawn":
                    out.add(R.CONSENT_WITHDRAWN)
                elif status == "unauthorised":
                    out.add(R.CONSENT_GIVER_NOT_AUTHORISED)
            else:
                out.add(
                    {"withdrawn": R.CONSENT_WITHDRAWN, "unauthorised": R.CONSENT_GIVER_NOT_AUTHORISED}.get(
                        status, R.NO_CONSENT
                    )
                )
    art9 = shape.art9_consent
    if art9:
        status, ids = _consent_outcome(ctx, subject, sstate, art9, explicit=True) if sstate.consents else _ABSENT
        ctx.facts.extend(ids)
        if status != "ok":
            # Art 9 data the recipient may receive only with explicit consent: this code only (RULES.md §1).
            out.add(R.SPECIAL_CATEGORY_WITHOUT_CONDITION)


# No consent on record: nothing can cover the flow (the ids are only read, never extended in place).
_ABSENT: tuple[str, list[str]] = ("absent", [])


def _check_objections(ctx: _Flow, subject: Subject, sstate: SubjectState, out: set[str]) -> None:
    t = ctx.t
    biometric = ctx.kind == "biometric"
    consent_based = ctx.grant is not None and ctx.grant.grant.consent != "never"
    for o in sstate.objections:
        if o[0] > t:
            break
        if sstate.objection_ended(o[1], t) or not _touches(ctx, o[5], o[6], o[7], o[8]):
            continue
        grounds, upheld = o[9], o[10]
        if grounds == "direct_marketing" and ctx.kind == "marketing":
            continue  # handled as a withdrawal of the opt-in
        if grounds == "disclosure" and (ctx.group == _FAMILY or ctx.kind in _DISCLOSURE_KINDS):
            continue  # a child's objection to disclosure is an entitlement question
        binding = (
            # POFA 2012 s26(5): the child's objection, or any parent's, overrides everyone; nobody else's does.
            (biometric and _parent_or_child(ctx, subject, sstate, o[2], o[3], o[4]))
            or upheld
            or (consent_based and _authorised(ctx, subject, sstate, o[2], o[3], o[4], o[0]))
        )
        if binding:
            ctx.rules.append("5.objections")
            ctx.facts.append(o[1])
            out.add(R.OBJECTION_NOT_HONOURED)
            return
    if biometric:
        for r in sstate.refusals:
            if r[0] > t:
                break
            if not _touches(ctx, r[4], r[5], r[6], r[7]) or not _parent_or_child(
                ctx, subject, sstate, r[1], r[2], r[3]
            ):
                continue
            # A refusal stands until the same person later consents.
            later = any(c[0] > r[0] and c[0] <= t and c[2] == r[1] for c in sstate.consents)
            if not later:
                ctx.rules.append("5.objections")
                out.add(R.OBJECTION_NOT_HONOURED)
                return


def _parent_or_child(ctx: _Flow, subject: Subject, sstate: SubjectState, actor: str, rel: str, flags: int) -> bool:
    """Is this the child, or a parent in the education-law sense (POFA 2012 s27 objections to biometrics)?"""
    if actor == subject.id or rel == "self":
        return True
    standing = sstate.standing(actor, ctx.t)  # the Trust's record of the person's standing beats the claim
    if standing is not None:
        rel, flags = standing
    if rel == "local_authority":
        return bool(flags & PR) or sstate.care_order_at(ctx.t) is not None
    return bool(flags & (PR | CARE)) or rel in _PARENT_RELATIONSHIPS


def _check_court_orders(ctx: _Flow, sstate: SubjectState, out: set[str]) -> None:
    if not sstate.court_orders:
        return
    ctx.rules.append("6.11.court_orders")
    request = ctx.flow.request
    requester = request.requester if request is not None else None
    names = {ctx.flow.recipient, ctx.group}
    if ctx.recipient is not None:
        names.add(ctx.recipient.key)
    for order in sstate.court_orders_at(ctx.t):
        _, order_id, _, persons, recipients, cats = order
        hit = (requester is not None and requester in persons) or bool(names.intersection(recipients))
        if hit and (
            not cats or any(covered_by(c, cats) or any(covered_by(o, (c,)) for o in cats) for c in ctx.categories)
        ):
            ctx.facts.append(order_id)
            out.add(R.COURT_ORDER_RESTRICTION)


def _check_entitlement(ctx: _Flow, subject: Subject, sstate: SubjectState, out: set[str]) -> None:
    ctx.rules.append("6.12.entitlement")
    flow = ctx.flow
    request = flow.request
    if request is None:
        out.add(R.REQUESTER_NOT_ENTITLED)  # fail closed: a disclosure to the family must say who received it
        return
    if request.requester == subject.id:
        return  # the data belong to the child: the pupil's own request
    rel: str = request.relationship or "other"
    flags = (PR if request.has_parental_responsibility else 0) | (CARE if request.has_care else 0)
    standing = sstate.standing(request.requester, ctx.t)
    if standing is not None:
        rel, flags = standing
    age = ctx.age(sstate)
    if age is not None and age >= 18:
        if not (request.authorised_by_pupil or flow.emergency):
            out.add(R.REQUESTER_NOT_ENTITLED)  # an adult pupil: nothing without their consent (§4 Family)
        return
    if ctx.kind != "subject_access":
        if not (flags & (PR | CARE) or rel in _NATURAL_PARENTS):
            out.add(R.REQUESTER_NOT_ENTITLED)  # not an education-law parent (Education Act 1996 s576)
            return
    else:
        if not flags & PR:
            out.add(R.REQUESTER_NOT_ENTITLED)  # a non-PR parent cannot make a SAR for the child
            return
        competent = sstate.competent_at(ctx.t, ctx.purpose) is not None
        if competent and not request.authorised_by_pupil and not request.best_interests:
            out.add(R.REQUESTER_NOT_ENTITLED)
            return
    objects = request.pupil_objects or any(
        o[0] <= ctx.t
        and o[9] == "disclosure"
        and (o[2] == subject.id or o[3] == "self")
        and not sstate.objection_ended(o[1], ctx.t)
        and _touches(ctx, o[5], o[6], o[7], o[8])
        for o in sstate.objections
    )
    if objects and _competent_for_disclosure(ctx, sstate) and not request.best_interests:
        out.add(R.REQUESTER_NOT_ENTITLED)


def _competent_for_disclosure(ctx: _Flow, sstate: SubjectState) -> bool:
    age = ctx.age(sstate)
    return (age is not None and age >= 18) or sstate.competent_at(ctx.t, ctx.purpose) is not None


def _retention_exceeded(
    policy: Policy, grant: GrantIndex, recipient: RecipientDef | None, sstate: SubjectState, t: int, day: date
) -> bool:
    retention = policy.retention  # the caller has checked for a legal hold
    births = sstate.births  # the latest record wins, as in `SubjectState.birth_date`
    if births and births[-1][1] <= born_by(day, retention.pupil_file_years_after_birth):
        return True
    left = sstate.left_at(t)
    # The purpose decides (§6.6), never the stated or default basis: a connector can call a routine sync a
    # legal obligation, and a grant listing legal_obligation first would otherwise exempt every flow under it.
    if left is None or grant.purpose.allowed_after_leaving:
        return False
    grace = retention.supplier_sync_days_after_leaving * 86_400_000_000
    # Supplier syncs may drop a leaver up to 30 days after they leave (§6.6).
    return not (recipient is not None and recipient.processor and t - left <= grace)


# --- explanation --------------------------------------------------------------------------------------------


def _affected(ctx: _Flow, verdicts: list[SubjectVerdict]) -> str:
    """With several subjects, who is affected beyond the flow's own reasons."""
    count = len(verdicts)
    if count < 2:
        return ""
    bad = [v.subject_id for v in verdicts if v.reasons and set(v.reasons) - ctx.reasons]
    if not bad:
        return ""
    shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    return f" {len(bad)} of {count} are affected: {shown}."
