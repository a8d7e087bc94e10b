-- API tokens: only the SHA-256 digest of a token's secret is kept. The id is public
-- (lists, revocation, the activity log); the secret is shown once, at creation.
-- Scopes and apps are comma-separated; apps NULL means every app of the tenant.
CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    digest      TEXT NOT NULL UNIQUE,
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    apps        TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX IF NOT EXISTS tokens_tenant ON tokens (tenant, created_at, id);

-- Activity rows written where ClickHouse may be out of reach (the `logport token`
-- commands), in the same transaction as the change they record; `logport serve`
-- moves them into the `activity` slice. A claim is a lease, as for jobs.
CREATE TABLE IF NOT EXISTS activity_outbox (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    row         TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT
);
CREATE INDEX IF NOT EXISTS activity_outbox_created ON activity_outbox (created_at, id);
