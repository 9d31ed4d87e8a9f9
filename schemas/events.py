"""Events on the wire: data flows leaving the Trust and the facts they are judged against.

Every event is JSON with a `schema_version`, a stable `event_id`, `occurred_at` (when it happened) distinct
from `emitted_at` (when a connector sent it), and a `source` (connector id + per-connector sequence number, so
a gap means a lost event). All datetimes must carry a timezone and are normalised to UTC.

`occurred_at` is the *effective time* of a fact: a consent is given at its `occurred_at`, a withdrawal takes
effect at its `occurred_at`, an agreement is signed at its `occurred_at`. The exceptions carry their own
effective field: a court order binds the Trust from `trust_notified_at` (RULES.md §2).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Self, cast

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalised to UTC on parse (RULES.md §2: compare in UTC)."""

Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]*$")]
"""An opaque id: event ids, subject ids, recipient and category keys."""

CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
"""ISO 3166-1 alpha-2 country code, upper case."""

Relationship = Literal[
    "self",
    "mother",
    "father",
    "parent",
    "step_parent",
    "grandparent",
    "other_relative",
    "foster_carer",
    "guardian",
    "special_guardian",
    "local_authority",
    "other",
]
"""How a person relates to the data subject; `self` is the subject themselves."""

TransferSafeguard = Literal[
    "none",
    "adequacy",
    "dpf_uk_extension",
    "idta",
    "uk_addendum",
    "art49_vital_interests",
    "art49_legal_claims",
]
"""The UK GDPR Chapter V ground relied on for a transfer outside the UK (RULES.md §6.7)."""

Consideration = Literal["none", "cash", "discount", "free_places", "commission", "other"]
"""What the Trust received in exchange for the data; anything but `none` is a sale (RULES.md §6.3)."""

RequestAuthority = Literal["court_order", "warrant", "written_sch2_para2", "verbal", "subject_access", "none"]
"""The authority a requester produced for a police, court, family or subject-access disclosure."""


