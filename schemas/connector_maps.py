"""How connectors translate what school systems produce into register keys (`policy/connectors.yaml`).

These maps are part of the Trust's policy data: which schools a Common Transfer File may name, which
register recipient a supplier or mail domain is, and which data categories a CTF container, a synced field
or a sensitivity label carries. They are validated at load against the register itself, so a map can never
name a recipient, purpose or category the policy does not know.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, field_validator

from schemas.errors import ConfigurationError
from schemas.events import CountryCode, Identifier, Model, TransferSafeguard
from schemas.policy import Policy, covered_by

CONNECTOR_MAPS_FILE = "connectors.yaml"
"""The file, beside the other policy files, that holds the connector maps."""

LaEstab = Annotated[str, Field(pattern=r"^\d{7}$", description="DfE LA number (3 digits) + establishment (4).")]
"""A school's DfE number: local authority and establishment, e.g. `9372001`."""


class Footing(Model):
    """The footing a connector's flows claim: purpose, stated basis and condition, channel, transfer."""

    purpose: Identifier
    lawful_basis: Identifier | None = None
    condition: Identifier | None = None
    channel: Identifier = "unspecified"
    destination_country: CountryCode = "GB"
    transfer_safeguard: TransferSafeguard = "none"


class Route(Footing):
    """A footing with the register recipient the flows go to."""

    recipient: Identifier


class School(Model):
    """A school a CTF may come from or go to, by DfE number."""

    laestab: LaEstab
    name: str
    recipient: Identifier = Field(description="A Trust school's register key, or a `school:` id for any other.")
    trust_school: bool = Field(default=False, description="One of the Trust's own schools.")


class CtfMap(Model):
    """Common Transfer Files: the schools, the footing of a transfer, and what each container carries."""

    schools: list[School] = Field(min_length=1)
    external: Footing = Field(description="A CTF to a school outside the Trust.")
    internal: Footing = Field(description="A CTF between Trust schools.")
    core_categories: list[Identifier] = Field(
        min_length=1, description="What every CTF pupil record carries (UPN, names, date of birth...)."
    )
    containers: dict[str, list[Identifier]] = Field(
        min_length=1, description="CTF container element (e.g. `SENhistory`) → the categories it carries."
    )


class Supplier(Model):
    """A processor that sync logs name, where its syncs go, and any field names of its own."""

    names: list[str] = Field(min_length=1, description="How sync logs name the supplier (case-insensitive).")
    route: Route
    fields: dict[str, Identifier] = Field(
        default_factory=dict, description="Field name → category, for names this supplier alone uses."
    )


class SyncMap(Model):
    """MIS and supplier sync logs: the suppliers, and the category of each synced field name."""

    fields: dict[str, Identifier] = Field(
        min_length=1, description="Synced field name (case-insensitive) → category, for every supplier."
    )
    suppliers: list[Supplier] = Field(min_length=1)

    def category(self, supplier: Supplier, field_name: str) -> Identifier | None:
        """The category a synced field belongs to, or None when the maps do not know the field."""
        wanted = field_name.strip().casefold()
        for table in (supplier.fields, self.fields):
            for name, key in table.items():
                if name.casefold() == wanted:
                    return key
        return None


class MailDomain(Model):
    """An external mail domain that belongs to a register recipient."""

    domain: str = Field(pattern=r"^[a-z0-9.-]+\.[a-z]{2,}$")
    route: Route


class MailMap(Model):
    """Outbound mail: the Trust's own domains, known external domains and sensitivity labels."""

    internal_domains: list[str] = Field(min_length=1)
    domains: list[MailDomain] = Field(default_factory=list)
    unknown_route: Footing = Field(description="Footing of mail to an unmapped domain (its recipient is unknown).")
    labels: dict[str, list[Identifier]] = Field(
        min_length=1, description="Sensitivity label → categories; an empty list: no personal data, no flow."
    )
    pupil_id_pattern: str = Field(
        default=r"\b[A-Z]\d{11}[0-9A-Z]\b", description="How a pupil id (UPN) appears in subjects and file names."
    )

    @field_validator("internal_domains")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [d.lower() for d in value]


