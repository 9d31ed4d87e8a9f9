"""Ground truth: the violations a run injected, each with the reason code the pipeline should lead with."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

RULES = {
    "UNKNOWN_RECIPIENT": "§4 Recipient register",
    "SALE_OF_DATA": "§6.3 Sale",
    "MARKETING_WITHOUT_CONSENT": "§6.4 Marketing",
    "PHOTO_WITHOUT_PERMISSION": "§6.5 Photographs",
    "LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS": "§6.10 Police and courts",
    "COURT_ORDER_RESTRICTION": "§6.11 Family",
    "REQUESTER_NOT_ENTITLED": "§6.12 Subject access requests",
    "HARMFUL_DISCLOSURE": "§6.12 Subject access requests",
    "OBJECTION_NOT_HONOURED": "§5 Consent (biometrics)",
    "CONSENT_WITHDRAWN": "§5 Consent",
    "CONSENT_GIVER_NOT_AUTHORISED": "§5 Consent (who may consent)",
    "NO_CONSENT": "§5 Consent",
    "NO_LAWFUL_BASIS": "§4 Recipient register (Art 6 basis)",
    "CATEGORY_NOT_PERMITTED_FOR_RECIPIENT": "§6.2 Minimisation",
    "SPECIAL_CATEGORY_WITHOUT_CONDITION": "§3 Data categories (Art 9 condition)",
    "CRIMINAL_DATA_WITHOUT_CONDITION": "§3 Data categories (Art 10 condition)",
    "NO_SHARING_AGREEMENT": "§6.1 Agreements",
    "AGREEMENT_EXPIRED": "§6.1 Agreements",
    "INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD": "§6.7 International transfers",
    "RETENTION_EXCEEDED": "§6.6 Retention",
    "INSECURE_CHANNEL": "§6.13 Channel",
}
"""The RULES.md section each reason code enforces."""


@dataclass(frozen=True)
class Violation:
    """One way to break a flow: the reason code it must lead with and what was done."""

    reason: str
    description: str

    @property
    def rule(self) -> str:
        """The RULES.md rule broken."""
        return RULES[self.reason]


class Injector:
    """Decides, flow by flow, whether to break it and how, at a fixed rate of eligible flows.

    With `cover_all` the first eligible flow that can carry a reason code not injected yet always gets it, so a
    run exercises every code its flows allow even when some kinds of flow are rare (a census, a SAR).
    """

    def __init__(self, rng: random.Random, rate: float, cover_all: bool) -> None:
        self._rng = rng
        self.rate = rate
        self.cover_all = cover_all
        self.eligible: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.forced = 0

    def pick(self, kind: str, options: list[Violation]) -> Violation | None:
        """Count an eligible flow of `kind`; return the violation to inject into it, or None."""
        self.eligible[kind] += 1
        draw = self._rng.random()
        if not options or self.rate <= 0:
            return None
        fresh = [v for v in options if self.injected[v.reason] == 0]
        if self.cover_all and fresh:
            self.forced += 1
            chosen = self._rng.choice(fresh)
        elif draw < self.rate:
            # Spread injections over the codes this flow can carry: the least injected so far first.
            least = min(self.injected[v.reason] for v in options)
            chosen = self._rng.choice([v for v in options if self.injected[v.reason] == least])
        else:
            return None
        self.injected[chosen.reason] += 1
        return chosen
