"""Outbound mail trace exports (`*.csv`) → one `DataFlow` per external recipient of a message that leaves.

Mail among the Trust's own domains is not a flow, and neither is mail whose sensitivity label says it holds
no personal data. Everything else is judged: a domain nobody mapped becomes an `email:<domain>` recipient
the register does not know, a missing or unknown label the category `unclassified`, and a message that
names no pupil an `unidentified:<message id>` subject, so each fails closed downstream rather than vanishing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from producers.csvrows import check_header, rows_to_records
from producers.filesource import Draft, Record
from producers.textfields import identifier_part, parse_london_time, split_list
from schemas.connector_maps import ConnectorMaps
from schemas.events import DataFlow

REQUIRED_COLUMNS = frozenset({"time", "message_id", "sender", "recipients", "subject", "attachments", "sensitivity"})
"""Columns a mail trace CSV must have (anything else is ignored)."""

UNCLASSIFIED = "unclassified"
"""The category of mail with a missing or unknown sensitivity label: not in the register, so it fails closed."""

_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}$")


class MailTraceFormat:
    """Reads outbound mail trace exports; each row is one message."""

    patterns: tuple[str, ...] = ("*.csv",)

    def __init__(self, maps: ConnectorMaps) -> None:
        self._maps = maps
        self._internal = tuple(maps.mail.internal_domains)
        self._labels = {label.strip().casefold(): keys for label, keys in maps.mail.labels.items()}
        self._pupil_id = re.compile(maps.mail.pupil_id_pattern)
        self._unknown_route = maps.mail.unknown_route.model_dump()
        self._routes: dict[str, dict[str, Any]] = {}

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        """The records of a mail trace CSV after byte `position`; a message that stays inside has no drafts."""
        check_header(path, frozenset(REQUIRED_COLUMNS))
        yield from rows_to_records(path, position, line, self.drafts)

    def drafts(self, row: dict[str, str]) -> tuple[Draft, ...]:
        """The flows of one message (none when it stays inside or holds no personal data)."""
        # Every row is checked whole, even one that turns out not to be a flow: a trace with broken times is
        # a broken export, and the DPO should hear of it.
        occurred_at = parse_london_time(row["time"])
        addresses = split_list(row["recipients"])
        if not addresses:
            raise ValueError("no recipients")
        routes: dict[str, dict[str, Any]] = {}
        for address in addresses:
            domain = _domain_of(address)
            if self._is_internal(domain):
                continue
            route = self._route(domain)
            # Domains of one register recipient (a council's sub-domains) are one flow, not one each.
            routes.setdefault(route["recipient"], route)
        if not routes:
            return ()
        label = row["sensitivity"].strip()
        categories = self._labels.get(label.casefold(), [UNCLASSIFIED]) if label else [UNCLASSIFIED]
        if not categories:
            return ()  # the label says the message holds no personal data
        subjects = self._subjects(row)
        return tuple(
            Draft(
                DataFlow,
                {
                    **route,
                    "occurred_at": occurred_at,
                    "subjects": subjects,
                    "categories": list(categories),
                    "record_count": len(subjects),
                },
            )
            for route in routes.values()
        )

    def _is_internal(self, domain: str) -> bool:
        # A sub-domain of a Trust domain (a school's pupil mail) is the Trust's too.
        return any(domain == own or domain.endswith("." + own) for own in self._internal)

    def _route(self, domain: str) -> dict[str, Any]:
        route = self._routes.get(domain)
        if route is None:
            mapped = self._maps.mail_domain(domain)
            if mapped is not None:
                route = mapped.route.model_dump()
            else:
                route = {"recipient": f"email:{domain}", **self._unknown_route}
            self._routes[domain] = route
        return route

    def _subjects(self, row: dict[str, str]) -> list[dict[str, str]]:
        # File names join words with `_`, which `\b` counts as a letter: split them so an id still stands alone.
        text = f"{row['subject']} ; {row['attachments']}".replace("_", " ")
        ids = list(dict.fromkeys(match.group(0) for match in self._pupil_id.finditer(text)))
        if ids:
            return [{"kind": "pupil", "id": pupil} for pupil in ids]
        message_id = row["message_id"].strip()
        if not message_id:
            raise ValueError("names no pupil and has no message_id to stand for them")
        return [{"kind": "pupil", "id": f"unidentified:{identifier_part(message_id)}"}]


def _domain_of(address: str) -> str:
    """The lower-cased domain of an address (`Name <a@b.org>` too); `ValueError` if it is not an address."""
    _, bare = parseaddr(address)
    local, at, domain = bare.rpartition("@")
    domain = domain.strip().lower().rstrip(".")
    if not at or not local or not _DOMAIN.match(domain):
        raise ValueError(f"recipient {address!r} is not an email address")
    return domain


def file_format(maps: ConnectorMaps) -> MailTraceFormat:
    """The mail-trace connector format for these connector maps."""
    return MailTraceFormat(maps)
