//! Ingest writes: every event stored once, whatever the retries, replicas and crashes.
//!
//! **The rule.** Two rows of a tenant's slice are the same event when they agree on
//! the slice's dedup key ([`Slice::dedup_key`]: `app_id`, `event_time`, the sort-key
//! fields and `event_id`). A row whose event is already stored is not written again;
//! rows repeated inside one batch are written once. Retries, overlapping re-sends
//! and answers lost after a commit therefore never double an event, and a batch
//! that overlaps stored rows still stores every new one.
//!
//! **How.** One statement per batch both checks and writes, so nothing can slip in
//! between: the batch travels as ClickHouse *external data* (a temporary table named
//! `incoming`, sent in Native form in the same HTTP request) and
//!
//! ```sql
//! INSERT INTO t (…) SELECT … FROM incoming
//! WHERE (tenant_id, <dedup key>) NOT IN (
//!     SELECT tenant_id, <dedup key> FROM t
//!     PREWHERE event_id IN (SELECT event_id FROM incoming)
//!     WHERE tenant_id IN (<the batch's tenants>) AND event_time BETWEEN <min> AND <max>
//!       AND (tenant_id, app_id, toDate(event_time), <sort key>) IN (SELECT … FROM incoming))
//! LIMIT 1 BY tenant_id, <dedup key>
//! ```
//!
//! The `IN` over the primary-key prefix and the time range let ClickHouse read only
//! the granules where a copy could be; of those it reads `event_id` alone first
//! (`PREWHERE`) and the rest only for ids the batch carries, which are few. So the
//! check costs what the batch's keys span: little for rows that arrive in time
//! order, a scan of the `event_id`s of the days and sort keys touched for a batch
//! spread over many (bench/results.md measures both).
//!
//! **The fence.** Two such statements for one table must not run at once (each would
//! miss the other's rows). Every ingest INSERT into a table carries the same
//! `query_id`, and ClickHouse refuses a query whose id is already running (code
//! 216): that serialises writers across every replica talking to this server, and
//! also an INSERT still running for a client or process that has gone away — the next
//! writer waits for it and then sees its rows. (The inserter retries on 216.) Every
//! replica must therefore send ingest to the same ClickHouse server: the configured
//! URL, which on a cluster is the Distributed tables' initiator.
//!
//! A statement that failed may have stored some rows (a batch over ClickHouse's
//! block size is written as several parts): retrying it stores the rest, never a
//! row twice.

use std::time::Instant;

use bytes::Bytes;
use logport_catalog::TENANT_COLUMN;

use crate::batch::{IngestBatch, IngestBlock};
use crate::observe::record;
use crate::sql::{ident, quote_string};
use crate::{Slice, Store, StoreError, RECEIVED_MS_COLUMN};

/// Rows to store: Native blocks ([`crate::batch::IngestBlock`]), with what the
/// duplicate check needs to know about them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows {
    /// Native blocks sent back to back.
    pub(crate) data: Vec<Bytes>,
    pub(crate) rows: u64,
    /// The tenants whose rows the blocks hold.
    pub(crate) tenants: Vec<String>,
    /// Earliest and latest `event_time` of the rows (Unix seconds).
    pub(crate) event_times: (u32, u32),
    /// No `event_id` appears twice among the rows, so none can repeat another row of
    /// the batch and the statement skips that check (`LIMIT 1 BY`), which costs about
    /// a tenth of an INSERT (bench/results.md).
    pub(crate) distinct_ids: bool,
}

