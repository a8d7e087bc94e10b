//! API tokens, kept in the job store's database.
//!
//! A token is `lp_` and 64 hex digits (32 random bytes). Only the SHA-256 digest of
//! that secret is stored: the secret is printed once, at creation, and cannot be read
//! back. Every token has a public id (`tok_` and 16 hex digits) that lists, revocation
//! and the activity log name it by. A token belongs to one tenant, carries scopes
//! (`ingest`, `export`, `admin`), optionally a list of the apps it may touch, and
//! optionally an expiry; a revoked or expired token stays listed but authenticates
//! nothing.
//!
//! The same database holds the activity outbox: activity rows recorded where ClickHouse
//! may be out of reach (the `logport token` commands) are written in the transaction
//! of the change they record, and a server moves them into the `activity` slice
//! (claim under a lease, insert, acknowledge: at least once, each row with a stable
//! `event_id`).

use async_trait::async_trait;
use serde::Serialize;
use sqlx::Executor;

use crate::sql::{query, Args, Columns, Dialect, Query, SqlStore};
use crate::QueueError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /v1/ingest/{slice}`.
    Ingest,
    /// Exports, previews, estimates, downloads and the compatibility protocols.
    Export,
    /// Everything, including the `activity` slice.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Export, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Export => "export",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// A comma-separated list (`ingest,export`), sorted and without repeats.
    pub fn parse_list(text: &str) -> Result<Vec<Scope>, String> {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let scope = Scope::parse(item)
                .ok_or_else(|| format!("`{item}` is not a scope; use ingest, export or admin"))?;
            out.push(scope);
        }
        if out.is_empty() {
            return Err("name at least one scope: ingest, export or admin".into());
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The apps the token may touch; `None`: every app of the tenant.
    pub apps: Option<Vec<u64>>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenInfo {
    /// Whether the token authenticates requests at `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A token to store: made by [`NewToken::generate`], which also returns the secret.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    /// SHA-256 (hex) of the secret.
    pub digest: String,
    pub tenant: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub apps: Option<Vec<u64>>,
    pub expires_at: Option<i64>,
}

impl NewToken {
    /// A fresh id and secret; returns the token to store and the secret to show once.
    pub fn generate(
        tenant: &str,
        name: &str,
        scopes: Vec<Scope>,
        apps: Option<Vec<u64>>,
        expires_at: Option<i64>,
    ) -> (NewToken, String) {
        use rand::RngCore;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let secret = format!("{SECRET_PREFIX}{}", hex::encode(secret));
        let token = NewToken {
            id: format!("{ID_PREFIX}{}", hex::encode(id)),
            digest: token_digest(&secret),
            tenant: tenant.to_string(),
            name: name.to_string(),
            scopes,
            apps,
            expires_at,
        };
        (token, secret)
    }
}

/// How every generated secret starts (so scanners can find leaked ones).
pub const SECRET_PREFIX: &str = "lp_";
/// How every token id starts.
pub const ID_PREFIX: &str = "tok_";

/// Whether `secret` has the shape every generated secret has (`lp_` and 64 lowercase
/// hex digits): anything else cannot be a stored token and is never looked up.
pub fn is_well_formed_secret(secret: &str) -> bool {
    secret.strip_prefix(SECRET_PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The stored form of a secret: SHA-256, hex. A secret has 256 random bits, so a
/// plain digest (no salt, no slow hash) cannot be reversed or guessed.
pub fn token_digest(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Whether `id` has the shape of a token id (`tok_` and 16 hex digits).
pub fn is_token_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX)
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An activity row to record with a change: its `event_id` and the row as the
/// `activity` slice ingests it (a JSON object). The tenant is the token's.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: String,
    pub row: serde_json::Value,
}

/// An activity row waiting in the outbox, claimed by one mover.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAudit {
    pub id: String,
    pub tenant: String,
    /// The row, or why its stored text is not JSON (one such row must not stop the
    /// others: the mover sets it aside).
    pub row: Result<serde_json::Value, String>,
    pub created_at: i64,
}

/// What `revoke_token` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now.
    Now(TokenInfo),
    /// It was revoked before; nothing changed (and no activity was recorded).
    Already(TokenInfo),
    NotFound,
}

