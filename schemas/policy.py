"""The Trust's policy register as data: recipients, categories, purposes, bases, conditions and rules.

The register lives in YAML files (`policy/` at the repo top level), one section per file. `load_policy(dir)`
validates it into `Policy` (unknown fields are an error), checks every cross-reference, and fails fast with a
`ConfigurationError` naming the file and the field path. `Policy.digest` is the SHA-256 of a canonical JSON
serialisation; every decision records it, so a decision can be replayed under exactly the policy it was made
under. `Policy.index` precomputes the lookups the evaluator needs on the hot path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from schemas.errors import ConfigurationError
from schemas.events import CountryCode, Identifier, Model, TransferSafeguard

DottedKey = Annotated[str, Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$", max_length=100)]
"""A taxonomy key; `health.allergy` sits under `health`."""

Sensitivity = Literal["ordinary", "sensitive", "art9", "art10"]
"""RULES.md §3: ordinary, sensitive but not Art 9, Art 9 special category, Art 10 criminal offence data."""

RecipientGroup = Literal[
    "statutory",
    "processor",
    "school",
    "health",
    "police_courts",
    "family",
    "partner",
    "adviser",
    "research",
    "marketing",
    "publication",
]
"""The groups of RULES.md §4 (plus `publication`: the Trust's own newsletters, websites and press)."""

PurposeKind = Literal[
    "statutory",
    "public_task",
    "safeguarding",
    "vital_interests",
    "consent",
    "iss",
    "biometric",
    "marketing",
    "promotional_photo",
    "law_enforcement",
    "court",
    "family",
    "subject_access",
    "legal",
    "research",
    "processing",
    "cctv",
    "ctf",
]
"""How a purpose is judged; the evaluator branches on this, never on a purpose's name."""

ConsentNeed = Literal["never", "required", "art9_explicit"]
"""`never`: consent state is irrelevant (§5); `required`: every category needs consent (explicit for Art 9);
`art9_explicit`: only the Art 9 categories need explicit consent."""

AgreementType = Literal["none", "art28_contract", "dsa", "engagement_letter", "engagement_terms", "sla"]
"""The agreement a recipient needs in force (RULES.md §6.1)."""

POLICY_FILES: dict[str, tuple[str, ...]] = {
    "trust.yaml": ("trust",),
    "lawful_bases.yaml": ("bases", "conditions"),
    "categories.yaml": ("categories",),
    "purposes.yaml": ("purposes",),
    "recipients.yaml": ("recipients",),
    "rules.yaml": ("retention", "transfers", "channels"),
}
"""Each policy file and the top-level sections it holds."""


class TrustSchool(Model):
    """One school of the Trust."""

    key: Identifier
    name: str
    ages: str


class TrustDef(Model):
    """The controller and its privacy notice."""

    name: str
    notice_version: str
    notice_published: date
    schools: list[TrustSchool] = Field(min_length=1)


class BasisDef(Model):
    """An Art 6 lawful basis."""

    key: Identifier
    article: str
    label: str


class ConditionDef(Model):
    """An Art 9(2) condition, DPA 2018 Sch 1 condition, or both; `covers` says which data it unlocks."""

    key: Identifier
    reference: str
    label: str
    covers: Literal["art9", "art10", "both"]


class CategoryDef(Model):
    """A data category of the taxonomy, its class, and the notice wording it stands for."""

    key: DottedKey
    label: str
    sensitivity: Sensitivity
    may_contain_art10: bool = False
    notice_terms: list[str] = Field(default_factory=list)


class PurposeDef(Model):
    """A purpose of processing and how it is judged."""

    key: Identifier
    label: str
    kind: PurposeKind
    allowed_after_leaving: bool = Field(
        default=False, description="RULES.md §6.6: legal obligations, claims, transfer, SARs, statutory returns."
    )
    notice_terms: list[str] = Field(default_factory=list)


class Grant(Model):
    """What a recipient may receive for one purpose: bases, conditions, consent need and permitted categories."""

    purpose: Identifier
    bases: list[Identifier] = Field(min_length=1)
    conditions: list[Identifier] = Field(default_factory=list, description="Art 9 / Art 10 conditions.")
    consent: ConsentNeed = "never"
    categories: list[DottedKey] = Field(min_length=1)
    category_min_age: dict[DottedKey, Annotated[int, Field(ge=1, le=25)]] = Field(
        default_factory=dict,
        description="Permitted categories a pupil must have reached this age for (e.g. Cool Milk's FSM flag: 5).",
    )
    agreement: AgreementType | None = Field(default=None, description="Overrides the recipient's agreement.")
    note: str = ""


class RecipientDef(Model):
    """A registered recipient (or a class of them, matched by id prefix)."""

    key: Identifier
    name: str
    group: RecipientGroup
    processor: bool = False
    agreement: AgreementType = "none"
    id_prefixes: list[str] = Field(default_factory=list, description="e.g. `police:` matches `police:west-yorks`.")
    hosting_country: CountryCode = "GB"
    dpf_uk_extension: bool = Field(default=False, description="Certified to the UK Extension of the EU-US DPF.")
    notice_terms: list[str] = Field(default_factory=list)
    grants: list[Grant] = Field(min_length=1)


class RetentionDef(Model):
    """RULES.md §6.6 retention defaults."""

    pupil_file_years_after_birth: int = Field(default=25, ge=1)
    register_years: int = Field(default=6, ge=1)
    register_categories: list[DottedKey] = Field(default_factory=lambda: ["attendance.register"])
    cctv_days: int = Field(default=31, ge=1)
    cctv_categories: list[DottedKey] = Field(default_factory=lambda: ["cctv"])
    supplier_sync_days_after_leaving: int = Field(default=30, ge=0)


def _default_art46() -> list[TransferSafeguard]:
    return ["idta", "uk_addendum"]


class TransferDef(Model):
    """RULES.md §6.7: countries with UK adequacy, DPF countries, and the Art 46 safeguards accepted."""

    home_country: CountryCode = "GB"
    adequate_countries: list[CountryCode] = Field(min_length=1)
    dpf_countries: list[CountryCode] = Field(default_factory=lambda: ["US"])
    art46_safeguards: list[TransferSafeguard] = Field(default_factory=_default_art46)


class ChannelDef(Model):
    """RULES.md §6.13: secure channels, and when a flow needs one."""

    secure: list[Identifier] = Field(min_length=1)
    bulk_threshold: int = Field(default=20, ge=2, description="Records at or above this are bulk data.")
    safeguarding_categories: list[DottedKey] = Field(default_factory=lambda: ["safeguarding"])
    cp_file_categories: list[DottedKey] = Field(default_factory=lambda: ["safeguarding.cp_file"])
    cp_file_purposes: list[Identifier] = Field(
        default_factory=lambda: ["cp_file_transfer"],
        description="Purposes that send a CP file to another school: separately, to the DSL (KCSIE; §6.13).",
    )


class Policy(Model):
    """The whole register, validated; `digest` and `index` are derived, never stored."""

    trust: TrustDef
    bases: list[BasisDef]
    conditions: list[ConditionDef]
    categories: list[CategoryDef]
    purposes: list[PurposeDef]
    recipients: list[RecipientDef]
    retention: RetentionDef = Field(default_factory=RetentionDef)
    transfers: TransferDef
    channels: ChannelDef

    @model_validator(mode="after")
    def _references_resolve(self) -> Policy:
        problems = _cross_reference_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON form (sorted keys, no whitespace), prefixed `sha256:`."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    @cached_property
    def index(self) -> PolicyIndex:
        """Lookups precomputed for the evaluator."""
        return PolicyIndex.build(self)


def _duplicates(keys: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({k for k in keys if k in seen or seen.add(k)})  # type: ignore[func-returns-value]


def _cross_reference_problems(policy: Policy) -> list[str]:
    problems: list[str] = []
    for section, keys in (
        ("bases", [b.key for b in policy.bases]),
        ("conditions", [c.key for c in policy.conditions]),
        ("categories", [c.key for c in policy.categories]),
        ("purposes", [p.key for p in policy.purposes]),
        ("recipients", [r.key for r in policy.recipients]),
    ):
        for dup in _duplicates(keys):
            problems.append(f"{section}: duplicate key {dup!r}")
    bases = {b.key for b in policy.bases}
    conditions = {c.key for c in policy.conditions}
    categories = {c.key for c in policy.categories}
    purposes = {p.key for p in policy.purposes}
    for r_i, recipient in enumerate(policy.recipients):
        for g_i, grant in enumerate(recipient.grants):
            where = f"recipients.{r_i}.grants.{g_i}"
            if grant.purpose not in purposes:
                problems.append(f"{where}.purpose: unknown purpose {grant.purpose!r}")
            problems += [f"{where}.bases: unknown basis {b!r}" for b in grant.bases if b not in bases]
            problems += [
                f"{where}.conditions: unknown condition {c!r}" for c in grant.conditions if c not in conditions
            ]
            problems += [f"{where}.categories: unknown category {c!r}" for c in grant.categories if c not in categories]
            problems += [
                f"{where}.category_min_age: {c!r} is not a permitted category"
                for c in grant.category_min_age
                if not covered_by(c, tuple(grant.categories))
            ]
    problems += [
        f"channels.cp_file_purposes: unknown purpose {p!r}"
        for p in policy.channels.cp_file_purposes
        if p not in purposes
    ]
    for c_i, cat in enumerate(policy.categories):
        parent = cat.key.rpartition(".")[0]
        if parent and parent not in categories:
            problems.append(f"categories.{c_i}.key: {cat.key!r} has no parent {parent!r}")
    return problems


@dataclass(slots=True)
class GrantIndex:
    """A grant with its sets precomputed."""

    grant: Grant
    purpose: PurposeDef
    bases: frozenset[str]
    art9_conditions: frozenset[str]
    art10_conditions: frozenset[str]
    permitted: frozenset[str]
    agreement: AgreementType
    min_ages: tuple[tuple[str, int], ...] = ()
    permits_memo: dict[str, bool] = field(default_factory=dict)


@dataclass(slots=True)
class PolicyIndex:
    """Dicts and frozensets built once from a `Policy`, so evaluation does no list scans."""

    policy: Policy
    recipients: dict[str, RecipientDef]
    prefixes: tuple[tuple[str, RecipientDef], ...]
    grants: dict[tuple[str, str], GrantIndex]
    purposes: dict[str, PurposeDef]
    bases: frozenset[str]
    conditions: dict[str, ConditionDef]
    sensitivity: dict[str, Sensitivity]
    adequate: frozenset[str]
    dpf_countries: frozenset[str]
    art46: frozenset[str]
    secure_channels: frozenset[str]
    cctv_categories: frozenset[str] = frozenset()
    register_categories: frozenset[str] = frozenset()
    safeguarding_categories: frozenset[str] = frozenset()
    cp_file_categories: frozenset[str] = frozenset()
    cp_file_purposes: frozenset[str] = frozenset()
    child_abuse_categories: frozenset[str] = frozenset({"safeguarding.child_abuse"})
    class_memo: dict[str, Sensitivity | None] = field(default_factory=dict)
    recipient_memo: dict[str, RecipientDef | None] = field(default_factory=dict)
    flow_memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    """The evaluator's per-shape memo: what a flow's own fields and this policy alone decide."""
    reasons_memo: dict[frozenset[str], tuple[tuple[str, ...], str]] = field(default_factory=dict)
    """The evaluator's memo of a set of reason codes: (in report order, the explanation's "because" text)."""

    @classmethod
    def build(cls, policy: Policy) -> PolicyIndex:
        """Index a validated policy."""
        purposes = {p.key: p for p in policy.purposes}
        conditions = {c.key: c for c in policy.conditions}
        grants: dict[tuple[str, str], GrantIndex] = {}
        for recipient in policy.recipients:
            for grant in recipient.grants:
                conds = [conditions[c] for c in grant.conditions]
                grants[(recipient.key, grant.purpose)] = GrantIndex(
                    grant=grant,
                    purpose=purposes[grant.purpose],
                    bases=frozenset(grant.bases),
                    art9_conditions=frozenset(c.key for c in conds if c.covers in ("art9", "both")),
                    art10_conditions=frozenset(c.key for c in conds if c.covers in ("art10", "both")),
                    permitted=frozenset(grant.categories),
                    agreement=grant.agreement or recipient.agreement,
                    min_ages=tuple(grant.category_min_age.items()),
                )
        prefixes = sorted(
            ((p, r) for r in policy.recipients for p in r.id_prefixes), key=lambda pr: len(pr[0]), reverse=True
        )
        return cls(
            policy=policy,
            recipients={r.key: r for r in policy.recipients},
            prefixes=tuple(prefixes),
            grants=grants,
            purposes=purposes,
            bases=frozenset(b.key for b in policy.bases),
            conditions=conditions,
            sensitivity={c.key: c.sensitivity for c in policy.categories},
            adequate=frozenset(policy.transfers.adequate_countries),
            dpf_countries=frozenset(policy.transfers.dpf_countries),
            art46=frozenset(policy.transfers.art46_safeguards),
            secure_channels=frozenset(policy.channels.secure),
            cctv_categories=frozenset(policy.retention.cctv_categories),
            register_categories=frozenset(policy.retention.register_categories),
            safeguarding_categories=frozenset(policy.channels.safeguarding_categories),
            cp_file_categories=frozenset(policy.channels.cp_file_categories),
            cp_file_purposes=frozenset(policy.channels.cp_file_purposes),
        )

    def recipient(self, recipient_id: str) -> RecipientDef | None:
        """The register entry for a recipient id (exact key first, then the longest id prefix)."""
        try:
            return self.recipient_memo[recipient_id]
        except KeyError:
            pass
        found = self.recipients.get(recipient_id)
        if found is None:
            for prefix, entry in self.prefixes:
                if recipient_id.startswith(prefix) and len(recipient_id) > len(prefix):
                    found = entry
                    break
        if len(self.recipient_memo) < 100_000:
            self.recipient_memo[recipient_id] = found
        return found

    def category_class(self, key: str) -> Sensitivity | None:
        """The class of a category, inherited from the nearest registered ancestor; None if unknown."""
        try:
            return self.class_memo[key]
        except KeyError:
            pass
        probe: str = key
        found: Sensitivity | None = None
        while probe:
            if probe in self.sensitivity:
                found = self.sensitivity[probe]
                break
            probe = probe.rpartition(".")[0]
        if len(self.class_memo) < 100_000:
            self.class_memo[key] = found
        return found

    @staticmethod
    def permits(grant: GrantIndex, key: str) -> bool:
        """True when the category or one of its ancestors is in the grant's permitted set."""
        memo = grant.permits_memo
        try:
            return memo[key]
        except KeyError:
            pass
        result = covered_by(key, grant.permitted)
        if len(memo) < 10_000:
            memo[key] = result
        return result


def covered_by(key: str, allowed: frozenset[str] | set[str] | tuple[str, ...]) -> bool:
    """True when `key` or one of its dotted ancestors is in `allowed` (`health` covers `health.allergy`)."""
    probe = key
    while probe:
        if probe in allowed:
            return True
        probe = probe.rpartition(".")[0]
    return False


def _error_lines(exc: ValidationError, section_files: dict[str, str], directory: Path) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        file = section_files.get(loc[0], "policy") if loc else "policy"
        path = ".".join(loc) or "<root>"
        lines.append(f"{directory / file}: {path}: {err['msg']}")
    return lines


def load_policy(directory: Path | str) -> Policy:
    """Read and validate every policy file in `directory`; raise `ConfigurationError` naming file and field."""
    directory = Path(directory)
    merged: dict[str, Any] = {}
    section_files: dict[str, str] = {}
    for name, sections in POLICY_FILES.items():
        path = directory / name
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"{path}: policy file missing") from None
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"{path}: expected a mapping with keys {', '.join(sections)}")
        unexpected = sorted(set(data) - set(sections))
        if unexpected:
            raise ConfigurationError(f"{path}: {unexpected[0]}: unexpected section (allowed: {', '.join(sections)})")
        for section in sections:
            section_files[section] = name
            if section in data:
                merged[section] = data[section]
    try:
        return Policy.model_validate(merged)
    except ValidationError as exc:
        lines = _error_lines(exc, section_files, directory)
        # Cross-reference problems come from the root validator: name the file of each path's section.
        detailed = []
        for line in lines:
            if ": <root>: " in line and "Value error, " in line:
                for problem in line.split("Value error, ", 1)[1].split("; "):
                    section = problem.split(".", 1)[0].split(":", 1)[0]
                    detailed.append(f"{directory / section_files.get(section, 'policy')}: {problem}")
            else:
                detailed.append(line)
        raise ConfigurationError("invalid policy:\n" + "\n".join(detailed)) from None
