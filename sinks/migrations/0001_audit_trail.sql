-- The audit trail: one row per decision, deduplicated on decision_id (a re-delivered decision replaces
-- itself), the full decision JSON kept verbatim so every decision can be replayed exactly.
CREATE TABLE IF NOT EXISTS decisions
(
    decision_id      String,
    flow_event_id    String,
    verdict          LowCardinality(String),
    reasons          Array(LowCardinality(String)),
    explanation      String,
    recipient        LowCardinality(String),
    purpose          LowCardinality(String),
    categories       Array(LowCardinality(String)),
    subject_ids      Array(String),
    occurred_at      DateTime64(3, 'UTC'),
    decided_at       DateTime64(3, 'UTC'),
    emitted_at       DateTime64(3, 'UTC'),
    source_connector LowCardinality(String),
    source_sequence  UInt64,
    policy_digest    LowCardinality(String),
    notice_version   LowCardinality(String),
    supersedes       Nullable(String),
    payload          String CODEC(ZSTD(3)),
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY decision_id;

-- Every message that could not be used, with the reason; one row per source message.
CREATE TABLE IF NOT EXISTS dead_letters
(
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    message_key      Nullable(String),
    raw              String CODEC(ZSTD(3)),
    error            String,
    stage            LowCardinality(String),
    received_at      DateTime64(3, 'UTC'),
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset, stage);

-- Violations are the decisions whose verdict is "violation"; FINAL so a re-delivered one counts once.
CREATE VIEW IF NOT EXISTS violations AS
SELECT decision_id, flow_event_id, reasons, explanation, recipient, purpose, categories, subject_ids,
       occurred_at, decided_at, source_connector, policy_digest, notice_version, supersedes
FROM decisions FINAL
WHERE verdict = 'violation';
