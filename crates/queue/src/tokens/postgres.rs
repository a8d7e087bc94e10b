//! Tokens and the activity outbox in the PostgreSQL job store.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{
    apps_from_text, apps_to_text, scopes_from_text, AuditRecord, NewToken, PendingAudit, Revoked,
    Scope, TokenInfo, TokenStore,
};
use crate::{PostgresJobStore, QueueError};

fn token_from_row(r: &PgRow) -> Result<TokenInfo, QueueError> {
    let scopes: String = r.try_get("scopes")?;
    Ok(TokenInfo {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        name: r.try_get("name")?,
        scopes: scopes_from_text(&scopes)?,
        apps: apps_from_text(r.try_get("apps")?)?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

const COLUMNS: &str = "id, tenant, name, scopes, apps, created_at, expires_at, revoked_at";

#[async_trait]
impl TokenStore for PostgresJobStore {
    async fn create_token(
        &self,
        token: &NewToken,
        audit: &AuditRecord,
        now: i64,
    ) -> Result<TokenInfo, QueueError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tokens (id, digest, tenant, name, scopes, apps, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&token.id)
        .bind(&token.digest)
        .bind(&token.tenant)
        .bind(&token.name)
        .bind(Scope::join(&token.scopes))
        .bind(apps_to_text(&token.apps))
        .bind(now)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO activity_outbox (id, tenant, row, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&audit.id)
        .bind(&token.tenant)
        .bind(audit.row.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TokenInfo {
            id: token.id.clone(),
            tenant: token.tenant.clone(),
            name: token.name.clone(),
            scopes: token.scopes.clone(),
            apps: token.apps.clone(),
            created_at: now,
            expires_at: token.expires_at,
            revoked_at: None,
        })
    }

    async fn token_by_digest(&self, digest: &str) -> Result<Option<TokenInfo>, QueueError> {
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE digest = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, QueueError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tokens WHERE ($1::text IS NULL OR tenant = $1)
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(
        &self,
        id: &str,
        audit: &AuditRecord,
        now: i64,
    ) -> Result<Revoked, QueueError> {
        let mut tx = self.pool.begin().await?;
        let tenant: Option<String> = sqlx::query_scalar(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL
             RETURNING tenant",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(tenant) = &tenant {
            sqlx::query(
                "INSERT INTO activity_outbox (id, tenant, row, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&audit.id)
            .bind(tenant)
            .bind(audit.row.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(
            match (row.as_ref().map(token_from_row).transpose()?, tenant) {
                (None, _) => Revoked::NotFound,
                (Some(t), Some(_)) => Revoked::Now(t),
                (Some(t), None) => Revoked::Already(t),
            },
        )
    }

    async fn claim_audit(
        &self,
        owner: &str,
        limit: u32,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<PendingAudit>, QueueError> {
        let rows = sqlx::query(
            "UPDATE activity_outbox SET lease_owner = $1, lease_until = $2
             WHERE id IN (
                 SELECT id FROM activity_outbox
                 WHERE (lease_until IS NULL OR lease_until < $3) AND set_aside_at IS NULL
                 ORDER BY created_at, id LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, tenant, row, created_at",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let row: String = r.try_get("row")?;
                Ok(PendingAudit {
                    id: r.try_get("id")?,
                    tenant: r.try_get("tenant")?,
                    row: super::audit_row(&row),
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, QueueError>>()?;
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn ack_audit(&self, owner: &str, ids: &[String]) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let n = sqlx::query("DELETE FROM activity_outbox WHERE lease_owner = $1 AND id = ANY($2)")
            .bind(owner)
            .bind(ids)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }

    async fn set_aside_audit(
        &self,
        owner: &str,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, QueueError> {
        let n = sqlx::query(
            "UPDATE activity_outbox SET set_aside_at = $1, set_aside_reason = $2,
                 lease_owner = NULL, lease_until = NULL
             WHERE id = $3 AND lease_owner = $4",
        )
        .bind(now)
        .bind(reason)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}
