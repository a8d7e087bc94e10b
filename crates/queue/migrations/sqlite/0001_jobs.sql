-- Export jobs and the parts each attempt wrote. Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    slice            TEXT NOT NULL,
    status           TEXT NOT NULL,
    request          TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    idempotency_key  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    expires_at       INTEGER,
    run_after        INTEGER NOT NULL,
    watermark        INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      INTEGER,
    progress_rows    INTEGER NOT NULL DEFAULT 0,
    progress_bytes   INTEGER NOT NULL DEFAULT 0,
    error_code       TEXT,
    error_message    TEXT,
    manifest_key     TEXT,
    published_attempt INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_tenant_created ON jobs (tenant, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_status_run_after ON jobs (status, run_after);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS parts (
    job_id   TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    key      TEXT NOT NULL,
    rows     INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, n)
);
