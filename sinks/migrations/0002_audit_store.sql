-- The audit store around the decisions: who each decision disclosed data about, the violations as a table of
-- their own, the fact history decisions were judged against, and the hash chain that makes the trail
-- tamper-evident.
--
-- No TTLs here, on purpose: RULES.md §retention limits how long schools may keep pupil records, not how long
-- the Trust keeps the audit trail of its decisions about sharing them; that trail is evidence for the ICO, for
-- subject access requests and for claims, and deleting it on a timer would destroy the very record it exists
-- to keep.

-- Subject access: one row per (decision, subject). ReplacingMergeTree on the full key, so a re-delivered
-- decision replaces its own rows instead of adding to them.
CREATE TABLE IF NOT EXISTS disclosures
(
    subject_id     String,
    occurred_at    DateTime64(3, 'UTC'),
    decision_id    String,
    subject_kind   LowCardinality(String),
    flow_event_id  String,
    recipient      LowCardinality(String),
    purpose        LowCardinality(String),
    categories     Array(LowCardinality(String)),
    verdict        LowCardinality(String),
    reasons        Array(LowCardinality(String)),
    explanation    String CODEC(ZSTD(3)),
    revision       UInt32,
    supersedes     Nullable(String),
    decided_at     DateTime64(3, 'UTC'),
    policy_digest  LowCardinality(String),
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (subject_id, occurred_at, decision_id);

-- Decisions landed before this migration, spread over their subjects from the decision JSON they kept.
INSERT INTO disclosures
    (subject_id, occurred_at, decision_id, subject_kind, flow_event_id, recipient, purpose, categories, verdict,
     reasons, explanation, revision, supersedes, decided_at, policy_digest)
SELECT JSONExtractString(d, 'subject_id'), occurred_at, decision_id,
       if(JSONExtractString(d, 'subject_kind') = '', 'pupil', JSONExtractString(d, 'subject_kind')),
       flow_event_id, recipient, purpose, categories, JSONExtractString(d, 'verdict'),
       JSONExtract(d, 'reasons', 'Array(String)'), explanation, JSONExtractUInt(payload, 'revision'), supersedes,
       decided_at, policy_digest
FROM decisions FINAL
ARRAY JOIN JSONExtractArrayRaw(payload, 'disclosures') AS d;

-- Violations become a table the sink writes beside each violation decision (the 0001 view ran FINAL over the
-- whole trail on every dashboard refresh). Dropping is safe: migrate runs before the sink consumes, and the
-- backfill below rebuilds the rows from decisions; DROP TABLE also drops the old view.
DROP TABLE IF EXISTS violations;

CREATE TABLE IF NOT EXISTS violations
(
    decision_id      String,
    flow_event_id    String,
    occurred_at      DateTime64(3, 'UTC'),
    decided_at       DateTime64(3, 'UTC'),
    recipient        LowCardinality(String),
    purpose          LowCardinality(String),
    categories       Array(LowCardinality(String)),
    subject_ids      Array(String),
    reasons          Array(LowCardinality(String)),
    explanation      String CODEC(ZSTD(3)),
    supersedes       Nullable(String),
    revision         UInt32,
    policy_digest    LowCardinality(String),
    notice_version   LowCardinality(String),
    source_connector LowCardinality(String),
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (occurred_at, decision_id);

INSERT INTO violations
    (decision_id, flow_event_id, occurred_at, decided_at, recipient, purpose, categories, subject_ids, reasons,
     explanation, supersedes, revision, policy_digest, notice_version, source_connector)
SELECT decision_id, flow_event_id, occurred_at, decided_at, recipient, purpose, categories, subject_ids, reasons,
       explanation, supersedes, JSONExtractUInt(payload, 'revision'), policy_digest, notice_version, source_connector
FROM decisions FINAL
WHERE verdict = 'violation';

-- The fact history: every consent, objection, agreement, pupil fact and notice version as it arrived.
-- subject_key is what an auditor looks facts up by: the subject for subject facts, the recipient for
-- agreements, '' for Trust-wide facts (a sorting key cannot be Nullable). Keyed on the event id, so a
-- re-delivered fact replaces itself.
CREATE TABLE IF NOT EXISTS facts
(
    subject_key      String,
    occurred_at      DateTime64(3, 'UTC'),
    event_id         String,
    kind             LowCardinality(String),
    subject_id       Nullable(String),
    recipient        Nullable(String),
    emitted_at       DateTime64(3, 'UTC'),
    source_connector LowCardinality(String),
    source_sequence  UInt64,
    payload          String CODEC(ZSTD(3)),
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (subject_key, occurred_at, event_id);

-- The hash chain, per decisions-topic partition in offset order (sinks/chain.py); hex SHA-256. Rows landed
-- before this migration keep '' in both and are reported by `pupilflow verify` as preceding the chain.
ALTER TABLE decisions
    ADD COLUMN IF NOT EXISTS row_hash String,
    ADD COLUMN IF NOT EXISTS prev_hash String;