class Model(BaseModel):
    """Base for every wire model: unknown fields are an error, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """Build without validation from values the caller guarantees valid (see `trusted_from`)."""
        return cls.trusted_from(values)

    @classmethod
    def trusted_from(cls, values: dict[str, Any]) -> Self:
        """Build without validation from a dict the caller guarantees valid, giving every field; it is kept.

        For hot paths that assemble a model from already-validated parts (a decision from a validated flow);
        it does what `model_construct` does, minus the per-field default handling. Anything short of every
        field falls back to `model_construct`.
        """
        fields_set = _FIELDS_SET.get(cls)
        if fields_set is None:
            fields_set = _FIELDS_SET[cls] = set(cls.model_fields)
        if len(values) != len(fields_set):
            return cast(Self, cls.model_construct(**values))
        instance = _new_instance(cls)
        # BaseModel's own slot descriptors, called directly: the same four slots `model_construct` fills, without
        # a by-name attribute lookup per slot (this runs twice per decision).
        _set_dict(instance, values)
        # Every field is set, and frozen instances never change which: one shared set per class is exact.
        _set_fields_set(instance, fields_set)
        _set_extra(instance, None)
        _set_private(instance, None)
        return instance


_new_instance = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_FIELDS_SET: dict[type[BaseModel], set[str]] = {}


class Source(Model):
    """Which connector emitted an event, and its per-connector sequence number."""

    connector: Identifier
    sequence: int = Field(ge=0)


class EventEnvelope(Model):
    """Fields every event carries."""

    schema_version: Literal[1] = 1
    event_id: Identifier
    occurred_at: UtcDatetime
    emitted_at: UtcDatetime
    source: Source


class Subject(Model):
    """A data subject whose personal data is in a flow."""

    kind: Literal["pupil", "parent"] = "pupil"
    id: Identifier


class Actor(Model):
    """A person who gives, refuses or withdraws consent, objects, or asks for data, and their standing."""

    id: Identifier
    relationship: Relationship
    has_parental_responsibility: bool = False
    has_care: bool = Field(default=False, description="Has care of the child (an education-law parent).")
    delegated_authority: bool = Field(
        default=False, description="Recorded delegated authority (a foster carer under a care plan)."
    )


class DisclosureRequest(Model):
    """The request behind a police, court, family or subject-access disclosure (RULES.md §6.10-6.12)."""

    requester: Identifier
    relationship: Relationship | None = None
    has_parental_responsibility: bool | None = None
    has_care: bool | None = None
    authority: RequestAuthority = "none"
    reference: str | None = Field(default=None, max_length=200)
    emergency: bool = Field(default=False, description="A missing child or a risk to life.")
    signed_by_inspector_or_above: bool = False
    names_person: bool = False
    names_incident: bool = False
    named_subject_ids: list[Identifier] = Field(
        default_factory=list, description="Subjects the request names; others in the flow are a trawl."
    )
    authorised_by_pupil: bool = Field(default=False, description="The (competent or adult) pupil agreed.")
    pupil_objects: bool = Field(default=False, description="A competent pupil objects to the disclosure.")
    best_interests: bool = Field(
        default=False, description="The DSL recorded that disclosure is in the child's best interests."
    )


class DataFlow(EventEnvelope):
    """One outbound flow of pupil or parent personal data to a recipient."""

    kind: Literal["flow"] = "flow"
    recipient: Identifier
    subjects: list[Subject] = Field(min_length=1)
    categories: list[Identifier] = Field(min_length=1)
    purpose: Identifier
    lawful_basis: str | None = None
    condition: str | None = Field(default=None, description="The Art 9(2) / DPA Sch 1 condition relied on.")
    channel: Identifier = "unspecified"
    destination_country: CountryCode = "GB"
    transfer_safeguard: TransferSafeguard = "none"
    record_count: int = Field(default=1, ge=0)
    consideration: Consideration = "none"
    request: DisclosureRequest | None = None
    emergency: bool = Field(
        default=False,
        description="A genuine life-or-death emergency: the child cannot consent, the parent is unreachable.",
    )
    to_data_subject: bool = Field(default=False, description="Sent to the data subject themselves.")
    addressed_to_dsl: bool = Field(default=False, description="Addressed to the receiving school's DSL.")
    unredacted_third_party_data: bool = False
    contains_child_abuse_data: bool = False
    serious_harm: bool = Field(default=False, description="Disclosure meets the DPA Sch 3 serious-harm test.")
    data_recorded_at: UtcDatetime | None = Field(
        default=None, description="When the oldest record in the flow was made (CCTV, registers)."
    )
    legal_hold: bool = Field(default=False, description="An incident hold, legal obligation or legal claim.")

    def partition_key(self) -> bytes:
        """Kafka key: the first subject, so single-subject flows land beside that subject's state."""
        return self.subjects[0].id.encode()


class ConsentScope(Model):
    """What a consent, refusal, withdrawal or objection covers; a missing field means "any"."""

    recipient: Identifier | None = None
    recipient_class: Identifier | None = Field(default=None, description="A recipient group key.")
    purpose: Identifier | None = None
    categories: list[Identifier] = Field(default_factory=list, description="Empty means every category.")

    @model_validator(mode="after")
    def _one_recipient_form(self) -> ConsentScope:
        if self.recipient is not None and self.recipient_class is not None:
            raise ValueError("give recipient or recipient_class, not both")
        return self


class _SubjectFact(EventEnvelope):
    subject: Subject

    def partition_key(self) -> bytes:
        """Kafka key: the subject the fact is about."""
        return self.subject.id.encode()


class ConsentGiven(_SubjectFact):
    """A consent or permission, valid from `occurred_at` (inclusive) until withdrawn (exclusive)."""

    kind: Literal["consent_given"] = "consent_given"
    consent_id: Identifier
    given_by: Actor
    scope: ConsentScope
    explicit: bool = Field(default=False, description="Explicit consent, needed for Art 9 data.")
    written: bool = Field(default=False, description="Given in writing (POFA 2012 s27 for biometrics).")
    competence_assessment_id: Identifier | None = None
    method: str = Field(default="unspecified", max_length=100)

    @model_validator(mode="after")
    def _scope_is_specific(self) -> ConsentGiven:
        scope = self.scope
        if scope.recipient is None and scope.recipient_class is None:
            raise ValueError("scope must name a recipient or a recipient_class")
        if scope.purpose is None:
            raise ValueError("scope must name a purpose")
        if not scope.categories:
            raise ValueError("scope must name the categories")
        return self


