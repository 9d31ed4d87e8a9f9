"""`pupilflow worker`: run the stream worker that decides on every flow, exactly once."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from typing import Any

from aiokafka.errors import KafkaError, ProducerFenced
from prometheus_client import start_http_server
from pydantic import ValidationError

from pupilflow.topics import ensure_topics
from schemas.errors import ConfigurationError, TransactionStalled
from schemas.policy import Policy, load_policy
from schemas.settings import Settings
from streams.gcpolicy import FreezeSurvivors
from streams.metrics import GcPauses, WorkerMetrics
from streams.worker import StreamWorker

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the `worker` sub-command."""
    parser = subparsers.add_parser("worker", help="run the stream worker (serves /metrics)")
    parser.add_argument("--loglevel", default="info")
    parser.add_argument(
        "--members",
        type=int,
        help="run as one of this many workers sharing the partitions, each judging where its subjects' facts are"
        " kept (default: PUPILFLOW_WORKER_MEMBERS, 1: one worker owns every partition)",
    )
    parser.add_argument("--member", type=int, help="this worker's number among --members, from 0")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Restore state, serve /metrics, and judge events until SIGTERM/SIGINT; 1 when it stopped on an error."""
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = _as_member(settings, args.members, args.member)
    settings.home.mkdir(parents=True, exist_ok=True)
    # A missing source topic would leave the worker idle; create the topics (idempotent) first.
    ensure_topics(settings)
    policy = load_policy(settings.policy_dir)
    metrics = WorkerMetrics()
    # The collector is process-wide: only the composition root hooks it.
    with GcPauses(metrics), FreezeSurvivors() as freezer:
        return asyncio.run(_serve(settings, policy, metrics, freezer))


def _as_member(settings: Settings, members: int | None, member: int | None) -> Settings:
    """The settings with the command line's member numbers, validated as the environment's would be."""
    if members is None and member is None:
        return settings
    chosen = {
        "worker_members": settings.worker_members if members is None else members,
        "worker_member": settings.worker_member if member is None else member,
    }
    try:
        return Settings.model_validate({**settings.model_dump(), **chosen})
    except ValidationError as exc:
        reasons = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors(include_url=False))
        raise ConfigurationError(f"--members/--member: {reasons}") from exc


RESTARTS = 5
"""Consecutive in-process restarts after a stalled or failed transaction before the worker gives up (exit 1)."""


async def _serve(settings: Settings, policy: Policy, metrics: WorkerMetrics, freezer: FreezeSurvivors) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ticking = asyncio.create_task(_tick(freezer, stop))
    try:
        return await _serve_until_stopped(settings, policy, metrics, stop)
    finally:
        ticking.cancel()


async def _tick(freezer: FreezeSurvivors, stop: asyncio.Event) -> None:
    while not stop.is_set():
        freezer.tick()
        await asyncio.sleep(0.5)


async def _serve_until_stopped(settings: Settings, policy: Policy, metrics: WorkerMetrics, stop: asyncio.Event) -> int:
    served = False
    failures = 0
    while not stop.is_set():
        # A fresh worker each time: state is rebuilt from the changelog, so nothing of an abandoned
        # transaction survives in memory (its events are judged again, exactly as after a kill -9).
        worker = StreamWorker(settings, policy, metrics)
        try:
            await _start(worker, policy)
            if not served:
                # Served only once the state is back, so "ready" means ready to judge.
                start_http_server(settings.worker_web_port, addr="127.0.0.1", registry=metrics.registry)
                served = True
            await worker.run(stop)
        except ProducerFenced:
            log.critical("another worker with the same transactional id took over; stopping the worker")
            return 1
        except (TransactionStalled, KafkaError) as exc:
            # "In a row" means without a commit in between: a worker that starts but never commits gives up.
            failures = 1 if worker.committed else failures + 1
            if failures > RESTARTS:
                log.critical("the worker failed %d times in a row; stopping the worker", failures, exc_info=True)
                return 1
            pause = min(30.0, 2.0**failures)
            log.error("%s; restarting from the last commit in %.0fs (%d of %d)", exc, pause, failures, RESTARTS)
            await worker.close()
            gc.unfreeze()  # the abandoned worker's objects become collectable again
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            continue
        except ConfigurationError:
            raise  # one clear line from the command line, exit 2
        except Exception:
            # A violation is a value; an exception here is a bug or an outage. Stop loudly: nothing of the open
            # transaction is committed, so a fixed worker judges the same events again after restoring.
            log.critical("the worker failed; stopping the worker", exc_info=True)
            return 1
        finally:
            await worker.close()
    log.info("worker stopped")
    return 0


async def _start(worker: StreamWorker, policy: Policy) -> None:
    started = time.monotonic()
    shown = False

    def progress(records: int) -> None:
        nonlocal shown
        shown = True
        print(f"\rrestoring state: {records:,} changelog records", end="", file=sys.stderr, flush=True)

    await worker.start()
    restored = await worker.restore(progress)
    if shown:
        print(file=sys.stderr)  # end the progress line before the log resumes
    # What restore built lives as long as the worker: out of the collector's way, a full collection (which
    # every decision in flight waits for) walks only what changed since. Garbage first, so none is pinned.
    gc.collect()
    gc.freeze()
    log.info(
        "state restored: %d keys, %d open flows in %.1fs (policy %s)",
        restored, worker.state.open_flows(), time.monotonic() - started, policy.digest[:19],
    )  # fmt: skip
