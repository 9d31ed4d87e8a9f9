"""Pid files, recognising our own processes, ports, and the CLI selection of components."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pupilflow.stack import State, down, select, status
from pupilflow.stack.process import (
    PidFile,
    cmdline,
    idle_launcher,
    is_alive,
    is_ours,
    port_is_free,
    port_owner,
    require_free_ports,
    spawn,
    terminate,
)
from schemas.errors import ConfigurationError, PrerequisiteMissing
from schemas.settings import Settings


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_listening_port_is_not_free_and_its_owner_is_found(listener: int) -> None:
    assert not port_is_free(listener)
    assert port_owner(listener) == os.getpid()


def test_a_closed_port_is_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    assert port_is_free(port)


def test_a_taken_port_is_named_in_the_error(listener: int) -> None:
    with pytest.raises(PrerequisiteMissing, match=rf"port {listener} \(Kafka\).*already in use by pid {os.getpid()}"):
        require_free_ports({"Kafka": listener})


def test_our_process_is_recognised_by_its_markers() -> None:
    # This process runs pytest, however it was started (`python -m pytest`, `.venv/bin/pytest`).
    assert is_ours(os.getpid(), ["pytest"])
    assert not is_ours(os.getpid(), ["pytest", "/no/such/home/kafka/server.properties"])
    assert not is_ours(0, [])


def test_pid_file_round_trip_and_stale_file_removed(tmp_path: Path) -> None:
    pid_file = PidFile(tmp_path / "run" / "x.pid", ["pytest"])
    assert pid_file.read() is None
    pid_file.write(os.getpid())
    assert pid_file.read() == os.getpid()
    assert pid_file.live_pid() == os.getpid()
    # Another process's pid (pid 1 is never a Python of ours) makes the pid file stale.
    stale = PidFile(tmp_path / "run" / "y.pid", ["pytest", str(tmp_path)])
    stale.write(1)
    assert stale.live_pid() is None
    assert not stale.path.exists()


def test_garbage_in_a_pid_file_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "z.pid"
    path.write_text("not a pid\n")
    assert PidFile(path, []).read() is None


def test_spawned_process_is_detached_logged_and_terminated(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    log = tmp_path / "logs" / "sleeper.log"
    pid = spawn(
        [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(60)", marker], log_file=log
    )
    try:
        assert is_alive(pid)
        assert marker in cmdline(pid)
        assert os.getsid(pid) == pid  # its own session: a Ctrl-C in our terminal does not reach it
        assert terminate(pid, [marker], timeout=10) == "stopped"
        assert not is_alive(pid)
        assert "pupilflow stack:" in log.read_text()
    finally:
        if is_alive(pid):
            os.kill(pid, 9)


def test_a_spawned_child_is_reaped_when_it_is_seen_gone(tmp_path: Path) -> None:
    # Polled without a pause, as `wait_gone` does between its sleeps: the child exits at some point between two
    # looks, and once `is_alive` says it is gone it must not be left a zombie (nothing else would reap it).
    for n in range(10):
        pid = spawn([sys.executable, "-c", "pass", str(tmp_path)], log_file=tmp_path / f"short-{n}.log")
        deadline = time.monotonic() + 30
        while is_alive(pid):
            assert time.monotonic() < deadline, "the child did not exit"
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} left a zombie"


def test_a_child_started_some_other_way_is_reaped_when_it_is_seen_gone() -> None:
    # No Popen holds it: only /proc and waitpid say how it is, and the same race applies between the two.
    for _ in range(10):
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], dict(os.environ))
        deadline = time.monotonic() + 30
        while is_alive(pid):
            assert time.monotonic() < deadline, "the child did not exit"
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} left a zombie"


def wait_for_output(log: Path, text: str) -> None:
    """Wait up to 5 s for a spawned program to write `text` to its log (the caller asserts it is there)."""
    for _ in range(100):
        if text in log.read_text():
            return
        time.sleep(0.05)


def test_a_nice_process_runs_below_the_rest_and_so_does_its_sessions_autogroup(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    code = "import os, time; print('nice', os.nice(0), flush=True); time.sleep(60)"
    log = tmp_path / "nice.log"
    pid = spawn([sys.executable, "-c", code, marker], log_file=log, nice=7)
    try:
        wait_for_output(log, "nice 7")
        assert "nice 7" in log.read_text()  # the process itself, so every thread it starts too
        assert cmdline(pid)[0] == sys.executable  # `nice` exec'd it: the pid is the program's own
        assert is_ours(pid, [marker])
        autogroup = Path(f"/proc/{pid}/autogroup")
        if autogroup.exists():  # Linux with autogroups: the group competes with the rest at nice 7 too
            assert autogroup.read_text().split()[-1] == "7"
            assert os.getsid(pid) == pid  # a session, hence an autogroup, of its own: ours is untouched
            # A session that never left the boot-time group reads empty: it is the root group, at nice 0.
            ours = Path(f"/proc/{os.getpid()}/autogroup").read_text().split()
            assert not ours or ours[-1] != "7"
    finally:
        assert terminate(pid, [marker], timeout=10) == "stopped"


@pytest.mark.skipif(idle_launcher() is None, reason="Linux's SCHED_IDLE through chrt(1)")
def test_an_idle_process_and_the_threads_it_starts_run_in_the_idle_class(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    code = (
        "import os, threading, time\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0))); t.start(); t.join()\n"
        "print('class', os.sched_getscheduler(0), seen[0], 'nice', os.nice(0), flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "idle.log"
    pid = spawn([sys.executable, "-c", code, marker], log_file=log, nice=3, idle=True)
    expected = f"class {os.SCHED_IDLE} {os.SCHED_IDLE} nice 3"
    try:
        wait_for_output(log, expected)
        assert expected in log.read_text()  # the process, a thread it started, and the nice value besides
        assert cmdline(pid)[0] == sys.executable  # `chrt` and `nice` exec'd it: the pid is the program's own
        assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller keeps its own class
    finally:
        assert terminate(pid, [marker], timeout=10) == "stopped"


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux's scheduling classes")
def test_a_process_not_asked_to_be_idle_keeps_the_normal_class(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    code = "import os, time; print('class', os.sched_getscheduler(0), 'nice', os.nice(0), flush=True); time.sleep(60)"
    log = tmp_path / "normal.log"
    pid = spawn([sys.executable, "-c", code, marker], log_file=log, nice=3)
    expected = f"class {os.SCHED_OTHER} nice 3"  # the log's first line holds the code, not its output
    try:
        wait_for_output(log, expected)
        assert expected in log.read_text()
    finally:
        assert terminate(pid, [marker], timeout=10) == "stopped"


def test_terminate_leaves_a_process_that_is_not_ours_alone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert terminate(proc.pid, ["/some/other/home"], timeout=1) == "gone"
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_terminate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    # The token is split so the log's header line (which repeats the argv) cannot match it early.
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('IGN' + 'ORING', flush=True); time.sleep(60)"
    )
    log = tmp_path / "stubborn.log"
    pid = spawn([sys.executable, "-c", code, str(tmp_path)], log_file=log)
    try:
        wait_for_output(log, "IGNORING")
        assert terminate(pid, [str(tmp_path)], timeout=0.5) == "killed"
    finally:
        if is_alive(pid):
            os.kill(pid, 9)


def test_components_are_selected_in_stack_order() -> None:
    assert select(None) == ("kafka", "clickhouse", "prometheus")
    assert select(["prometheus", "kafka"]) == ("kafka", "prometheus")
    with pytest.raises(ConfigurationError, match="zookeeper"):
        select(["zookeeper"])


def test_down_never_signals_a_pid_that_is_not_ours(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:1", clickhouse_dsn="http://127.0.0.1:2/x")
    run = tmp_path / "run"
    run.mkdir()
    # A pid file left behind whose pid now belongs to someone else: this very test process.
    for name in ("kafka", "clickhouse"):
        (run / f"{name}.pid").write_text(f"{os.getpid()}\n")
    assert {row.state for row in status(settings, ["kafka", "clickhouse"]).components} == {State.NOT_RUNNING}
    report = down(settings, ["kafka", "clickhouse"])
    assert {row.state for row in report.components} == {State.NOT_RUNNING}
    assert not list(run.glob("*.pid"))  # stale pid files are cleaned up


def test_external_services_are_reported_and_left_alone(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, kafka_bootstrap="kafka.trust.example:9092", clickhouse_dsn="https://ch.trust.example:8443/db"
    )
    rows = status(settings, ["kafka", "clickhouse"]).components
    assert [row.state for row in rows] == [State.EXTERNAL, State.EXTERNAL]
    assert "using external Kafka at kafka.trust.example:9092" in rows[0].detail
    assert "using external ClickHouse at https://ch.trust.example:8443" in rows[1].detail
    assert [row.state for row in down(settings, ["kafka", "clickhouse"]).components] == [State.EXTERNAL] * 2
