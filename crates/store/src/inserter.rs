//! Coalescing small ingest requests into larger ClickHouse INSERTs.
//!
//! ClickHouse wants few large inserts (every INSERT makes a part per partition);
//! trackers send many small requests. Each slice has a collector task: the first
//! waiting request opens a batch, which closes when it holds `max_bytes` or
//! `max_rows`, when `max_wait` has passed since it opened, or when a request for
//! another partition arrives. The batch is sent as one INSERT and every request in it
//! is acknowledged with the INSERT's outcome — only after ClickHouse committed it.
//!
//! Why the batch never spans partitions: an INSERT is atomic per partition only. All
//! rows of one request share a `received_time` (one day partition), and a batch keeps
//! to one day, so a request's rows are stored all or nothing, and a retry after a
//! failure cannot double them. On a cluster the Distributed table's sharding key is
//! the request (tenant and receive instant), so each request's rows also share one
//! shard and stay all or nothing there. Batches also stay under ClickHouse's
//! `max_insert_block_size` (1,048,576 rows) so the server does not split them.
//!
//! Requests larger than half a batch skip the queue: they are big enough already.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{Store, StoreError};

/// Batching bounds.
#[derive(Debug, Clone)]
pub struct InserterConfig {
    /// Longest a request waits for its batch to close (not counting the INSERT).
    pub max_wait: Duration,
    pub max_bytes: usize,
    pub max_rows: u64,
    /// INSERTs in flight per slice.
    pub concurrency: usize,
    /// Requests queued per slice before callers are told to back off.
    pub queue: usize,
}

impl Default for InserterConfig {
    fn default() -> Self {
        InserterConfig {
            max_wait: Duration::from_millis(200),
            max_bytes: 32 << 20,
            max_rows: 1_000_000,
            concurrency: 4,
            queue: 1024,
        }
    }
}

/// One request's rows: Native blocks written by [`Store::block`].
pub struct Batch {
    /// Pieces sent back to back ([`crate::NativeBlock::into_chunks`]).
    pub data: Vec<Bytes>,
    pub rows: u64,
    /// Day (Unix days) of the rows' `received_time`: a batch never mixes days.
    pub day: u32,
}

impl Batch {
    /// Bytes of the batch.
    pub fn len(&self) -> usize {
        self.data.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.data.iter().all(Bytes::is_empty)
    }
}

struct Pending {
    batch: Batch,
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

    /// Stores the rows, possibly together with other requests' rows; returns once
    /// ClickHouse has committed them.
    pub async fn insert(&self, slice: &crate::Slice, batch: Batch) -> Result<(), SubmitError> {
        if batch.rows == 0 {
            return Ok(());
        }
        if batch.len() >= self.cfg.max_bytes / 2 || batch.rows >= self.cfg.max_rows / 2 {
            let rows = batch.rows;
            let result = self.store.insert_native(slice, batch.data).await;
            count_insert(&slice.name, 1, rows, &result);
            result?;
            return Ok(());
        }
        let tx = self.queue(slice);
        let (ack, done) = oneshot::channel();
        tx.try_send(Pending { batch, ack }).map_err(|e| match e {
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
    let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let deadline = tokio::time::Instant::now() + cfg.max_wait;
        let day = first.batch.day;
        let mut bytes = first.batch.len();
        let mut rows = first.batch.rows;
        let mut group = vec![first];
        while bytes < cfg.max_bytes && rows < cfg.max_rows {
            let next = tokio::select! {
                p = rx.recv() => p,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            let Some(p) = next else { break };
            let fits = p.batch.day == day
                && bytes + p.batch.len() <= cfg.max_bytes
                && rows + p.batch.rows <= cfg.max_rows;
            if !fits {
                carry = Some(p);
                break;
            }
            bytes += p.batch.len();
            rows += p.batch.rows;
            group.push(p);
        }
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let store = store.clone();
        let slice = slice.clone();
        tokio::spawn(async move {
            // Blocks follow one another in one INSERT; nothing is copied.
            let data: Vec<Bytes> = group
                .iter()
                .flat_map(|p| p.batch.data.iter().cloned())
                .collect();
            let result = store.insert_native(&slice, data).await;
            count_insert(&slice.name, group.len() as u64, rows, &result);
            if let Err(e) = &result {
                tracing::warn!(slice = %slice.name, requests = group.len(), rows, error = %e, "coalesced insert failed");
            } else {
                tracing::debug!(slice = %slice.name, requests = group.len(), rows, bytes, "coalesced insert committed");
            }
            for p in group {
                let _ = p.ack.send(result.clone());
            }
            drop(permit);
        });
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