class ConsentWithdrawn(_SubjectFact):
    """A withdrawal or opt-out, effective at `occurred_at`, of one consent or of everything in a scope."""

    kind: Literal["consent_withdrawn"] = "consent_withdrawn"
    consent_id: Identifier | None = None
    withdrawn_by: Actor
    scope: ConsentScope | None = None
    method: str = Field(default="unspecified", max_length=100)

    @model_validator(mode="after")
    def _names_what(self) -> ConsentWithdrawn:
        if self.consent_id is None and self.scope is None:
            raise ValueError("name the consent_id or the scope withdrawn")
        return self


class ConsentRefused(_SubjectFact):
    """A refusal to consent, standing until the same person later consents."""

    kind: Literal["consent_refused"] = "consent_refused"
    refused_by: Actor
    scope: ConsentScope


class ObjectionRaised(_SubjectFact):
    """An objection (POFA 2012 s26 biometrics, Art 21, direct marketing), standing until withdrawn."""

    kind: Literal["objection_raised"] = "objection_raised"
    objection_id: Identifier
    objected_by: Actor
    scope: ConsentScope
    grounds: Literal["biometrics", "art21", "direct_marketing", "disclosure"] = "art21"
    upheld: bool = Field(default=False, description="The Trust accepted an Art 21 objection.")


class ObjectionWithdrawn(_SubjectFact):
    """The end of an objection, effective at `occurred_at`."""

    kind: Literal["objection_withdrawn"] = "objection_withdrawn"
    objection_id: Identifier


class PupilEnrolled(_SubjectFact):
    """A pupil joined a Trust school on `occurred_at`."""

    kind: Literal["pupil_enrolled"] = "pupil_enrolled"
    school: Identifier


class PupilLeft(_SubjectFact):
    """A pupil left a Trust school on `occurred_at`."""

    kind: Literal["pupil_left"] = "pupil_left"
    school: Identifier
    destination_school: Identifier | None = None
    last_trust_school: bool = Field(default=True, description="The pupil left the Trust altogether.")


class BirthDateRecorded(_SubjectFact):
    """A pupil's date of birth (the latest record by `occurred_at` wins: a correction is a correction)."""

    kind: Literal["birth_date_recorded"] = "birth_date_recorded"
    birth_date: date


class CourtOrderNotified(_SubjectFact):
    """A court order about a pupil; it restricts the Trust from `trust_notified_at` (RULES.md §2)."""

    kind: Literal["court_order"] = "court_order"
    order_id: Identifier
    order_type: Literal[
        "prohibited_steps", "specific_issue", "child_arrangements", "non_molestation", "reporting_restriction", "other"
    ] = "prohibited_steps"
    made_at: UtcDatetime
    trust_notified_at: UtcDatetime
    valid_until: UtcDatetime | None = None
    restricted_person_ids: list[Identifier] = Field(
        default_factory=list, description="People who must not receive the pupil's data."
    )
    restricted_recipients: list[Identifier] = Field(
        default_factory=list, description="Recipients (or groups) who must not receive it."
    )
    categories: list[Identifier] = Field(default_factory=list, description="Restricted categories; empty: all.")


class ParentalResponsibilityRecorded(_SubjectFact):
    """A person's standing towards a pupil: parental responsibility, care, delegated authority."""

    kind: Literal["parental_responsibility"] = "parental_responsibility"
    person: Actor


class CareOrderRecorded(_SubjectFact):
    """A care order: the local authority shares parental responsibility while it is in force."""

    kind: Literal["care_order"] = "care_order"
    order_id: Identifier
    local_authority: Identifier
    valid_until: UtcDatetime | None = None


class CompetenceAssessed(_SubjectFact):
    """A recorded assessment of whether a pupil is competent to decide for themselves."""

    kind: Literal["competence_assessed"] = "competence_assessed"
    assessment_id: Identifier
    competent: bool
    assessed_by: Identifier
    purposes: list[Identifier] = Field(default_factory=list, description="Purposes it covers; empty: all.")


