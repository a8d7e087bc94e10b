//! Coalescing small ingest requests into larger ClickHouse INSERTs.
//!
//! ClickHouse wants few large inserts (every INSERT makes a part per partition);
//! trackers send many small requests. Each slice has a collector task that writes one
//! batch at a time: it takes the first waiting request, adds whatever else is
//! queued, and waits for more only until `max_wait` has passed since that first
//! request arrived (so requests that queued behind a running INSERT go out as soon
//! as it ends). A batch closes at `max_bytes` or `max_rows`, or before a request
//! for another partition. It is written by one checking INSERT ([`crate::insert`]),
//! and every request in it is acknowledged with that INSERT's outcome — only after
//! ClickHouse committed it.
//!
//! One batch at a time per slice is what the INSERT's fence asks for anyway; a fence
//! held by another replica (or by an INSERT still running for a process that died)
//! is waited out, up to `fence_wait`.
//!
//! Why a batch never spans partitions: all rows of one request share a
//! `received_time` (one day partition), and a batch keeps to one day, so one INSERT
//! writes one part and a request's rows are stored all or nothing (below ClickHouse's
//! `max_insert_block_size`, which batches stay under). On a cluster the Distributed
//! table's sharding key is the request (tenant and receive instant), so each
//! request's rows also share one shard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::batch::IngestBatch;
use crate::insert::Rows;
use crate::{Store, StoreError};

/// Batching bounds.
#[derive(Debug, Clone)]
pub struct InserterConfig {
    /// Longest a request waits for its batch to close (not counting the INSERT).
    pub max_wait: Duration,
    pub max_bytes: usize,
    pub max_rows: u64,
    /// Requests queued per slice before callers are told to back off.
    pub queue: usize,
    /// How long a batch waits for another writer's INSERT into the same table.
    pub fence_wait: Duration,
}

impl Default for InserterConfig {
    fn default() -> Self {
        InserterConfig {
            max_wait: Duration::from_millis(200),
            max_bytes: 32 << 20,
            max_rows: 1_000_000,
            queue: 1024,
            fence_wait: Duration::from_secs(60),
        }
    }
}

struct Pending {
    batch: IngestBatch,
    arrived: Instant,
    ack: oneshot::Sender<Result<(), StoreError>>,
}

/// The coalescing writer, shared by all ingest handlers.
pub struct Inserter {
    store: Store,
    cfg: InserterConfig,
    queues: Mutex<HashMap<String, mpsc::Sender<Pending>>>,
}

/// Why a batch could not even be queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Too many requests are waiting: the caller should answer 503 and retry later.
    #[error("too many ingest requests are waiting for ClickHouse")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Inserter {
    pub fn new(store: Store, cfg: InserterConfig) -> Arc<Inserter> {
        Arc::new(Inserter {
            store,
            cfg,
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Stores the rows whose events are not stored yet, possibly together with other
    /// requests' rows; returns once ClickHouse has committed them.
    pub async fn insert(
        &self,
        slice: &crate::Slice,
        batch: IngestBatch,
    ) -> Result<(), SubmitError> {
        if batch.rows.is_empty() {
            return Ok(());
        }
        let tx = self.queue(slice);
        let (ack, done) = oneshot::channel();
        let pending = Pending {
            batch,
            arrived: Instant::now(),
            ack,
        };
        tx.try_send(pending).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Busy,
            mpsc::error::TrySendError::Closed(_) => {
                SubmitError::Store(StoreError::Client("the insert queue stopped".into()))
            }
        })?;
        match done.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SubmitError::Store(StoreError::Client(
                "the insert queue dropped the request".into(),
            ))),
        }
    }

    fn queue(&self, slice: &crate::Slice) -> mpsc::Sender<Pending> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = queues.get(&slice.name) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(self.cfg.queue);
        tokio::spawn(collect(
            self.store.clone(),
            slice.clone(),
            self.cfg.clone(),
            rx,
        ));
        queues.insert(slice.name.clone(), tx.clone());
        tx
    }
}

async fn collect(
    store: Store,
    slice: crate::Slice,
    cfg: InserterConfig,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let deadline = first.arrived + cfg.max_wait;
        let day = first.batch.day;
        let mut group = vec![first];
        let (mut bytes, mut rows) = (group[0].batch.rows.len(), group[0].batch.rows.rows);
        while bytes < cfg.max_bytes && rows < cfg.max_rows {
            let next = match rx.try_recv() {
                Ok(p) => p,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    p = rx.recv() => match p { Some(p) => p, None => break },
                    _ = tokio::time::sleep_until(deadline) => break,
                },
            };
            let fits = next.batch.day == day
                && bytes + next.batch.rows.len() <= cfg.max_bytes
                && rows + next.batch.rows.rows <= cfg.max_rows;
            if !fits {
                carry = Some(next);
                break;
            }
            bytes += next.batch.rows.len();
            rows += next.batch.rows.rows;
            group.push(next);
        }
        let mut all = Rows::default();
        for p in &group {
            all.append(p.batch.rows.clone());
        }
        let result = insert_fenced(&store, &slice, &all, cfg.fence_wait).await;
        count_insert(&slice.name, group.len() as u64, rows, &result);
        if let Err(e) = &result {
            tracing::warn!(slice = %slice.name, requests = group.len(), rows, error = %e, "coalesced insert failed");
        } else {
            tracing::debug!(slice = %slice.name, requests = group.len(), rows, bytes, "coalesced insert committed");
        }
        for p in group {
            let _ = p.ack.send(result.clone());
        }
    }
}

/// [`Store::insert_new`], waiting out another writer's fence for up to `wait`.
async fn insert_fenced(
    store: &Store,
    slice: &crate::Slice,
    rows: &Rows,
    wait: Duration,
) -> Result<(), StoreError> {
    let give_up = Instant::now() + wait;
    let mut pause = Duration::from_millis(20);
    loop {
        match store.insert_new(slice, rows).await {
            Err(e) if e.is_fence_busy() && Instant::now() < give_up => {
                tracing::debug!(slice = %slice.name, "another insert into the table is running; waiting");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            r => return r,
        }
    }
}

/// Ingest metrics, per slice: committed rows, requests and INSERT statements
/// (`batches`: a coalesced batch is one INSERT for many requests), and failed ones.
fn count_insert(slice: &str, requests: u64, rows: u64, result: &Result<(), StoreError>) {
    let slice = slice.to_string();
    if result.is_ok() {
        metrics::counter!("logport_ingest_rows_total", "slice" => slice.clone()).increment(rows);
        metrics::counter!("logport_ingest_requests_total", "slice" => slice.clone())
            .increment(requests);
        metrics::counter!("logport_ingest_batches_total", "slice" => slice).increment(1);
    } else {
        metrics::counter!("logport_ingest_failed_batches_total", "slice" => slice).increment(1);
    }
}