impl Rows {
    /// Bytes of the blocks.
    pub(crate) fn len(&self) -> usize {
        self.data.iter().map(Bytes::len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds another batch's rows after these.
    pub(crate) fn append(&mut self, other: Rows) {
        if other.rows == 0 {
            return;
        }
        // Two batches may share ids: only a lone batch vouches for its own.
        (self.event_times, self.distinct_ids) = if self.rows == 0 {
            (other.event_times, other.distinct_ids)
        } else {
            (
                (
                    self.event_times.0.min(other.event_times.0),
                    self.event_times.1.max(other.event_times.1),
                ),
                false,
            )
        };
        self.rows += other.rows;
        self.data.extend(other.data);
        for t in other.tenants {
            if !self.tenants.contains(&t) {
                self.tenants.push(t);
            }
        }
    }
}

impl Store {
    /// Stores the batch's rows whose events are not stored yet (see the module doc),
    /// in one fenced statement, waiting for no other writer. Returns once ClickHouse
    /// has committed them. Ingest goes through the coalescing [`crate::Inserter`].
    pub async fn insert(&self, slice: &Slice, batch: &IngestBatch) -> Result<(), StoreError> {
        self.insert_new(slice, &batch.rows).await
    }

    /// Stores the rows whose events are not stored yet (see the module doc), in one
    /// fenced statement. Returns once ClickHouse has committed them. Fails (with
    /// `is_fence_busy`) while another writer of this table is running.
    pub(crate) async fn insert_new(&self, slice: &Slice, rows: &Rows) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let r = self.send_insert_new(slice, rows).await;
        record("insert", started, &r);
        r
    }

    /// The `query_id` every ingest INSERT into the slice's table carries: the fence.
    pub(crate) fn insert_fence(&self, slice: &Slice) -> String {
        format!("logport-ingest-{}-{}", self.database, slice.name)
    }

    async fn send_insert_new(&self, slice: &Slice, rows: &Rows) -> Result<(), StoreError> {
        let structure = IngestBlock::new(slice, "", 0)?.structure();
        let sql = insert_new_sql(
            &self.table(&slice.name),
            slice,
            rows,
            self.cluster.is_some(),
        );
        // The external table travels as one multipart/form-data field. The boundary
        // is random (122 bits): the binary blocks cannot contain it by accident.
        let boundary = format!("logport-{}", uuid::Uuid::new_v4().simple());
        let head = Bytes::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"incoming\"; \
             filename=\"incoming\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let length = head.len() + rows.len() + tail.len();
        let parts: Vec<Result<Bytes, std::io::Error>> = std::iter::once(head)
            .chain(rows.data.iter().cloned())
            .chain(std::iter::once(tail))
            .map(Ok)
            .collect();
        let mut params: Vec<(&str, String)> = vec![
            ("query", sql),
            ("query_id", self.insert_fence(slice)),
            ("incoming_format", "Native".into()),
            ("incoming_structure", structure),
        ];
        if self.cluster.is_some() {
            // The answer comes once every shard has committed its rows.
            params.push(("insert_distributed_sync", "1".into()));
        }
        let mut url = reqwest::Url::parse(&self.url)
            .map_err(|e| StoreError::Client(format!("ClickHouse URL {}: {e}", self.url)))?;
        url.query_pairs_mut().extend_pairs(&params);
        let mut req = self
            .http
            .post(url)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("Content-Length", length.to_string())
            .body(reqwest::Body::wrap_stream(futures::stream::iter(parts)));
        if let Some(user) = &self.user {
            req = req.basic_auth(user, self.password.as_deref());
        }
        let resp = req.send().await.map_err(http_error)?;
        let status = resp.status();
        let text = resp.text().await.map_err(http_error)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(StoreError::from_exception_text(&text))
        }
    }
}

fn http_error(e: reqwest::Error) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.is_connect() || e.is_request() || e.is_body() {
        StoreError::Unreachable(e.to_string())
    } else {
        StoreError::Client(e.to_string())
    }
}

