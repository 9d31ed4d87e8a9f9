"""The local ClickHouse server process: chDB's LocalServer listening on loopback HTTP and native TCP.

Run as `python -m pupilflow.stack.clickhouse_server --config-dir D --data-dir D/data --http-port P --tag T`.
A long, tagged query keeps the engine (and so its listeners) alive; killing that query stops the server.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from .clickhouse_keepalive import KEEPALIVE, request_stop


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until the keep-alive query is killed (or SIGTERM, which kills it the same way)."""
    parser = argparse.ArgumentParser(prog="python -m pupilflow.stack.clickhouse_server")
    parser.add_argument("--config-dir", required=True, help="holds config.xml and users.xml")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--tag", required=True, help="unique comment that marks the keep-alive query")
    args = parser.parse_args(argv)

    # Imported before the chdir: importing chdb opens an embedded connection that would otherwise read
    # (and fight over) the same ./config.xml.
    import chdb  # noqa: F401
    from chdb import _chdb

    data_dir = os.path.abspath(args.data_dir)
    os.chdir(args.config_dir)  # LocalServer reads ./config.xml from the working directory.
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            _chdb.query(  # type: ignore[attr-defined]
                KEEPALIVE.format(tag=args.tag), "TabSeparated", path=data_dir
            )
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = threading.Thread(target=serve, name="clickhouse-keepalive", daemon=True)
    server.start()
    print(f"clickhouse_server: pid {os.getpid()} serving http://127.0.0.1:{args.http_port}", flush=True)
    while server.is_alive() and not stopping.is_set():
        server.join(0.5)
    if stopping.is_set() and server.is_alive():
        request_stop(args.http_port, args.tag)
        server.join(15.0)
    if server.is_alive():
        print("clickhouse_server: keep-alive query did not end; exiting hard", flush=True)
        os._exit(1)
    if failure and not stopping.is_set() and "QUERY_WAS_CANCELLED" not in str(failure[0]):
        # Killed by our own KILL QUERY shows up as a cancelled query; anything else is a real failure.
        print(f"clickhouse_server: {failure[0]!r}", file=sys.stderr, flush=True)
        return 1
    print(f"clickhouse_server: stopped at {time.strftime('%H:%M:%S')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
