-- Export jobs and the parts each attempt wrote. Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS jobs (
    id                TEXT PRIMARY KEY,
    tenant            TEXT NOT NULL,
    slice             TEXT NOT NULL,
    status            TEXT NOT NULL,
    request           TEXT NOT NULL,
    request_hash      TEXT NOT NULL,
    idempotency_key   TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    expires_at        BIGINT,
    run_after         BIGINT NOT NULL,
    watermark         BIGINT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_until       BIGINT,
    progress_rows     BIGINT NOT NULL DEFAULT 0,
    progress_bytes    BIGINT NOT NULL DEFAULT 0,
    error_code        TEXT,
    error_message     TEXT,
    manifest_key      TEXT,
    published_attempt INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_tenant_created ON jobs (tenant, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_status_run_after ON jobs (status, run_after);
CREATE INDEX IF NOT EXISTS jobs_tenant_status ON jobs (tenant, status);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS parts (
    job_id   TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    key      TEXT NOT NULL,
    rows     BIGINT NOT NULL,
    bytes    BIGINT NOT NULL,
    sha256   TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, n)
);

-- When each tenant last had a job claimed: claims go to the tenant waiting longest.
CREATE TABLE IF NOT EXISTS tenant_turns (
    tenant        TEXT PRIMARY KEY,
    last_claim_at BIGINT NOT NULL
);