/// The checking INSERT of the module doc. `global`: the table is Distributed, so the
/// sets built from `incoming` (which only this server has) are shipped to the shards.
fn insert_new_sql(table: &str, slice: &Slice, rows: &Rows, global: bool) -> String {
    let mut columns = vec![ident(TENANT_COLUMN)];
    columns.extend(slice.fields.iter().map(|f| ident(&f.name)));
    columns.push(ident(RECEIVED_MS_COLUMN));
    // The rows as the table types them: enums travel as their integers.
    let mut typed = vec![ident(TENANT_COLUMN)];
    typed.extend(slice.fields.iter().map(|f| {
        if f.ty.enum_variants().is_some() {
            format!("CAST({0} AS {1}) AS {0}", ident(&f.name), f.ty)
        } else {
            ident(&f.name)
        }
    }));
    typed.push(ident(RECEIVED_MS_COLUMN));
    let source = format!("(SELECT {} FROM incoming)", typed.join(", "));
    let columns = columns.join(", ");
    let mut key = vec![ident(TENANT_COLUMN)];
    key.extend(slice.dedup_key().into_iter().map(ident));
    let key = key.join(", ");
    let mut prefix = vec![
        ident(TENANT_COLUMN),
        ident("app_id"),
        format!("toDate({})", ident("event_time")),
    ];
    prefix.extend(slice.sort_key.iter().map(|k| ident(k)));
    let prefix = prefix.join(", ");
    let tenants = rows
        .tenants
        .iter()
        .map(|t| quote_string(t))
        .collect::<Vec<_>>()
        .join(", ");
    let in_ = if global { "GLOBAL IN" } else { "IN" };
    let (min, max) = rows.event_times;
    let once = if rows.distinct_ids {
        String::new()
    } else {
        format!(" LIMIT 1 BY {key}")
    };
    format!(
        "INSERT INTO {table} ({columns}) SELECT {columns} FROM {source} \
         WHERE ({key}) NOT IN (SELECT {key} FROM {table} \
         PREWHERE {id} {in_} (SELECT {id} FROM incoming) \
         WHERE {tenant} IN ({tenants}) \
         AND {time} >= toDateTime({min}) AND {time} <= toDateTime({max}) \
         AND ({prefix}) {in_} (SELECT {prefix} FROM {source})){once}",
        tenant = ident(TENANT_COLUMN),
        time = ident("event_time"),
        id = ident("event_id"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use logport_catalog::Catalog;

    #[test]
    fn the_check_names_the_whole_dedup_key_and_the_primary_key_prefix() {
        let catalog = Catalog::builtin().unwrap();
        let clicks = catalog.slice("clicks").unwrap();
        let rows = Rows {
            tenants: vec!["acme".into(), "it's".into()],
            event_times: (10, 20),
            ..Rows::default()
        };
        let distinct = Rows {
            distinct_ids: true,
            ..rows.clone()
        };
        assert!(!insert_new_sql("`db`.`clicks`", clicks, &distinct, false).contains("LIMIT"));
        let sql = insert_new_sql("`db`.`clicks`", clicks, &rows, false);
        assert!(sql.starts_with("INSERT INTO `db`.`clicks` (`tenant_id`, `app_id`"));
        assert!(sql.contains(
            "WHERE (`tenant_id`, `app_id`, `event_time`, `campaign_id`, `event_id`) NOT IN \
             (SELECT `tenant_id`, `app_id`, `event_time`, `campaign_id`, `event_id` FROM `db`.`clicks`"
        ));
        assert!(sql.contains("`tenant_id` IN ('acme', 'it\\'s')"));
        assert!(sql.contains("`event_time` >= toDateTime(10) AND `event_time` <= toDateTime(20)"));
        assert!(
            sql.contains("(`tenant_id`, `app_id`, toDate(`event_time`), `campaign_id`) IN (SELECT")
        );
        assert!(sql.ends_with(
            "LIMIT 1 BY `tenant_id`, `app_id`, `event_time`, `campaign_id`, `event_id`"
        ));
        assert!(!sql.contains("GLOBAL"));
        // Enums travel as Int8 and are typed again before anything compares them.
        let postbacks = catalog.slice("api_postbacks").unwrap();
        let sql = insert_new_sql("`db`.`api_postbacks`", postbacks, &rows, false);
        assert!(
            sql.contains("CAST(`platform` AS Enum8('unknown' = 0,"),
            "{sql}"
        );
        let global = insert_new_sql("`db`.`clicks`", clicks, &rows, true);
        assert_eq!(global.matches("GLOBAL IN").count(), 2);
    }

    #[test]
    fn rows_append_keeps_tenants_once_and_widens_the_time_range() {
        let mut a = Rows {
            data: vec![Bytes::from_static(b"ab")],
            rows: 2,
            tenants: vec!["x".into()],
            event_times: (5, 9),
            distinct_ids: true,
        };
        let mut lone = Rows::default();
        lone.append(a.clone());
        assert!(lone.distinct_ids, "a lone batch keeps its word");
        a.append(Rows {
            data: vec![Bytes::from_static(b"c")],
            rows: 1,
            tenants: vec!["x".into(), "y".into()],
            event_times: (1, 7),
            distinct_ids: true,
        });
        assert!(!a.distinct_ids, "two batches may share ids");
        assert_eq!(a.rows, 3);
        assert_eq!(a.len(), 3);
        assert_eq!(a.tenants, ["x", "y"]);
        assert_eq!(a.event_times, (1, 9));
        let mut empty = Rows::default();
        empty.append(a.clone());
        assert_eq!(
            empty.event_times,
            (1, 9),
            "an empty set takes the other's range"
        );
    }
}
