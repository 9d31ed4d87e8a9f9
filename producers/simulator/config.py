"""What a simulation run is asked to do (`SimConfig`) and what it produced (`SimRun`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ACADEMIC_YEAR_START = date(2025, 9, 1)
"""Default first day: the 2025-26 academic year."""
ACADEMIC_YEAR_END = date(2026, 7, 22)
"""Default last day: the end of the 2025-26 summer term."""


@dataclass(frozen=True)
class SimConfig:
    """A seeded school year for Hawthorn Primary Academy and Rose Valley Academy (RULES.md scope)."""

    out: Path
    seed: int = 1
    start: date = ACADEMIC_YEAR_START
    days: int | None = None
    pupils_hawthorn: int = 120
    pupils_rose_valley: int = 180
    violation_rate: float = 0.05
    cover_all_codes: bool = True
    outbox: Path | None = None
    policy_dir: Path = Path("policy")
    http_connector: str = "simulator"
    rate: float | None = None
    keep_intended: bool = False
    malformed_rate: float = 0.0
    """Share of CSV exports that carry one malformed record (a garbled time), listed in `malformed.jsonl`."""

    @property
    def day_count(self) -> int:
        """Days simulated: `days`, or up to the end of the summer term of the start's academic year."""
        if self.days is not None:
            return self.days
        year = self.start.year if self.start.month >= 8 else self.start.year - 1
        return (date(year + 1, 7, 22) - self.start).days + 1

    @property
    def outbox_dir(self) -> Path:
        """Where each file connector's folder goes (`<outbox>/<connector id>/`)."""
        return self.outbox if self.outbox is not None else self.out / "outbox"


@dataclass
class SimRun:
    """What a run wrote: paths, counts, and (when `keep_intended`) every event in arrival order."""

    config: SimConfig
    http_events: Path
    ground_truth: Path
    summary: Path
    arrivals: Path
    malformed: Path
    files: list[Path] = field(default_factory=list)
    events_by_connector: Counter[str] = field(default_factory=Counter)
    events_by_kind: Counter[str] = field(default_factory=Counter)
    eligible: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    drops: list[object] = field(default_factory=list)
