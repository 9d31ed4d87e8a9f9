"""The shape every component of the local stack shares: launch detached, wait until healthy, stop by pid."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from schemas.errors import ServiceUnavailable
from schemas.settings import Settings

from .layout import Layout
from .process import LOOPBACK, PidFile, is_alive, log_tail, spawn, terminate, wait_until

Progress = Callable[[str], None]


class Service(ABC):
    """One process of the local stack that `up` starts, `status` checks and `down` stops by its pid."""

    name: str
    stop_timeout: float = 15.0
    nice: int = 0
    """CPU priority below the rest of the stack (a nice value); 0 for anything decisions wait for."""
    idle: bool = False
    """CPU only when nothing else on the box wants it (Linux's SCHED_IDLE); never for what decisions wait for."""

    def __init__(self, settings: Settings, layout: Layout) -> None:
        """A service configured by `settings`, keeping its files in `layout`."""
        self.settings = settings
        self.layout = layout

    @property
    def directory(self) -> Path:
        """`<home>/<name>`: this service's config and data."""
        return self.layout.component_dir(self.name)

    @property
    def log_file(self) -> Path:
        """Where the process's stdout and stderr go."""
        return self.layout.log_path(self.name)

    @property
    def pid_file(self) -> PidFile:
        """The pid file, trusted only for a process whose cmdline carries `markers()`."""
        return PidFile(self.layout.pid_path(self.name), self.markers())

    @property
    def address(self) -> str:
        """host:port of the main listener."""
        return f"{LOOPBACK}:{next(iter(self.ports().values()))}"

    @abstractmethod
    def markers(self) -> tuple[str, ...]:
        """Strings (paths in this home) that only our process of this service has in its command line."""

    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Every port it listens on, by what it is for; the first is the main one."""

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line that starts it."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when it answers as it should (a quick check)."""

    def installed(self) -> bool:
        """False when its program is not on this machine and `up` should carry on without it."""
        return True

    def install_hint(self) -> str:
        """How to install it, for when `installed()` is false."""
        return ""

    def check_prerequisites(self) -> None:
        """Raise PrerequisiteMissing for anything it needs besides free ports (checked before any start)."""
        return None

    def prepare(self, progress: Progress) -> None:
        """Write configs and do one-off set-up (downloads, formatting) before launch."""
        return None

    def cwd(self) -> Path | None:
        """Working directory of the process (None: inherit)."""
        return None

    def after_ready(self) -> None:
        """Set-up that needs it running (e.g. create the database); must be idempotent."""
        return None

    def describe(self) -> str:
        """Where its data and log are, for the `up` report."""
        return f"dir {self.directory}  log {self.log_file}"

    def launch(self) -> int:
        """Start it detached and record its pid."""
        pid = spawn(self.argv(), log_file=self.log_file, cwd=self.cwd(), nice=self.nice, idle=self.idle)
        self.pid_file.write(pid)
        return pid

    def wait_ready(self, pid: int, timeout: float) -> None:
        """Wait until healthy, then run `after_ready`; a failed start is stopped and reported with its log."""
        if wait_until(self.healthy, timeout=timeout, alive=lambda: is_alive(pid)):
            self.after_ready()
            return
        running = is_alive(pid)
        if running:
            # Half-started and of no use; leaving it would also block the ports for the next try.
            self.stop(pid)
        self.pid_file.remove()
        why = f"did not become ready within {timeout:.0f}s" if running else "exited during start-up"
        raise ServiceUnavailable(f"{self.name} {why}; see {self.log_file}. Last lines:\n{log_tail(self.log_file)}")

    def stop(self, pid: int) -> str:
        """Stop our process `pid` cleanly (SIGTERM, then SIGKILL after `stop_timeout`); how it went."""
        return terminate(pid, self.markers(), timeout=self.stop_timeout)
