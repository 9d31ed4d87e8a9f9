"""Subject-access query latency over 100 million disclosure rows in ClickHouse (target: p95 <= 100 ms).

Run: `.venv/bin/python bench/sar.py [--rows 100000000] [--pupils 1000000] [--queries 1000]` with the local
stack up (`pupilflow stack up`); a quick check: `--rows 2000000 --pupils 20000`. It works in a database of its
own (`--database`, default `pupilflow_bench`; never the pipeline's), where it:

1. creates the audit store's `disclosures` table (one row per decision and subject) and generates `--rows` rows
   server-side with `INSERT ... SELECT ... FROM numbers(...)` in chunks: UPN-style pupil ids, about eight years
   of `occurred_at`, recipients, purposes and categories from the grants in `policy/`, mostly allowed with a
   few violations and their reason codes, the evaluator's explanation sentences, some superseding revisions
   and some re-delivered (duplicate) decisions for `FINAL` to collapse. A table that already holds the
   requested rows is reused (`--regenerate` forces a fresh one), so reruns only query. Nothing is OPTIMIZEd:
   queries see the parts that background merges have left, and the part count is printed;
2. asks "every disclosure of pupil X, newest first, with recipient, categories, purpose, verdict and
   explanation" for random pupils through clickhouse-connect, as a parameterised query, after a warm-up, in
   four forms interleaved: with `FINAL` (the reference), `FINAL` with `optimize_read_in_order = 0` (no reverse
   in-order read; the query docs/audit-store.md gives), without `FINAL` (shows re-delivered duplicates) and
   `LIMIT 1 BY decision_id` (deduplicated in the query). Prints p50/p95/p99/max client-side latency, rows per
   answer, the rows ClickHouse read, whether each form returns exactly the `FINAL` answer, and PASS/FAIL against
   the 100 ms p95 target.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from producers.simulator.population import _CHECK_LETTERS, upn  # noqa: E402
from schemas.decisions import REASON_ORDER  # noqa: E402
from schemas.policy import Policy, load_policy  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from sinks.clickhouse import DEFAULT_DATABASE, connect, split_dsn  # noqa: E402
from sinks.migrate import bundled_migrations  # noqa: E402
from streams.evaluate import _EXPLANATIONS as REASON_SENTENCES  # noqa: E402  (the evaluator's own wording)

TARGET_P95_MS = 100.0

_COLUMNS = "occurred_at, recipient, categories, purpose, verdict, reasons, explanation, decision_id, revision"
_SUBJECT = "{subject:String}"
QUERIES = {
    "FINAL": f"SELECT {_COLUMNS} FROM disclosures FINAL WHERE subject_id = {_SUBJECT} ORDER BY occurred_at DESC",
    # Without read-in-order, FINAL merges the pupil's few granules forwards and sorts the ~100 rows itself.
    "FINAL, sort": (
        f"SELECT {_COLUMNS} FROM disclosures FINAL WHERE subject_id = {_SUBJECT} ORDER BY occurred_at DESC "
        "SETTINGS optimize_read_in_order = 0"
    ),
    "no FINAL": f"SELECT {_COLUMNS} FROM disclosures WHERE subject_id = {_SUBJECT} ORDER BY occurred_at DESC",
    "LIMIT 1 BY": (
        f"SELECT {_COLUMNS} FROM disclosures WHERE subject_id = {_SUBJECT} "
        "ORDER BY occurred_at DESC, decision_id, inserted_at DESC LIMIT 1 BY decision_id"
    ),
}
"""The SAR query in the forms compared; `FINAL` is the reference answer."""

DOCUMENTED = "FINAL, sort"
"""The form docs/audit-store.md gives auditors: the one the 100 ms p95 target is for."""

# Relative frequency of a grant's flows: the daily syncs and suppliers dominate a school's disclosures.
_PURPOSE_WEIGHT = {
    "mis_sync": 20,
    "parent_payments": 8,
    "school_meals": 8,
    "edtech": 8,
    "free_milk": 4,
    "census_return": 3,
    "statutory_return": 3,
    "safeguarding": 2,
}
# An example member of each recipient class registered by id prefix (`police:` -> `police:west-yorkshire`).
_PREFIX_EXAMPLE = {
    "police:": "west-yorkshire",
    "school:": "9372105",
    "hospital:": "leeds-general",
    "court:": "leeds-family",
    "tribunal:": "sendist",
    "exam-board:": "aqa",
    "press:": "yorkshire-post",
}
# occurred_at spans eight school years from 2018-09-01 (in ms since the epoch).
_START_MS = 1_535_760_000_000
_DAYS = 8 * 365
VIOLATION_PER_MILLE = 25
DUPLICATE_PER_MILLE = 10
REVISION_PER_MILLE = 20


def disclosures_ddl() -> str:
    """The audit store's `disclosures` CREATE statement, from sinks/migrations/0002_audit_store.sql.

    Loaded from the bundled migration rather than copied, so the benchmark always measures the real schema.
    """
    for migration in bundled_migrations():
        for statement in migration.statements():
            if " ".join(statement.split()[:6]).lower() == "create table if not exists disclosures":
                return statement
    raise SystemExit("no bundled migration creates the disclosures table (sinks/migrations/0002_audit_store.sql)")


def pupil_id(pupil: int) -> str:
    """The UPN of pupil number `pupil`: a thousand pupils per school, schools numbered from LAESTAB 9372000."""
    return upn(str(9_372_000 + pupil // 1000), pupil % 1000)


def pupil_id_sql(p: str) -> str:
    """SQL for `pupil_id` of the pupil number expression `p`: the check letter's weighted digit sum, unrolled."""
    digits = f"((9372000 + intDiv({p}, 1000)) * 100000 + {p} % 1000)"
    weighted = " + ".join(f"intDiv({digits}, {10 ** (11 - i)}) % 10 * {i + 2}" for i in range(12))
    return f"concat(substring('{_CHECK_LETTERS}', 1 + ({weighted}) % 23, 1), toString({digits}))"


