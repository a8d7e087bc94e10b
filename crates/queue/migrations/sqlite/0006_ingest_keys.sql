-- Ingest requests sent with an Idempotency-Key: the key's body digest and, once the
-- rows are committed, the answer given, so a retry on any replica gets the same
-- answer and a key reused for another body is refused. Rows expire (expires_at,
-- Unix ms); the rows themselves are deduplicated in ClickHouse for good.
CREATE TABLE IF NOT EXISTS ingest_keys (
    tenant      TEXT NOT NULL,
    slice       TEXT NOT NULL,
    key         TEXT NOT NULL,
    digest      TEXT NOT NULL,
    answer      TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, slice, key)
);
CREATE INDEX IF NOT EXISTS ingest_keys_expiry ON ingest_keys (expires_at);
