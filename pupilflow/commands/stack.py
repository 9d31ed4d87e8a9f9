"""`pupilflow stack up | down | status`: the local Kafka, ClickHouse, Prometheus and Alertmanager."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pupilflow import stack
from schemas.settings import Settings


def _components(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _selection(args: argparse.Namespace) -> list[str] | None:
    only: list[str] | None = args.only
    if getattr(args, "no_prometheus", False):
        only = [name for name in (only or stack.COMPONENTS) if name != "prometheus"]
    return only


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    report = stack.up(settings, _selection(args), timeout=args.timeout, progress=_progress)
    print(report.text())
    print(f"home {stack.Layout.of(settings).home}")
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    report = stack.down(settings, _selection(args))
    print(report.text())
    return 1 if any(row.state is stack.State.RUNNING for row in report.components) else 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    report = stack.status(settings, _selection(args))
    print(report.text())
    # Exit 1 when something local is not up and healthy, so scripts can wait on `stack status`.
    local = [row for row in report.components if row.state not in (stack.State.EXTERNAL, stack.State.NOT_INSTALLED)]
    return 0 if all(row.state is stack.State.RUNNING and row.healthy for row in local) else 1


def register(subparsers: Any) -> None:
    """Add `stack` and its `up`, `down`, `status` sub-commands; each sets `func(args, settings) -> int`."""
    parser = subparsers.add_parser("stack", help="run the local Kafka/ClickHouse/Prometheus stack", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    only_help = f"comma-separated subset of {','.join(stack.COMPONENTS)} (prometheus includes alertmanager)"

    up = actions.add_parser("up", help="start what is not running (idempotent)")
    up.add_argument("--only", type=_components, metavar="LIST", help=only_help)
    up.add_argument("--no-prometheus", action="store_true", help="skip Prometheus and Alertmanager")
    up.add_argument("--timeout", type=float, default=stack.DEFAULT_TIMEOUT, help="seconds to wait per component")
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop what `up` started, by pid")
    down.add_argument("--only", type=_components, metavar="LIST", help=only_help)
    down.add_argument("--no-prometheus", action="store_true", help="leave Prometheus and Alertmanager running")
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="running/stopped, pid, address, health of each component")
    status.add_argument("--only", type=_components, metavar="LIST", help=only_help)
    status.set_defaults(func=_status)