@dataclass(frozen=True)
class Template:
    """One kind of flow: recipient, purpose, categories and the explanation's fixed parts."""

    recipient: str
    purpose: str
    categories: list[str]
    where: str
    bulk: bool
    basis: str
    relied: str


def templates(policy: Policy, seed: int) -> list[Template]:
    """Flow templates from every grant in the register, repeated by how common the purpose is."""
    rng = random.Random(seed)
    purposes = {p.key: p for p in policy.purposes}
    out: list[Template] = []
    for recipient in policy.recipients:
        ident = recipient.key
        if recipient.id_prefixes:
            prefix = recipient.id_prefixes[0]
            ident = prefix + _PREFIX_EXAMPLE.get(prefix, "local")
        channel = "encrypted_api" if recipient.processor else "encrypted_email"
        relied = f" It relied on agr-{recipient.key}." if recipient.agreement != "none" else ""
        for grant in recipient.grants:
            label = purposes[grant.purpose].label
            for _ in range(3):
                count = rng.randint(1, min(4, len(grant.categories)))
                chosen = sorted(rng.sample(range(len(grant.categories)), count))
                template = Template(
                    recipient=ident,
                    purpose=grant.purpose,
                    categories=[grant.categories[i] for i in chosen],
                    where=f" went to {recipient.name} for {label}, by {channel}.",
                    bulk=recipient.processor,
                    basis=grant.bases[0],
                    relied=relied,
                )
                out.extend([template] * _PURPOSE_WEIGHT.get(grant.purpose, 1))
    return out


def create_helpers(client: Any, policy: Policy, seed: int) -> None:
    """(Re)create the small `flow_templates` and `violation_reasons` tables the generator draws from."""
    client.command("DROP TABLE IF EXISTS flow_templates")
    client.command(
        "CREATE TABLE flow_templates (id UInt32, recipient String, purpose String, categories Array(String), "
        "what String, where_text String, bulk UInt8, basis String, relied String) ENGINE = MergeTree ORDER BY id"
    )
    rows = [
        [i, t.recipient, t.purpose, t.categories, ", ".join(t.categories), t.where, int(t.bulk), t.basis, t.relied]
        for i, t in enumerate(templates(policy, seed))
    ]
    client.insert(
        "flow_templates",
        rows,
        column_names=["id", "recipient", "purpose", "categories", "what", "where_text", "bulk", "basis", "relied"],
    )
    client.command("DROP TABLE IF EXISTS violation_reasons")
    client.command("CREATE TABLE violation_reasons (id UInt32, code String, sentence String) ENGINE = Memory")
    codes = sorted(REASON_SENTENCES, key=lambda code: REASON_ORDER[code])
    client.insert(
        "violation_reasons",
        [[i, str(code), REASON_SENTENCES[code]] for i, code in enumerate(codes)],
        column_names=["id", "code", "sentence"],
    )