/// Storage of tokens and of the activity outbox. Every backend passes the same
/// conformance suite (crates/queue/tests/job_store.rs).
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a new token and, in the same transaction, its activity row.
    async fn create_token(
        &self,
        token: &NewToken,
        audit: &AuditRecord,
        now: i64,
    ) -> Result<TokenInfo, QueueError>;

    /// The token whose secret has this digest, active or not.
    async fn token_by_digest(&self, digest: &str) -> Result<Option<TokenInfo>, QueueError>;

    /// Every token (of one tenant, when given), oldest first.
    async fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, QueueError>;

    /// Revokes a token and, in the same transaction, records its activity row; a
    /// token revoked before stays as it was.
    async fn revoke_token(
        &self,
        id: &str,
        audit: &AuditRecord,
        now: i64,
    ) -> Result<Revoked, QueueError>;

    /// Takes up to `limit` outbox rows that nobody holds (or whose holder's lease ran
    /// out), oldest first, under a lease until `now + lease_ms`.
    async fn claim_audit(
        &self,
        owner: &str,
        limit: u32,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<PendingAudit>, QueueError>;

    /// Removes outbox rows the owner has moved; returns how many went.
    async fn ack_audit(&self, owner: &str, ids: &[String]) -> Result<u64, QueueError>;

    /// Sets aside an outbox row the owner holds and cannot write: it stays in the
    /// outbox with `reason`, for an operator, and is never claimed again. Returns
    /// whether the owner held it.
    async fn set_aside_audit(
        &self,
        owner: &str,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, QueueError>;
}

/// A stored outbox row's text as JSON, or why it is not.
fn audit_row(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("the stored activity row is not JSON: {e}"))
}

/// `1,2,3` ⇄ app ids.
fn apps_to_text(apps: &Option<Vec<u64>>) -> Option<String> {
    apps.as_ref()
        .map(|a| a.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
}

fn apps_from_text(text: Option<String>) -> Result<Option<Vec<u64>>, QueueError> {
    text.map(|t| {
        t.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| QueueError::Backend(format!("stored app list `{t}` is corrupt")))
            })
            .collect()
    })
    .transpose()
}

fn token_from_row<DB: Dialect>(r: &DB::Row) -> Result<TokenInfo, QueueError> {
    let scopes: String = r.col("scopes")?;
    Ok(TokenInfo {
        id: r.col("id")?,
        tenant: r.col("tenant")?,
        name: r.col("name")?,
        scopes: Scope::parse_list(&scopes)
            .map_err(|e| QueueError::Backend(format!("stored scopes: {e}")))?,
        apps: apps_from_text(r.col("apps")?)?,
        created_at: r.col("created_at")?,
        expires_at: r.col("expires_at")?,
        revoked_at: r.col("revoked_at")?,
    })
}

const COLUMNS: &str = "id, tenant, name, scopes, apps, created_at, expires_at, revoked_at";

/// Records a change's activity row (in the change's transaction).
fn record_audit<DB: Dialect>(audit: &AuditRecord, tenant: &str, now: i64) -> Query<DB> {
    query("INSERT INTO activity_outbox (id, tenant, row, created_at) VALUES ($1, $2, $3, $4)")
        .arg(audit.id.as_str())
        .arg(tenant)
        .arg(audit.row.to_string().as_str())
        .arg(now)
}

