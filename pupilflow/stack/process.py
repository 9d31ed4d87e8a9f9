"""Detached processes of the local stack: spawning, pid files, recognising our own pids, stopping, ports."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from schemas.errors import PrerequisiteMissing

LOOPBACK = "127.0.0.1"

# Popen objects of children this process started, kept so they are reaped (no zombies, no ResourceWarning)
# when the same process stops them again, as tests do.
_spawned: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: Sequence[str], *, log_file: Path, cwd: Path | None = None, nice: int = 0, idle: bool = False) -> int:
    """Start `argv` detached in its own session, stdout and stderr appended to `log_file`; return its pid.

    `nice` > 0 lowers its CPU priority: the process's own (through `nice(1)`, so every thread it starts inherits
    it) and its session's scheduler autogroup's. Linux shares the CPU between autogroups before it looks at
    threads' nice values, and each detached session is an autogroup of its own: without the second, a nice
    process still gets as much CPU as everything else put together (measured with ClickHouse merges).

    `idle` runs it in Linux's SCHED_IDLE class (through `chrt(1)`, inherited by every thread it starts): a core
    the rest of the box wants is given to the rest first, and a core running only idle-class threads counts as
    free when another thread wakes. Where `chrt` or the class is missing, `nice` alone applies.
    """
    if nice > 0 and (program := shutil.which("nice")) is not None:
        argv = [program, "-n", str(nice), *argv]
    if idle and (program := idle_launcher()) is not None:
        argv = [program, "--idle", "0", *argv]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} pupilflow stack: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _spawned[proc.pid] = proc
    if nice > 0:
        set_autogroup_nice(proc.pid, nice)
    return proc.pid


def idle_launcher() -> str | None:
    """`chrt(1)`, which `spawn(idle=True)` starts a program through, where Linux's SCHED_IDLE class is there too."""
    return shutil.which("chrt") if hasattr(os, "SCHED_IDLE") else None


def set_autogroup_nice(pid: int, nice: int) -> None:
    """Give the scheduler autogroup of `pid`'s session the nice value `nice`, where Linux has autogroups."""
    # Autogroups disabled or not Linux: the process's own nice value is what counts there.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")


def cmdline(pid: int) -> list[str]:
    """The argv of a live process, or [] when it is gone, a zombie, or not ours to read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_ours(pid: int, markers: Sequence[str]) -> bool:
    """True when `pid` is alive and its command line holds every marker (paths unique to our home)."""
    if pid <= 0:
        return False
    joined = "\0".join(cmdline(pid))
    return bool(joined) and all(marker in joined for marker in markers)


def is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    proc = _spawned.get(pid)
    if proc is not None:
        # A child `spawn` started: waiting for it is the answer, and reaps it once it has exited. Reading /proc after
        # a wait that found it running could see it exit in between, a zombie nothing would reap until this process
        # ended (CI printed "ResourceWarning: subprocess ... is still running" at exit for the stack tests' Kafka).
        if proc.poll() is None:
            return True
        del _spawned[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself contain spaces.
    if stat.rsplit(")", 1)[-1].split()[0] != "Z":
        return True
    # Looked at before reaping, for the same reason as above. A zombie this process started some other way is reaped
    # here; waiting is harmless when it is not our child.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` has exited; True if it did within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def terminate(pid: int, markers: Sequence[str], *, timeout: float, kill_after: float = 5.0) -> str:
    """SIGTERM `pid` while it is still ours, SIGKILL after `timeout`: "gone", "stopped", "killed" or "stuck"."""
    if not is_ours(pid, markers):
        return "gone"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, timeout):
        return "stopped"
    # Checked again: the pid could have been reused by something else while we waited.
    if not is_ours(pid, markers):
        return "stopped"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return "killed" if wait_gone(pid, kill_after) else "stuck"


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (waiting for it), so two `up`/`down` never race on one home."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class PidFile:
    """`<home>/run/<name>.pid`: the pid of a process `up` started, trusted only if its cmdline matches."""

    def __init__(self, path: Path, markers: Sequence[str]) -> None:
        """A pid file at `path` whose process must carry `markers` in its command line."""
        self.path = path
        self.markers = tuple(markers)

    def read(self) -> int | None:
        """The recorded pid, or None when there is no readable pid file."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def write(self, pid: int) -> None:
        """Record `pid` (written to a temporary file and renamed, so readers never see half a pid)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        tmp.replace(self.path)

    def remove(self) -> None:
        """Delete the pid file if present."""
        self.path.unlink(missing_ok=True)

    def live_pid(self) -> int | None:
        """The recorded pid if that process is still ours and running; a stale pid file is removed."""
        pid = self.read()
        if pid is None:
            return None
        if is_ours(pid, self.markers):
            return pid
        self.remove()
        return None


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on host:port (a bind succeeds; TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(port: int) -> int | None:
    """Best effort: the pid of the process listening on TCP `port` (from /proc), or None if unknown."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # st 0A is LISTEN; local_address is HEXIP:HEXPORT.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(proc.name)
        except OSError:
            continue
    return None


def require_free_ports(ports: dict[str, int]) -> None:
    """Raise PrerequisiteMissing naming each port (and its owner, when known) that is already taken."""
    taken = []
    for what, port in ports.items():
        if port_is_free(port):
            continue
        owner = port_owner(port)
        by = ""
        if owner is not None:
            command = " ".join(" ".join(cmdline(owner)).split())  # one line, even for `python -c` scripts
            by = f" by pid {owner} ({command[:120] or '?'})"
        taken.append(f"port {port} ({what}) on {LOOPBACK} is already in use{by}")
    if taken:
        raise PrerequisiteMissing(
            "; ".join(taken) + ". Stop that process or choose other ports (PUPILFLOW_* settings)."
        )


def wait_until(check: Callable[[], bool], *, timeout: float, alive: Callable[[], bool], interval: float = 0.25) -> bool:
    """Poll `check` until it is true (True), `alive` turns false, or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if not alive() or time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(log_file: Path, lines: int = 15) -> str:
    """The last lines of a log file, indented, for error messages ('' if there is none)."""
    try:
        text = log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)
