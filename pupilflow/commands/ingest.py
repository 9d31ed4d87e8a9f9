"""`pupilflow ingest`: serve the HTTP ingest API, and issue, revoke and list its per-connector tokens."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from producers.emitter import Emitter
from producers.ingest import DEFAULT_MAX_BODY_BYTES, SeenStore, TokenStore, create_app, kafka_probe
from producers.ingest.tokens import CONNECTOR_ID
from pupilflow.topics import ensure_topics
from schemas.settings import Settings

_DAY_S = 24 * 3600.0


def _connector_id(value: str) -> str:
    if not CONNECTOR_ID.match(value):
        raise argparse.ArgumentTypeError(f"not a connector id (letters, digits and ._:@/+-): {value!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the `ingest` sub-command and its `serve` and `token` sub-commands."""
    parser = subparsers.add_parser("ingest", help="the HTTP ingest API and its tokens")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    serve = actions.add_parser("serve", help="serve the HTTP ingest API until SIGTERM / Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: settings.ingest_port")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    serve.add_argument(
        "--dedupe-days", type=float, default=30.0, help="how long delivered event ids are remembered (default: 30)"
    )
    serve.add_argument("--loglevel", default="info")
    serve.set_defaults(func=run_serve)

    token = actions.add_parser("token", help="issue, revoke and list connector tokens")
    token_actions = token.add_subparsers(dest="token_action", required=True, metavar="TOKEN_ACTION")
    issue = token_actions.add_parser("issue", help="issue a token for a connector; prints the secret once")
    issue.add_argument("connector", type=_connector_id)
    issue.set_defaults(func=run_issue)
    revoke = token_actions.add_parser("revoke", help="revoke a connector's tokens (or one, with --id)")
    revoke.add_argument("connector", type=_connector_id)
    revoke.add_argument("--id", dest="token_id", default=None, help="revoke only this token id")
    revoke.set_defaults(func=run_revoke)
    listing = token_actions.add_parser("list", help="list tokens: id, connector, created, revoked (no secrets)")
    listing.set_defaults(func=run_list)


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGTERM / Ctrl-C; uvicorn finishes in-flight requests, then the emitter flushes and closes."""
    import uvicorn  # only `serve` needs the server

    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # kafka-python logs every connection at INFO, and /readyz opens one per probe.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    ensure_topics(settings)
    tokens = TokenStore.in_home(settings.home)
    seen = SeenStore.in_home(settings.home)
    seen.prune(args.dedupe_days * _DAY_S)
    topics = [settings.topics.flows, settings.topics.facts]
    try:
        # Short Kafka timeouts: a caller waiting on an outage gets a 503 in seconds, not after minutes.
        with Emitter(
            settings.kafka_bootstrap,
            settings.topics,
            client_id="pupilflow-ingest",
            delivery_timeout_s=20.0,
            max_block_ms=5_000,
            request_timeout_ms=5_000,
            delivery_timeout_ms=15_000,
        ) as emitter:
            app = create_app(
                emitter,
                tokens,
                seen,
                max_body_bytes=args.max_body_bytes,
                probe=kafka_probe(settings.kafka_bootstrap, topics),
            )
            uvicorn.run(
                app,
                host=args.host,
                port=args.port or settings.ingest_port,
                log_level=args.loglevel.lower(),
                access_log=False,
                timeout_graceful_shutdown=30,
            )
    finally:
        tokens.close()
        seen.close()
    return 0


def run_issue(args: argparse.Namespace, settings: Settings) -> int:
    """Print a new token's secret (the only time it is shown)."""
    tokens = TokenStore.in_home(settings.home)
    try:
        secret = tokens.issue(args.connector)
    finally:
        tokens.close()
    print(secret)
    return 0


def run_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke; exits 1 when there was no active token to revoke."""
    tokens = TokenStore.in_home(settings.home)
    try:
        count = tokens.revoke(args.connector, args.token_id)
    finally:
        tokens.close()
    print(f"{args.connector}: {count} token(s) revoked")
    return 0 if count else 1


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    """One line per token: id, connector, created, revoked."""
    tokens = TokenStore.in_home(settings.home)
    try:
        infos = tokens.list()
    finally:
        tokens.close()
    print(f"{'id':<10} {'connector':<24} {'created':<26} revoked")
    for info in infos:
        revoked = info.revoked_at.isoformat(timespec="seconds") if info.revoked_at else "-"
        print(f"{info.token_id:<10} {info.connector:<24} {info.created_at.isoformat(timespec='seconds'):<26} {revoked}")
    return 0
