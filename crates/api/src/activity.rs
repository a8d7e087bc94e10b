//! The audit log: every mutating action — an export created, canceled or deleted, an
//! ingest batch accepted, a token created or revoked — becomes a row of the
//! `activity` slice, of the acting tenant, exportable like any other slice.
//!
//! A row names the actor (the token's id and name), the entity (type, id, name), the
//! action, what changed (a JSON object), and where the request came from (the peer's
//! IP, its User-Agent). Rows are built as the JSON an ingest client would send and go
//! through the catalog's own validation, so they always match the slice's schema.
//!
//! Writing is best effort for actions made through the API: the row goes to the
//! coalescing inserter after the action succeeded, and a failure is logged (`warn`),
//! never turned into a failed request — the action already happened. Actions made
//! where ClickHouse may be out of reach (`logport token …`) are written to the job
//! store's outbox in the transaction of the change, and [`spawn_outbox_mover`] moves
//! them into ClickHouse (at least once, each with a stable `event_id`). An outbox row
//! that can never be written is set aside (see [`move_outbox`]), never dropped and
//! never in the way of the others.

use std::sync::Arc;
use std::time::Duration;

use logport_catalog::ingest::{row_from_object, RowSink};
use logport_catalog::{Catalog, Value};
use logport_queue::{Clock, TokenStore};
use logport_store::{IngestBatch, IngestBlock, Inserter};
use serde_json::{json, Map, Value as Json};

use crate::auth::{Caller, ADMIN_SLICE};
use crate::AppState;

/// One action, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// One of the slice's actions: `created`, `updated`, `deleted`, `imported`, ….
    pub action: &'static str,
    /// `export`, `ingest_batch`, `token`.
    pub entity_type: &'static str,
    pub entity_id: String,
    pub entity_name: String,
    /// The app the action concerned (0: none or several).
    pub app_id: u64,
    /// What changed: `{"field": [old, new]}`, or counts for an ingest batch.
    pub changes: Json,
}

/// Who acted, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Actor {
    pub actor_type: &'static str,
    pub actor_id: String,
    pub actor_name: String,
    pub token_id: String,
    pub source: &'static str,
    pub ip: String,
    pub user_agent: String,
}

impl Actor {
    /// An API token, from the request it authenticated.
    pub fn of(caller: &Caller) -> Actor {
        Actor {
            actor_type: "api_token",
            actor_id: caller.token_id.clone(),
            actor_name: caller.token_name.clone(),
            token_id: caller.token_id.clone(),
            source: "api",
            ip: caller.ip.clone(),
            user_agent: caller.user_agent.clone(),
        }
    }
}

/// The row of one action, as the `activity` slice ingests it.
pub fn row(actor: &Actor, entry: &Entry, event_id: uuid::Uuid, now_secs: i64) -> Json {
    json!({
        "app_id": entry.app_id,
        "event_id": event_id.to_string(),
        "event_time": now_secs,
        "actor_id": actor.actor_id,
        "actor_name": actor.actor_name,
        "actor_type": actor.actor_type,
        "token_id": actor.token_id,
        "action": entry.action,
        "entity_type": entry.entity_type,
        "entity_id": entry.entity_id,
        "entity_name": entry.entity_name,
        "changes": entry.changes.to_string(),
        "source": actor.source,
        "status": "success",
        "ip": actor.ip,
        "user_agent": actor.user_agent,
    })
}

/// Records an action of `caller` in the background (best effort, logged).
pub fn record(state: &AppState, caller: &Caller, entry: Entry) {
    let now_ms = state.clock.now_ms();
    let row = row(
        &Actor::of(caller),
        &entry,
        uuid::Uuid::now_v7(),
        now_ms.div_euclid(1000),
    );
    let rows = vec![(caller.tenant.clone(), row)];
    let (catalog, inserter) = (Arc::clone(&state.catalog), Arc::clone(&state.inserter));
    let what = format!("{} {} {}", entry.entity_type, entry.entity_id, entry.action);
    tokio::spawn(async move {
        if let Err(e) = write(&catalog, &inserter, rows, now_ms).await {
            tracing::warn!(error = %e, action = %what, "activity row not written");
        }
    });
}

/// Why activity rows were not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A row does not fit the `activity` slice (the catalog changed): it never will.
    #[error("activity row does not fit the slice: {0}")]
    Unfit(String),
    /// ClickHouse did not take the batch: a retry may.
    #[error("activity rows not stored: {0}")]
    Store(String),
}

/// Writes activity rows `(tenant, row)` as one batch received at `now_ms`.
pub async fn write(
    catalog: &Catalog,
    inserter: &Inserter,
    rows: Vec<(String, Json)>,
    now_ms: i64,
) -> Result<(), WriteError> {
    let Some(slice) = catalog.slice(ADMIN_SLICE) else {
        // A custom catalog without the audit slice: nothing to write to.
        return Ok(());
    };
    let mut all = IngestBatch::default();
    for (tenant, value) in &rows {
        all.append(encode(slice, tenant, value, now_ms).map_err(WriteError::Unfit)?)
            .map_err(|e| WriteError::Unfit(e.to_string()))?;
    }
    insert(slice, inserter, all).await
}