def generate_sql(seed: int, pupils: int, digest: str) -> str:
    """`INSERT ... SELECT` of the rows numbered {start} .. {start}+{count}-1 (bound as query parameters).

    Row n is usually a new flow f = n (revision 0); sometimes revision 1 of flow n-1 (superseding its first
    decision), or a re-delivery of an earlier row's decision (the same sort key: `FINAL` collapses them).
    Everything else derives from hashes of (f, revision), so a re-delivered row equals its original.
    """
    roll = f"cityHash64({{x}}, {seed}) % 1000"
    n_roll = roll.format(x="n")
    # UInt64 throughout: `n - 1` is Int64, and a hash of another type (or of a Variant) is another number.
    src = f"toUInt64(n - 1 - intDiv(cityHash64(n, {seed}), 1000) % 1000000)"
    return f"""
INSERT INTO disclosures (subject_id, occurred_at, decision_id, subject_kind, flow_event_id, recipient, purpose,
    categories, verdict, reasons, explanation, revision, supersedes, decided_at, policy_digest)
WITH
    (SELECT groupArray(recipient) FROM (SELECT recipient FROM flow_templates ORDER BY id)) AS t_recipient,
    (SELECT groupArray(purpose) FROM (SELECT purpose FROM flow_templates ORDER BY id)) AS t_purpose,
    (SELECT groupArray(categories) FROM (SELECT categories FROM flow_templates ORDER BY id)) AS t_categories,
    (SELECT groupArray(what) FROM (SELECT what FROM flow_templates ORDER BY id)) AS t_what,
    (SELECT groupArray(where_text) FROM (SELECT where_text FROM flow_templates ORDER BY id)) AS t_where,
    (SELECT groupArray(bulk) FROM (SELECT bulk FROM flow_templates ORDER BY id)) AS t_bulk,
    (SELECT groupArray(basis) FROM (SELECT basis FROM flow_templates ORDER BY id)) AS t_basis,
    (SELECT groupArray(relied) FROM (SELECT relied FROM flow_templates ORDER BY id)) AS t_relied,
    (SELECT groupArray(code) FROM (SELECT code FROM violation_reasons ORDER BY id)) AS r_code,
    (SELECT groupArray(sentence) FROM (SELECT sentence FROM violation_reasons ORDER BY id)) AS r_sentence
SELECT
    {pupil_id_sql("pupil")} AS subject_id,
    occurred,
    decision_id,
    'pupil',
    concat('flow-', leftPad(toString(f), 10, '0')),
    t_recipient[t],
    t_purpose[t],
    t_categories[t],
    if(violation, 'violation', 'allowed'),
    if(violation, if(i1 = i2, [r_code[i1]], [r_code[i1], r_code[i2]]), []),
    concat('On ', formatDateTime(occurred, '%Y-%m-%d'), ' ', t_what[t], ' about ',
        if(t_bulk[t] = 1, concat(toString(people), ' people'), '1 person'), t_where[t],
        if(violation,
            concat(' Violation: ', r_sentence[i1], if(i1 = i2, '', concat('; ', r_sentence[i2])), '.'),
            concat(' Allowed under ', t_basis[t], '.')),
        t_relied[t]),
    rev,
    if(rev = 1, {decision_uuid("f", "0", seed)}, NULL),
    occurred + toIntervalMillisecond(if(rev = 1, 86400000 + hr % 172800000, 50 + hr % 2000)),
    {{digest:String}}
FROM
(
    SELECT
        *,
        cityHash64(f, {seed}, 7) AS hf,
        cityHash64(f, rev, {seed}, 9) AS hr,
        hf % {pupils} AS pupil,
        1 + cityHash64(f, {seed}, 8) % length(t_recipient) AS t,
        toDateTime64({_START_MS} / 1000, 3, 'UTC')
            + toIntervalMillisecond((intDiv(hf, {pupils}) % {_DAYS}) * 86400000
                + 25200000 + bitShiftRight(hf, 40) % 39600000) AS occurred,
        ((hr % 1000) < {VIOLATION_PER_MILLE}) != (rev = 1) AS violation,
        1 + intDiv(hr, 100000) % length(r_code) AS reason_a,
        if(intDiv(hr, 1000) % 100 < 15, 1 + intDiv(hr, 10000000) % length(r_code), reason_a) AS reason_b,
        least(reason_a, reason_b) AS i1,
        greatest(reason_a, reason_b) AS i2,
        2 + intDiv(hr, 1000000000) % 400 AS people,
        {decision_uuid("f", "rev", seed)} AS decision_id
    FROM
    (
        SELECT
            number AS n,
            {n_roll} < {DUPLICATE_PER_MILLE} AND n > 1000000 AND {roll.format(x=src)} >= 30 AS is_duplicate,
            {n_roll} >= {DUPLICATE_PER_MILLE} AND {n_roll} < {DUPLICATE_PER_MILLE + REVISION_PER_MILLE}
                AND n >= 1 AND {roll.format(x="toUInt64(n - 1)")} >= 30 AS is_revision,
            multiIf(is_duplicate, {src}, is_revision, toUInt64(n - 1), n) AS f,
            toUInt32(is_revision) AS rev
        FROM numbers({{start:UInt64}}, {{count:UInt64}})
    )
)
"""