class ConnectorMaps(Model):
    """Every connector map, validated against the register."""

    ctf: CtfMap
    sync: SyncMap
    mail: MailMap

    def school(self, laestab: str) -> School | None:
        """The school with this DfE number, if the Trust knows it."""
        return next((s for s in self.ctf.schools if s.laestab == laestab), None)

    def supplier(self, name: str) -> Supplier | None:
        """The supplier a sync log names (case-insensitive)."""
        wanted = name.strip().casefold()
        return next((s for s in self.sync.suppliers if wanted in {n.casefold() for n in s.names}), None)

    def mail_domain(self, domain: str) -> MailDomain | None:
        """The register entry for an external mail domain or any of its parent domains."""
        probe = domain.lower()
        while "." in probe:
            found = next((d for d in self.mail.domains if d.domain == probe), None)
            if found is not None:
                return found
            probe = probe.split(".", 1)[1]
        return None

    def problems(self, policy: Policy) -> list[str]:
        """Every key the maps name that the register does not know."""
        index = policy.index
        categories = {c.key for c in policy.categories}
        purposes = {p.key for p in policy.purposes}
        bases = {b.key for b in policy.bases}
        conditions = {c.key for c in policy.conditions}
        found: list[str] = []

        def route(where: str, r: Footing) -> None:
            if isinstance(r, Route) and index.recipient(r.recipient) is None:
                found.append(f"{where}.recipient: unknown recipient {r.recipient!r}")
            if r.purpose not in purposes:
                found.append(f"{where}.purpose: unknown purpose {r.purpose!r}")
            if r.lawful_basis is not None and r.lawful_basis not in bases:
                found.append(f"{where}.lawful_basis: unknown basis {r.lawful_basis!r}")
            if r.condition is not None and r.condition not in conditions:
                found.append(f"{where}.condition: unknown condition {r.condition!r}")

        def category(where: str, key: str) -> None:
            # A map may name a narrower key than the taxonomy has (e.g. `identity.upn` under `identity`).
            if not covered_by(key, categories):
                found.append(f"{where}: unknown category {key!r}")

        for i, school in enumerate(self.ctf.schools):
            if index.recipient(school.recipient) is None:
                found.append(f"ctf.schools.{i}.recipient: unknown recipient {school.recipient!r}")
        route("ctf.external", self.ctf.external)
        route("ctf.internal", self.ctf.internal)
        for key in self.ctf.core_categories:
            category("ctf.core_categories", key)
        for name, keys in self.ctf.containers.items():
            for key in keys:
                category(f"ctf.containers.{name}", key)
        for field_name, key in self.sync.fields.items():
            category(f"sync.fields.{field_name}", key)
        for i, supplier in enumerate(self.sync.suppliers):
            route(f"sync.suppliers.{i}.route", supplier.route)
            for field_name, key in supplier.fields.items():
                category(f"sync.suppliers.{i}.fields.{field_name}", key)
        for i, domain in enumerate(self.mail.domains):
            route(f"mail.domains.{i}.route", domain.route)
        route("mail.unknown_route", self.mail.unknown_route)
        for label, keys in self.mail.labels.items():
            for key in keys:
                category(f"mail.labels.{label}", key)
        return found


def load_connector_maps(directory: Path | str, policy: Policy) -> ConnectorMaps:
    """Read and validate `connectors.yaml` against `policy`; raise `ConfigurationError` naming file and field."""
    path = Path(directory) / CONNECTOR_MAPS_FILE
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: connector maps missing") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
    try:
        maps = ConnectorMaps.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{path}: {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise ConfigurationError("invalid connector maps:\n" + "\n".join(lines)) from None
    problems = maps.problems(policy)
    if problems:
        raise ConfigurationError("invalid connector maps:\n" + "\n".join(f"{path}: {p}" for p in problems))
    return maps
