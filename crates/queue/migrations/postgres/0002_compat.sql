-- For the compatibility protocols (AppMetrica, Metrica): the app a job reads, the
-- fingerprint identical requests share and when a job's outcome was first served; and
-- the integer numbers Metrica-style clients address requests by, counted per tenant.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS app_id BIGINT;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS fingerprint TEXT;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS served_at BIGINT;
CREATE INDEX IF NOT EXISTS jobs_fingerprint ON jobs (tenant, fingerprint, created_at)
    WHERE fingerprint IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_tenant_app_status ON jobs (tenant, app_id, status)
    WHERE app_id IS NOT NULL;

-- The last number given out per tenant.
CREATE TABLE IF NOT EXISTS request_numbers (
    tenant TEXT PRIMARY KEY,
    last   BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS numbered_jobs (
    tenant     TEXT NOT NULL,
    number     BIGINT NOT NULL,
    job_id     TEXT NOT NULL UNIQUE,
    cleaned_at BIGINT,
    PRIMARY KEY (tenant, number)
);