def decision_uuid(flow: str, revision: str, seed: int) -> str:
    """SQL for a deterministic UUID-shaped decision id of (flow, revision)."""
    halves = ", ".join(f"reinterpretAsFixedString(cityHash64({flow}, {revision}, {seed}, {k}))" for k in (11, 12))
    return f"toString(reinterpretAsUUID(concat({halves})))"


def table_stats(client: Any) -> dict[str, int]:
    """Rows (physical, before FINAL), active parts and bytes on disk of `disclosures`."""
    row = client.query(
        "SELECT sum(rows), count(), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
        "WHERE database = currentDatabase() AND table = 'disclosures' AND active"
    ).result_rows[0]
    return {"rows": int(row[0] or 0), "parts": int(row[1]), "bytes": int(row[2] or 0), "raw": int(row[3] or 0)}


def _marker(rows: int, pupils: int, seed: int) -> str:
    return f"pupilflow bench/sar.py rows={rows} pupils={pupils} seed={seed}"


def generate(client: Any, args: argparse.Namespace, policy: Policy) -> None:
    """Create `disclosures` and fill it with `args.rows` rows, unless an earlier run already did."""
    if args.regenerate:
        client.command("DROP TABLE IF EXISTS disclosures")
    client.command(disclosures_ddl())
    comment = client.command(
        "SELECT comment FROM system.tables WHERE database = currentDatabase() AND name = 'disclosures'"
    )
    if str(comment) == _marker(args.rows, args.pupils, args.seed):
        print(f"disclosures already holds the {args.rows:,} generated rows (--regenerate to rebuild)")
        return
    client.command("TRUNCATE TABLE disclosures")
    client.command("ALTER TABLE disclosures MODIFY COMMENT ''")
    create_helpers(client, policy, args.seed)
    sql = generate_sql(args.seed, args.pupils, policy.digest)
    print(f"generating {args.rows:,} rows for {args.pupils:,} pupils in chunks of {args.chunk:,}")
    started = time.perf_counter()
    done = 0
    while done < args.rows:
        count = min(args.chunk, args.rows - done)
        chunk_started = time.perf_counter()
        client.command(
            sql,
            parameters={"start": done, "count": count, "digest": policy.digest},
            # Keep re-delivered rows that share an insert block, as separate sink inserts would.
            settings={"optimize_on_insert": 0},
        )
        done += count
        now = time.perf_counter()
        print(
            f"  {done:>13,} rows  {count / (now - chunk_started):>11,.0f} rows/s  "
            f"(overall {done / (now - started):,.0f} rows/s, {now - started:,.0f} s)",
            flush=True,
        )
    client.command(f"ALTER TABLE disclosures MODIFY COMMENT '{_marker(args.rows, args.pupils, args.seed)}'")
    print(f"generated {args.rows:,} rows in {time.perf_counter() - started:,.1f} s")


def check_ids(client: Any, pupils: int) -> None:
    """Fail unless the SQL pupil ids equal `pupil_id` (so the queries ask for pupils that exist)."""
    sample = [0, 1, 999, 1000, pupils - 1, *random.Random(1).sample(range(pupils), min(20, pupils))]
    got = client.query(
        f"SELECT p, {pupil_id_sql('p')} FROM (SELECT arrayJoin({{ps:Array(UInt64)}}) AS p)", parameters={"ps": sample}
    ).result_rows
    wrong = [(p, sid, pupil_id(p)) for p, sid in got if sid != pupil_id(p)]
    if wrong:
        raise SystemExit(f"SQL and Python pupil ids differ: {wrong[:3]}")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def answer(client: Any, form: str, subject: str) -> tuple[float, list[tuple[Any, ...]], int]:
    """Run one SAR query: (client-side ms, rows, rows ClickHouse read)."""
    started = time.perf_counter()
    result = client.query(QUERIES[form], parameters={"subject": subject})
    rows = result.result_rows
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, rows, int(result.summary.get("read_rows", 0))