/// One activity row as a batch, or why it does not fit the slice.
fn encode(
    slice: &logport_catalog::Slice,
    tenant: &str,
    value: &Json,
    now_ms: i64,
) -> Result<IngestBatch, String> {
    // A block per row: the tenant is a block's constant (activity rows are few).
    let mut block = IngestBlock::new(slice, tenant, now_ms).map_err(|e| e.to_string())?;
    let obj: Map<String, Json> = value
        .as_object()
        .cloned()
        .ok_or_else(|| "not a JSON object".to_string())?;
    let parsed = row_from_object(slice, &obj, &block.context(None), 1)
        .map_err(|e| format!("{}: {}", e.field.unwrap_or_default(), e.detail))?;
    block.push_row(slice, &parsed.values)?;
    // Common fields come first in catalog order: app_id, event_id, event_time.
    let time = match parsed.values.get(2) {
        Some(Value::DateTime(t)) => *t,
        _ => block.received_time(),
    };
    Ok(block.finish((time, time), true))
}

async fn insert(
    slice: &logport_catalog::Slice,
    inserter: &Inserter,
    all: IngestBatch,
) -> Result<(), WriteError> {
    if all.is_empty() {
        return Ok(());
    }
    inserter
        .insert(slice, all)
        .await
        .map_err(|e| WriteError::Store(e.to_string()))
}

/// How often the outbox is looked at.
const OUTBOX_POLL: Duration = Duration::from_secs(1);
/// How long a mover holds the rows it claimed.
const OUTBOX_LEASE_MS: i64 = 60_000;

/// Moves outbox rows into the `activity` slice, once. Returns how many moved.
///
/// A row that can never be written — its stored text is not JSON, or it does not fit
/// the slice — is set aside in the outbox (kept, with the reason, never claimed
/// again), counted in `logport_activity_rows_set_aside_total` and logged; the rows
/// around it move as usual. Rows ClickHouse did not take stay claimed until their
/// lease runs out, then are tried again.
pub async fn move_outbox(
    tokens: &dyn TokenStore,
    catalog: &Catalog,
    inserter: &Inserter,
    owner: &str,
    now_ms: i64,
) -> Result<usize, String> {
    let pending = tokens
        .claim_audit(owner, 500, OUTBOX_LEASE_MS, now_ms)
        .await
        .map_err(|e| e.to_string())?;
    if pending.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(pending.len());
    let mut all = IngestBatch::default();
    for p in pending {
        let encoded = match catalog.slice(ADMIN_SLICE) {
            // A custom catalog without the audit slice: nothing to write to.
            None => Ok(IngestBatch::default()),
            Some(slice) => p.row.and_then(|row| encode(slice, &p.tenant, &row, now_ms)),
        };
        match encoded {
            Ok(rows) => {
                // Every row was received now: one day.
                all.append(rows).map_err(|e| e.to_string())?;
                ids.push(p.id);
            }
            Err(reason) => {
                tokens
                    .set_aside_audit(owner, &p.id, &reason, now_ms)
                    .await
                    .map_err(|e| e.to_string())?;
                metrics::counter!("logport_activity_rows_set_aside_total").increment(1);
                tracing::error!(id = %p.id, tenant = %p.tenant, reason = %reason, "outbox activity row set aside");
            }
        }
    }
    if let Some(slice) = catalog.slice(ADMIN_SLICE) {
        insert(slice, inserter, all)
            .await
            .map_err(|e| e.to_string())?;
    }
    tokens
        .ack_audit(owner, &ids)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ids.len())
}

/// Moves the outbox into ClickHouse every second, for as long as the process runs.
pub fn spawn_outbox_mover(
    tokens: Arc<dyn TokenStore>,
    catalog: Arc<Catalog>,
    inserter: Arc<Inserter>,
    clock: Arc<dyn Clock>,
    owner: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match move_outbox(tokens.as_ref(), &catalog, &inserter, &owner, clock.now_ms()).await {
                Ok(0) => tokio::time::sleep(OUTBOX_POLL).await,
                Ok(n) => tracing::info!(rows = n, "outbox activity rows written"),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox activity rows not written; will retry");
                    tokio::time::sleep(OUTBOX_POLL * 5).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fit_the_activity_slice() {
        let catalog = Catalog::builtin().unwrap();
        let slice = catalog.slice(ADMIN_SLICE).unwrap();
        let actor = Actor {
            actor_type: "api_token",
            actor_id: "tok_0123456789abcdef".into(),
            actor_name: "ci \"loader\"".into(),
            token_id: "tok_0123456789abcdef".into(),
            source: "api",
            ip: "127.0.0.1".into(),
            user_agent: "curl/8\u{0}".into(),
        };
        let entry = Entry {
            action: "created",
            entity_type: "export",
            entity_id: "0123".into(),
            entity_name: "clicks".into(),
            app_id: 7,
            changes: json!({"status": [null, "queued"]}),
        };
        let value = row(&actor, &entry, uuid::Uuid::now_v7(), 1_800_000_000);
        let mut block = IngestBlock::new(slice, "acme", 1_800_000_000_005).unwrap();
        let ctx = block.context(None);
        let parsed = row_from_object(slice, value.as_object().unwrap(), &ctx, 1).unwrap();
        assert_eq!(parsed.values.len(), slice.fields.len());
        assert!(parsed.event_id_given);
        block.push_row(slice, &parsed.values).unwrap();
        assert_eq!(block.finish((1, 1), true).rows(), 1);
        for action in ["created", "updated", "deleted", "imported"] {
            let e = Entry {
                action,
                ..entry.clone()
            };
            let v = row(&actor, &e, uuid::Uuid::now_v7(), 1);
            assert!(row_from_object(slice, v.as_object().unwrap(), &ctx, 1).is_ok());
        }
    }
}
