"""`pupilflow verify`: check the audit trail's hash chain and its checkpointed heads; exit 1 on tampering."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError

from schemas.errors import ConfigurationError, ServiceUnavailable
from schemas.settings import Settings
from sinks.chain import Head
from sinks.clickhouse import connect
from sinks.heads import CHAIN_HEADS_FILE, read_heads_file, read_heads_topic
from sinks.verify import stream_rows, verify


def register(subparsers: Any) -> None:
    """Add the `verify` sub-command."""
    parser = subparsers.add_parser(
        "verify",
        help="check the audit trail's hash chain (exit 0 clean, 1 tampered, 2 cannot check)",
        description=__doc__,
    )
    parser.add_argument(
        "--heads",
        type=Path,
        metavar="FILE",
        help="chain heads to compare with (default: the chain-heads topic, else <home>/chain-heads.json)",
    )
    parser.add_argument("--max-problems", type=int, default=1000, help="problems to print (all are counted)")
    parser.set_defaults(func=run)


def _heads(args: argparse.Namespace, settings: Settings) -> tuple[dict[int, Head], str]:
    """The checkpointed heads and where they came from."""
    if args.heads is not None:
        return _heads_file(args.heads), str(args.heads)
    topic = settings.topics.chain_heads
    try:
        heads = read_heads_topic(settings.kafka_bootstrap, topic)
        if heads:
            return heads, f"topic {topic}"
        why = f"topic {topic} has no heads"
    except ServiceUnavailable as exc:
        why = str(exc)
    path = settings.home / CHAIN_HEADS_FILE
    if path.exists():
        print(f"verify: {why}; using {path}", file=sys.stderr)
        return _heads_file(path), str(path)
    return {}, why


def _heads_file(path: Path) -> dict[int, Head]:
    try:
        return read_heads_file(path)
    except OSError as exc:
        raise ConfigurationError(f"--heads: cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"--heads: {exc}") from exc


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Walk every partition's chain, print each problem with its place, then a summary."""
    client = connect(settings.clickhouse_dsn, create_database=False)
    try:
        columns = {row[0] for row in client.query("DESCRIBE TABLE decisions").result_rows}
    except ClickHouseError as exc:
        raise ServiceUnavailable(f"cannot read the decisions table: {exc}") from exc
    if "row_hash" not in columns:
        raise ConfigurationError("the decisions table has no hash chain yet; run `pupilflow migrate`")
    heads, source = _heads(args, settings)
    if not heads:
        chained = client.query("SELECT count() FROM decisions WHERE row_hash != ''").result_rows[0][0]
        if chained:
            raise ConfigurationError(
                f"no checkpointed chain heads ({source}), so deleted tail rows cannot be detected; "
                "give them with --heads FILE"
            )
    started = time.monotonic()

    def progress(rows: int) -> None:
        rate = rows / max(time.monotonic() - started, 1e-9)
        print(f"verify: {rows:,} rows walked ({rate:,.0f} rows/s)", file=sys.stderr, flush=True)

    try:
        report = verify(stream_rows(client), heads, progress)
    except ClickHouseError as exc:
        raise ServiceUnavailable(f"reading the decisions table failed: {exc}") from exc
    for problem in report.problems[: args.max_problems]:
        print(problem.render())
    hidden = len(report.problems) - args.max_problems
    if hidden > 0:
        print(f"… and {hidden} more problems")
    print(f"{report.summary()} (heads from {source})")
    if report.clean:
        print("audit trail intact")
        return 0
    print(f"TAMPERING: {len(report.problems)} problems found", file=sys.stderr)
    return 1
