"""`pupilflow sink` lowers its own CPU priority, for the threads it starts after, and never raises it."""

from __future__ import annotations

import os
import threading

from pupilflow.commands.sink import lower_priority


def nice_values(before: int, asked: int) -> tuple[int, int]:
    """A fresh thread at nice `before` calls `lower_priority(asked)`: its nice value, and that of a thread it starts."""
    found: list[int] = []

    def started_later() -> None:
        found.append(os.getpriority(os.PRIO_PROCESS, 0))

    def sink_thread() -> None:
        os.setpriority(os.PRIO_PROCESS, 0, before)
        lower_priority(asked)
        found.append(os.getpriority(os.PRIO_PROCESS, 0))
        child = threading.Thread(target=started_later)
        child.start()
        child.join()

    thread = threading.Thread(target=sink_thread)
    thread.start()
    thread.join()
    assert len(found) == 2, "a thread failed"
    return found[0], found[1]


def test_the_sink_and_the_threads_it_starts_run_at_the_nice_value_asked() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert nice_values(own, 10 if own < 10 else 19) == ((10, 10) if own < 10 else (19, 19))
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the caller's other threads keep theirs


def test_a_priority_already_lower_is_never_raised() -> None:
    assert nice_values(15, 10) == (15, 15)
    assert nice_values(15, 0) == (15, 15)
