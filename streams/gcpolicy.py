"""Keeping the garbage collector's full collections short in a long-running worker."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any


class FreezeSurvivors:
    """After each full collection, freezes what survived it, so the next one walks only objects made since.

    A full collection walks every tracked object. With the worker's state on the heap one took about 150 ms,
    three times a minute at 2,000 flows/s (bench/pipeline.py), and every decision in flight waited for it.
    Whatever is alive just after a full collection is reachable, so freezing it then hides no garbage that
    exists at that moment. What a freeze cannot see is a frozen object that later ends up in an unreachable
    reference cycle; to bound that, every `refresh_s` the freeze is lifted, everything is collected once and
    the survivors are frozen again: one long pause an hour instead of three a minute.
    """

    def __init__(self, refresh_s: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._refresh = refresh_s
        self._clock = clock
        self._refreshed = clock()
        self._due = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            self._due = True  # frozen later, from `tick`: not from inside the collector

    def __enter__(self) -> FreezeSurvivors:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def tick(self) -> None:
        """Freeze after a full collection, or lift, collect and refreeze when due; call it between batches."""
        if self._clock() - self._refreshed >= self._refresh:
            self._refreshed = self._clock()
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        elif self._due:
            gc.freeze()
        self._due = False
