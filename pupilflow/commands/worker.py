"""`pupilflow worker`: run the stream processor (faust) that decides on every flow."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import faust

from pupilflow.topics import ensure_topics
from schemas.settings import Settings
from streams.app import build_app
from streams.metrics import WorkerMetrics
from streams.placeholder import placeholder_decision


def register(subparsers: Any) -> None:
    """Add the `worker` sub-command."""
    parser = subparsers.add_parser("worker", help="run the stream worker (serves /metrics)")
    parser.add_argument("--loglevel", default="info")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Build the app and run a faust worker until it is stopped (SIGTERM/SIGINT)."""
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings.home.mkdir(parents=True, exist_ok=True)
    # A missing source topic would leave the agent silently idle; create the topics (idempotent) first.
    ensure_topics(settings)
    app = build_app(settings, placeholder_decision, WorkerMetrics())
    return serve(app, args.loglevel)


def serve(app: faust.App, loglevel: str = "info") -> int:
    """Run a faust worker for `app` until it stops; 1 when it stopped because the app crashed."""
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    code: int | str | None = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code
    # mode exits 0 even after an agent crashed the app; a crash must be loud, for supervisors and operators.
    if app.crashed:
        logging.getLogger(__name__).critical("the worker stopped after a crash: %r", app.crash_reason)
        return 1
    return code if isinstance(code, int) else 1