#[async_trait]
impl<DB> TokenStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    async fn create_token(
        &self,
        token: &NewToken,
        audit: &AuditRecord,
        now: i64,
    ) -> Result<TokenInfo, QueueError> {
        let mut tx = self.pool.begin().await?;
        query::<DB>(
            "INSERT INTO tokens (id, digest, tenant, name, scopes, apps, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .arg(token.id.as_str())
        .arg(token.digest.as_str())
        .arg(token.tenant.as_str())
        .arg(token.name.as_str())
        .arg(Scope::join(&token.scopes).as_str())
        .arg(apps_to_text(&token.apps))
        .arg(now)
        .arg(token.expires_at)
        .execute(&mut *tx)
        .await?;
        record_audit::<DB>(audit, &token.tenant, now)
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
        let row = query::<DB>(format!("SELECT {COLUMNS} FROM tokens WHERE digest = $1"))
            .arg(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row::<DB>).transpose()
    }

    async fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, QueueError> {
        let rows = query::<DB>(format!(
            "SELECT {COLUMNS} FROM tokens WHERE ($1 IS NULL OR tenant = $1)
             ORDER BY created_at, id"
        ))
        .arg(tenant.map(str::to_owned))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row::<DB>).collect()
    }

    async fn revoke_token(
        &self,
        id: &str,
        audit: &AuditRecord,
        now: i64,
    ) -> Result<Revoked, QueueError> {
        // The UPDATE comes first so that on SQLite the transaction takes the write lock
        // at once.
        let mut tx = self.pool.begin().await?;
        let revoked = query::<DB>(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL
             RETURNING tenant",
        )
        .arg(now)
        .arg(id)
        .fetch_optional(&mut *tx)
        .await?;
        let tenant: Option<String> = revoked.map(|r| r.col("tenant")).transpose()?;
        if let Some(tenant) = &tenant {
            record_audit::<DB>(audit, tenant, now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let row = query::<DB>(format!("SELECT {COLUMNS} FROM tokens WHERE id = $1"))
            .arg(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(
            match (row.as_ref().map(token_from_row::<DB>).transpose()?, tenant) {
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
        let rows = query::<DB>(format!(
            "UPDATE activity_outbox SET lease_owner = $1, lease_until = $2
             WHERE id IN (
                 SELECT id FROM activity_outbox
                 WHERE (lease_until IS NULL OR lease_until < $3) AND set_aside_at IS NULL
                 ORDER BY created_at, id LIMIT $4 {})
             RETURNING id, tenant, row, created_at",
            DB::skip_locked("activity_outbox"),
        ))
        .arg(owner)
        .arg(now + lease_ms)
        .arg(now)
        .arg(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let row: String = r.col("row")?;
                Ok(PendingAudit {
                    id: r.col("id")?,
                    tenant: r.col("tenant")?,
                    row: audit_row(&row),
                    created_at: r.col("created_at")?,
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
        let q = query::<DB>(format!(
            "DELETE FROM activity_outbox WHERE lease_owner = $1 AND {}",
            DB::in_list("id", "$2")
        ))
        .arg(owner);
        Ok(DB::rows_affected(
            DB::bind_texts(q, ids).execute(&self.pool).await?,
        ))
    }

    async fn set_aside_audit(
        &self,
        owner: &str,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, QueueError> {
        let q = query::<DB>(
            "UPDATE activity_outbox SET set_aside_at = $1, set_aside_reason = $2,
                 lease_owner = NULL, lease_until = NULL
             WHERE id = $3 AND lease_owner = $4",
        )
        .arg(now)
        .arg(reason)
        .arg(id)
        .arg(owner);
        self.changed_one(q).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_ids() {
        let (t, secret) = NewToken::generate("acme", "ci", vec![Scope::Export], None, None);
        assert!(secret.starts_with("lp_") && secret.len() == 67, "{secret}");
        assert!(is_token_id(&t.id), "{}", t.id);
        assert_eq!(t.digest, token_digest(&secret));
        assert_ne!(t.digest, secret);
        let (u, other) = NewToken::generate("acme", "ci", vec![Scope::Export], None, None);
        assert_ne!(secret, other);
        assert_ne!(t.id, u.id);
        assert!(!is_token_id("tok_123"));
        assert!(!is_token_id("tok_../../etc/passwd0"));
        assert!(is_well_formed_secret(&secret) && is_well_formed_secret(&other));
        for bad in [
            "lp_guess".to_string(),
            secret.to_uppercase(),
            format!("{secret}0"),
            secret.replacen("lp_", "xx_", 1),
            format!("lp_{}", "g".repeat(64)),
        ] {
            assert!(!is_well_formed_secret(&bad), "{bad}");
        }
    }

    #[test]
    fn scope_lists() {
        assert_eq!(
            Scope::parse_list("export, ingest,export").unwrap(),
            [Scope::Ingest, Scope::Export]
        );
        assert!(Scope::parse_list("").is_err());
        assert!(Scope::parse_list("read").is_err());
        assert_eq!(Scope::join(&[Scope::Ingest, Scope::Admin]), "ingest,admin");
    }

    #[test]
    fn activity_of_a_token() {
        let t = TokenInfo {
            id: "tok_0".into(),
            tenant: "acme".into(),
            name: "n".into(),
            scopes: vec![Scope::Admin],
            apps: None,
            created_at: 0,
            expires_at: Some(100),
            revoked_at: None,
        };
        assert!(t.is_active(99));
        assert!(!t.is_active(100));
        let revoked = TokenInfo {
            revoked_at: Some(5),
            expires_at: None,
            ..t
        };
        assert!(!revoked.is_active(0));
    }
}