def measure(client: Any, args: argparse.Namespace) -> dict[str, list[float]]:
    """Warm up, then query random pupils in every form, interleaved; prints a line per form."""
    rng = random.Random(args.seed + 1)
    print(f"warming up: {args.warmup} rounds of the {len(QUERIES)} forms", flush=True)
    for _ in range(args.warmup):
        for form in QUERIES:
            answer(client, form, pupil_id(rng.randrange(args.pupils)))
    latencies: dict[str, list[float]] = {form: [] for form in QUERIES}
    returned: dict[str, list[int]] = {form: [] for form in QUERIES}
    read: dict[str, list[int]] = {form: [] for form in QUERIES}
    differs: dict[str, int] = dict.fromkeys(QUERIES, 0)
    started = time.perf_counter()
    # While background merges are still at work an answer can take a second or more: show the run is moving.
    every = max(1, args.queries // 10)
    for done in range(1, args.queries + 1):
        subject = pupil_id(rng.randrange(args.pupils))
        forms = list(QUERIES)
        rng.shuffle(forms)  # the same pupil in every form, in random order, so caches favour none
        answers = {}
        for form in forms:
            ms, rows, rows_read = answer(client, form, subject)
            latencies[form].append(ms)
            returned[form].append(len(rows))
            read[form].append(rows_read)
            answers[form] = sorted((str(r[7]), r[8]) for r in rows)
        for form in QUERIES:
            differs[form] += answers[form] != answers["FINAL"]
        if done % every == 0 and done < args.queries:
            print(f"  {done:>6,} of {args.queries:,} pupils asked, {time.perf_counter() - started:,.0f} s", flush=True)
    print(f"{args.queries:,} SAR queries per form for random pupils (after {args.warmup} warm-up rounds):")
    for form in QUERIES:
        values = latencies[form]
        p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
        print(
            f"  {form:<11} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms"
            f"  max {max(values):6.1f} ms  mean {statistics.fmean(values):6.1f} ms | "
            f"{statistics.fmean(returned[form]):5.1f} rows/answer, read {statistics.fmean(read[form]):8,.0f} rows | "
            f"answer differs from FINAL for {differs[form]} pupils | "
            f"{'PASS' if p95 <= TARGET_P95_MS else 'FAIL'} (p95 <= {TARGET_P95_MS:.0f} ms)"
            f"{'  <- the documented query' if form == DOCUMENTED else ''}"
        )
    return latencies


def bench_dsn(base: str, database: str) -> str:
    """The DSN of the benchmark's own database on the server `base` names."""
    server, _ = split_dsn(base)
    if urlsplit(server).scheme == "chdb":
        raise SystemExit("bench/sar.py needs a ClickHouse server (http:// or https:// DSN)")
    return server.rstrip("/") + "/" + database


def main() -> None:
    """Generate the disclosures (unless already there), then time SAR queries and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=None, help="ClickHouse server (default: PUPILFLOW_CLICKHOUSE_DSN's)")
    parser.add_argument("--database", default="pupilflow_bench")
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--pupils", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000_000, help="rows per INSERT ... SELECT")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--regenerate", action="store_true", help="drop and regenerate the table")
    args = parser.parse_args()
    if args.database == DEFAULT_DATABASE:
        raise SystemExit(f"refusing to use the pipeline's database {DEFAULT_DATABASE!r}: pick another --database")
    if args.pupils < 1 or args.rows < 1 or args.chunk < 1:
        raise SystemExit("--rows, --pupils and --chunk must be positive")
    dsn = bench_dsn(args.dsn or Settings().clickhouse_dsn, args.database)
    client = connect(dsn, send_receive_timeout=3600)
    policy = load_policy(ROOT / "policy")
    print(f"SAR benchmark in {dsn} (ClickHouse {client.command('SELECT version()')})")
    generate(client, args, policy)
    check_ids(client, args.pupils)
    before = table_stats(client)
    print(
        f"disclosures: {before['rows']:,} rows stored (before FINAL), {before['parts']} active parts, "
        f"{before['bytes'] / 2**30:,.2f} GiB on disk ({before['raw'] / 2**30:,.2f} GiB uncompressed)"
    )
    measure(client, args)
    after = table_stats(client)
    print(f"parts: {before['parts']} before the queries, {after['parts']} after")


if __name__ == "__main__":
    main()
