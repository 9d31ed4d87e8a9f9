"""The local stack: Kafka, ClickHouse, Prometheus and Alertmanager as detached processes under `settings.home`.

`up` starts what is not running yet (checking every prerequisite and port before starting anything),
`down` stops only the processes `up` started, by pid, and `status` reports each one. Settings that point at
an external Kafka or ClickHouse skip the local one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from schemas.errors import ConfigurationError, PupilflowError, ServiceUnavailable
from schemas.settings import Settings

from .clickhouse import ClickHouse
from .kafka import Kafka
from .layout import Layout
from .process import exclusive, port_is_free, require_free_ports
from .prometheus import Alertmanager, Prometheus
from .report import ComponentReport, StackReport, State
from .service import Progress, Service

__all__ = [
    "COMPONENTS",
    "DEFAULT_TIMEOUT",
    "ComponentReport",
    "Layout",
    "StackReport",
    "State",
    "down",
    "status",
    "up",
]

# Components as the CLI names them; `prometheus` brings its Alertmanager along.
COMPONENTS: tuple[str, ...] = ("kafka", "clickhouse", "prometheus")
DEFAULT_TIMEOUT = 120.0

_SERVICES: dict[str, tuple[type[Service], ...]] = {
    "kafka": (Kafka,),
    "clickhouse": (ClickHouse,),
    "prometheus": (Prometheus, Alertmanager),
}


def select(only: Iterable[str] | None) -> tuple[str, ...]:
    """The components to act on, in stack order; ConfigurationError names an unknown one."""
    if only is None:
        return COMPONENTS
    wanted = {name.strip() for name in only if name.strip()}
    unknown = wanted - set(COMPONENTS)
    if unknown:
        raise ConfigurationError(f"unknown component(s) {sorted(unknown)}; choose from {', '.join(COMPONENTS)}")
    return tuple(name for name in COMPONENTS if name in wanted)


def _external(component: str, settings: Settings) -> ComponentReport | None:
    if component == "kafka" and not settings.kafka_is_local_default:
        return ComponentReport(
            "kafka", State.EXTERNAL, address=settings.kafka_bootstrap,
            detail=f"using external Kafka at {settings.kafka_bootstrap}; no local broker",
        )  # fmt: skip
    if component == "clickhouse" and not settings.clickhouse_is_local_default:
        url = urlsplit(settings.clickhouse_dsn)
        if url.scheme == "chdb":
            where = f"embedded chDB at {url.netloc or ''}{url.path}"
            return ComponentReport("clickhouse", State.EXTERNAL, detail=f"using {where}; no server to run")
        address = f"{url.hostname}:{url.port or ''}".rstrip(":")
        return ComponentReport(
            "clickhouse", State.EXTERNAL, address=address,
            detail=f"using external ClickHouse at {url.scheme}://{address}; no local server",
        )  # fmt: skip
    return None


def _plan(
    settings: Settings, only: Iterable[str] | None, *, installed_only: bool = True
) -> list[ComponentReport | Service]:
    """Per row in report order: an external/not-installed report, or a local service to act on."""
    layout = Layout.of(settings)
    plan: list[ComponentReport | Service] = []
    for component in select(only):
        external = _external(component, settings)
        if external is not None:
            plan.append(external)
            continue
        for cls in _SERVICES[component]:
            service = cls(settings, layout)
            if service.installed() or not installed_only:
                plan.append(service)
            else:
                plan.append(ComponentReport(service.name, State.NOT_INSTALLED, detail=service.install_hint()))
    return plan


def up(
    settings: Settings,
    only: Iterable[str] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> StackReport:
    """Start every selected component that is not already running and healthy; report what and where."""
    began = time.monotonic()
    with exclusive(Layout.of(settings).pid_path("stack").with_suffix(".lock")):
        return _up(settings, only, timeout, progress, began)


def _up(
    settings: Settings, only: Iterable[str] | None, timeout: float, progress: Progress | None, began: float
) -> StackReport:
    say: Progress = progress or (lambda _message: None)
    rows: dict[str, ComponentReport] = {}
    order: list[str] = []
    to_start: list[Service] = []
    running: list[tuple[Service, int]] = []
    for item in _plan(settings, only):
        if isinstance(item, ComponentReport):
            rows[item.name] = item
            order.append(item.name)
            continue
        order.append(item.name)
        pid = item.pid_file.live_pid()
        if pid is None:
            to_start.append(item)
        else:
            running.append((item, pid))

    # Everything that can be checked is checked before anything starts, so a failure leaves no debris.
    for service in to_start:
        service.check_prerequisites()
    require_free_ports({what: port for service in to_start for what, port in service.ports().items()})

    def confirm(service: Service, pid: int) -> ComponentReport:
        # Ours and alive, perhaps still starting (another `up` a moment ago): wait rather than start twice.
        service.wait_ready(pid, timeout)
        return ComponentReport(
            service.name, State.ALREADY_RUNNING, pid, service.address, True, detail=service.describe()
        )

    # Kafka last: its first-time Maven fetch then overlaps with the others starting.
    to_start.sort(key=lambda service: service.name == "kafka")

    def await_start(service: Service, pid: int, t0: float) -> ComponentReport:
        service.wait_ready(pid, timeout)
        return ComponentReport(
            service.name, State.STARTED, pid, service.address, True, time.monotonic() - t0, service.describe()
        )

    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, len(to_start) + len(running))) as pool:
        futures = [pool.submit(confirm, s, pid) for s, pid in running]
        for service in to_start:
            # Each wait starts right after its launch, so a component's time is its own, not the queue's.
            t0 = time.monotonic()
            try:
                service.prepare(say)
            except PupilflowError as exc:
                failures.append(f"{service.name}: {exc}")
                continue
            say(f"{service.name}: starting on {service.address}")
            futures.append(pool.submit(await_start, service, service.launch(), t0))
        for future in futures:
            try:
                row = future.result()
            except PupilflowError as exc:
                failures.append(str(exc))
            else:
                rows[row.name] = row
    if failures:
        others = [name for name, row in rows.items() if row.state in (State.STARTED, State.ALREADY_RUNNING)]
        hint = f"\n(running: {', '.join(others)}; `pupilflow stack down` stops them)" if others else ""
        raise ServiceUnavailable("\n".join(failures) + hint)
    return StackReport("up", tuple(rows[name] for name in order), time.monotonic() - began)


_STOPPED = {
    "stopped": "clean stop",
    "killed": "did not stop in time: killed (SIGKILL)",
    "gone": "had already exited",
    "stuck": "STILL RUNNING after SIGKILL",
}


def down(settings: Settings, only: Iterable[str] | None = None) -> StackReport:
    """Stop the selected components that `up` started (verified by pid and cmdline) and remove pid files."""
    with exclusive(Layout.of(settings).pid_path("stack").with_suffix(".lock")):
        return _down(settings, only)


def _down(settings: Settings, only: Iterable[str] | None) -> StackReport:
    began = time.monotonic()

    def stop(item: ComponentReport | Service) -> ComponentReport:
        if isinstance(item, ComponentReport):
            return item
        t0 = time.monotonic()
        pid = item.pid_file.live_pid()
        if pid is None:
            return ComponentReport(item.name, State.NOT_RUNNING, address=item.address)
        how = item.stop(pid)
        took = time.monotonic() - t0
        if how == "stuck":
            # Pid file kept: it is still ours, and the next `down` (or a person) must deal with it.
            return ComponentReport(item.name, State.RUNNING, pid, item.address, seconds=took, detail=_STOPPED[how])
        item.pid_file.remove()
        return ComponentReport(item.name, State.STOPPED, pid, item.address, seconds=took, detail=_STOPPED[how])

    # A binary uninstalled since `up` still has a process and a pid file to deal with.
    plan = _plan(settings, only, installed_only=False)
    with ThreadPoolExecutor(max_workers=max(1, len(plan))) as pool:
        rows = tuple(pool.map(stop, plan))
    return StackReport("down", rows, time.monotonic() - began)


def status(settings: Settings, only: Iterable[str] | None = None) -> StackReport:
    """Each component: running or not, pid, address, healthy."""
    began = time.monotonic()

    def check(item: ComponentReport | Service) -> ComponentReport:
        if isinstance(item, ComponentReport):
            return item
        pid = item.pid_file.live_pid()
        if pid is None and not item.installed():
            return ComponentReport(item.name, State.NOT_INSTALLED, detail=item.install_hint())
        if pid is None:
            taken = [f"port {port} in use by another process" for port in item.ports().values()
                     if not port_is_free(port)]  # fmt: skip
            return ComponentReport(item.name, State.NOT_RUNNING, address=item.address, detail="; ".join(taken))
        return ComponentReport(
            item.name, State.RUNNING, pid, item.address, item.healthy(), detail=f"log {item.log_file}"
        )

    # A process `up` started is reported even if its binary has left PATH since.
    plan = _plan(settings, only, installed_only=False)
    with ThreadPoolExecutor(max_workers=max(1, len(plan))) as pool:
        rows = tuple(pool.map(check, plan))
    return StackReport("status", rows, time.monotonic() - began)
