-- When each tenant last had a job claimed: claims go to the tenant waiting longest.
CREATE TABLE IF NOT EXISTS tenant_turns (
    tenant        TEXT PRIMARY KEY,
    last_claim_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_tenant_status ON jobs (tenant, status);
