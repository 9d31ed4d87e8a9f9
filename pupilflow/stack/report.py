"""What `up`, `down` and `status` tell the caller: one row per component and the time it all took."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """Where a component stands after an operation."""

    STARTED = "started"
    RUNNING = "running"
    ALREADY_RUNNING = "already running"
    STOPPED = "stopped"
    NOT_RUNNING = "not running"
    EXTERNAL = "external"
    NOT_INSTALLED = "not installed"


@dataclass(frozen=True)
class ComponentReport:
    """One component: its state, pid, address, health, start-up seconds and a free-text detail."""

    name: str
    state: State
    pid: int | None = None
    address: str = ""
    healthy: bool | None = None
    seconds: float | None = None
    detail: str = ""

    def line(self) -> str:
        """A one-line, column-aligned human rendering."""
        pid = f"pid {self.pid}" if self.pid else "-"
        health = {True: "healthy", False: "UNHEALTHY", None: ""}[self.healthy]
        took = f"in {self.seconds:.1f}s" if self.seconds is not None else ""
        cols = [f"{self.name:<13}", f"{self.state.value:<16}", f"{pid:<10}", f"{self.address:<22}"]
        cols += [f"{health:<9}", f"{took:<8}", self.detail]
        return " ".join(cols).rstrip()


@dataclass(frozen=True)
class StackReport:
    """The rows of one `up`/`down`/`status`, and the wall-clock seconds the whole operation took."""

    action: str
    components: tuple[ComponentReport, ...]
    seconds: float

    def by_name(self, name: str) -> ComponentReport:
        """The row of component `name` (KeyError if it was not part of this operation)."""
        for row in self.components:
            if row.name == name:
                return row
        raise KeyError(name)

    def text(self) -> str:
        """The whole report for a terminal."""
        lines = [row.line() for row in self.components]
        lines.append(f"stack {self.action} took {self.seconds:.1f}s")
        return "\n".join(lines)