class SharingAgreement(EventEnvelope):
    """An Art 28 contract, DSA or engagement terms, signed at `occurred_at`, in force on both end dates."""

    kind: Literal["sharing_agreement"] = "sharing_agreement"
    agreement_id: Identifier
    recipient: Identifier
    agreement_type: Literal["art28_contract", "dsa", "engagement_letter", "engagement_terms", "sla"]
    valid_from: UtcDatetime
    valid_until: UtcDatetime | None = None
    purposes: list[Identifier] = Field(default_factory=list, description="Purposes covered; empty: all.")
    categories: list[Identifier] = Field(default_factory=list, description="Categories covered; empty: all.")

    @model_validator(mode="after")
    def _ordered(self) -> SharingAgreement:
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self

    def partition_key(self) -> bytes:
        """Kafka key: the recipient (recipient state is small and global)."""
        return self.recipient.encode()


class AgreementTerminated(EventEnvelope):
    """An agreement ended early, effective at `occurred_at`."""

    kind: Literal["agreement_terminated"] = "agreement_terminated"
    agreement_id: Identifier
    recipient: Identifier

    def partition_key(self) -> bytes:
        """Kafka key: the recipient."""
        return self.recipient.encode()


class NoticeVersionPublished(EventEnvelope):
    """A new version of the Trust's privacy notice, in force from `occurred_at`."""

    kind: Literal["notice_version"] = "notice_version"
    version: Annotated[str, Field(min_length=1, max_length=20)]

    def partition_key(self) -> bytes:
        """Kafka key: the Trust as a whole."""
        return b"trust"


SubjectFact = (
    ConsentGiven
    | ConsentWithdrawn
    | ConsentRefused
    | ObjectionRaised
    | ObjectionWithdrawn
    | PupilEnrolled
    | PupilLeft
    | BirthDateRecorded
    | CourtOrderNotified
    | ParentalResponsibilityRecorded
    | CareOrderRecorded
    | CompetenceAssessed
)
"""A fact about one data subject, kept in that subject's state."""

RecipientFact = SharingAgreement | AgreementTerminated
"""A fact about a recipient, kept in recipient state."""

Fact = SubjectFact | RecipientFact | NoticeVersionPublished
"""Any fact (everything on `pupilflow.facts`)."""

Event = Annotated[DataFlow | Fact, Field(discriminator="kind")]
"""Any event on `pupilflow.flows` or `pupilflow.facts`, discriminated on `kind`."""

SUBJECT_FACT_TYPES: tuple[type[EventEnvelope], ...] = (
    ConsentGiven,
    ConsentWithdrawn,
    ConsentRefused,
    ObjectionRaised,
    ObjectionWithdrawn,
    PupilEnrolled,
    PupilLeft,
    BirthDateRecorded,
    CourtOrderNotified,
    ParentalResponsibilityRecorded,
    CareOrderRecorded,
    CompetenceAssessed,
)
"""The subject-fact classes, for `isinstance` checks."""

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(raw: bytes | str) -> Event:
    """Validate one JSON event; raises `pydantic.ValidationError` with field paths when it is invalid."""
    return _EVENT_ADAPTER.validate_json(raw)


def parse_flow(raw: bytes | str) -> DataFlow:
    """Validate one JSON data flow (the flows topic carries nothing else; skips the union dispatch)."""
    # The compiled validator itself: `model_validate_json` only forwards to it, after Python-level argument
    # checks that cost about a tenth of the validation on this hot path.
    return DataFlow.__pydantic_validator__.validate_json(raw)  # type: ignore[no-any-return]


def effective_at(fact: Fact) -> datetime:
    """When a fact starts to bear on flows (a court order: when the Trust was notified)."""
    if isinstance(fact, CourtOrderNotified):
        return fact.trust_notified_at
    return fact.occurred_at


def events_json_schema() -> dict[str, object]:
    """The JSON Schema of every event kind, for connector authors (committed as schemas/jsonschema/)."""
    schema = _EVENT_ADAPTER.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pupilflow event"
    return schema
