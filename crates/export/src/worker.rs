//! The worker pool: claim, run under a heartbeat, then succeed, retry or fail.
//!
//! Each worker task loops: claim the next runnable job under a lease (the tenant
//! running the fewest exports goes first, then by turns: see `JobStore::claim`), run the attempt while a sibling task heartbeats (extending the lease,
//! publishing progress, and learning of cancellation or a lost lease), then record the
//! outcome. Two background tasks keep the queue healthy: the reaper requeues jobs
//! whose worker died (lease ran out), the janitor deletes expired files. Jobs left
//! queued by an earlier process are simply claimed. On shutdown a worker stops
//! claiming, lets its running export finish within the grace period, and otherwise
//! releases it to the queue without spending an attempt.
//!
//! Every destructive step is fenced like a write: files are removed only after the job
//! store recorded the state that makes them dead (a fenced succeed, retry or fail, an
//! expiry, a cancel the store confirms), never on a worker's own belief. A worker that
//! lost its lease removes nothing; the orphan sweep, which decides from the store,
//! removes what its attempt left.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use logport_queue::{
    ClaimOptions, Clock, Heartbeat, Job, JobError, JobStatus, JobStore, Lease, Progress,
};
use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::files::{self, Files};
use crate::pipeline::{Attempt, Counters, Exporter, Published};
use crate::{failpoint, ExportError};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub workers: usize,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    pub heartbeat: Duration,
    /// How often an idle worker looks for work when not woken.
    pub poll: Duration,
    /// How long finished files are kept.
    pub ttl: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Most exports one tenant may have running at once.
    pub max_running_per_tenant: u32,
    /// How long a running export may take to finish after shutdown was asked for.
    pub grace: Duration,
    /// How often the janitor looks for expired files.
    pub janitor_every: Duration,
    /// How often the object store is swept for files no job owns any more.
    pub orphan_sweep_every: Duration,
    /// Prefix of lease owner names, unique per process.
    pub owner: String,
}

/// The running pool.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
}

/// Why an attempt was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Canceled,
    LeaseLost,
    Shutdown,
}

/// The first [`Stop`] of an attempt, shared by the tasks that watch it.
#[derive(Default)]
struct StopReason(Mutex<Option<Stop>>);

impl StopReason {
    /// Keeps the first reason given.
    fn set(&self, why: Stop) {
        if let Ok(mut s) = self.0.lock() {
            s.get_or_insert(why);
        }
    }

    fn get(&self) -> Option<Stop> {
        self.0.lock().ok().and_then(|s| *s)
    }
}

/// How an attempt ended, as the `outcome` label of `logport_export_run_seconds` and
/// `logport_export_attempts_total` (docs/operations.md lists the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptOutcome {
    Succeeded,
    /// Requeued with a backoff.
    Retry,
    Failed,
    Canceled,
    /// Given back to the queue at shutdown, without spending an attempt.
    Released,
    LeaseLost,
    /// The outcome could not be recorded; the lease will run out.
    Error,
}

impl AttemptOutcome {
    fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Canceled => "canceled",
            AttemptOutcome::Released => "released",
            AttemptOutcome::LeaseLost => "lease_lost",
            AttemptOutcome::Error => "error",
        }
    }
}

/// The fenced step that found the lease gone.
#[derive(Debug, Clone, Copy)]
enum Fence {
    Succeed,
    /// The heartbeat learnt of a cancel or a lost lease.
    Heartbeat,
    /// A part's record in the job store.
    Write,
    Retry,
    Fail,
}

impl Fence {
    /// The `stage` field of the "lease lost" log line.
    fn as_str(self) -> &'static str {
        match self {
            Fence::Succeed => "succeed",
            Fence::Heartbeat => "heartbeat",
            Fence::Write => "write",
            Fence::Retry => "retry",
            Fence::Fail => "fail",
        }
    }
}

/// An attempt's outcome and, when it published, its totals.
type Ended = (AttemptOutcome, Option<Progress>);

impl Workers {
    pub fn spawn(
        jobs: Arc<dyn JobStore>,
        exporter: Arc<Exporter>,
        clock: Arc<dyn Clock>,
        cfg: WorkerConfig,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Workers {
        let mut handles = Vec::new();
        for i in 0..cfg.workers {
            let w = Worker {
                owner: format!("{}/w{i}", cfg.owner),
                jobs: Arc::clone(&jobs),
                exporter: Arc::clone(&exporter),
                clock: Arc::clone(&clock),
                cfg: cfg.clone(),
            };
            let wake = Arc::clone(&wake);
            let shutdown = shutdown.clone();
            handles.push(tokio::spawn(async move { w.run(wake, shutdown).await }));
        }
        handles.push(tokio::spawn(reaper(
            Arc::clone(&jobs),
            Arc::clone(&clock),
            cfg.lease / 3,
            shutdown.clone(),
        )));
        handles.push(tokio::spawn(janitor(
            Arc::clone(&jobs),
            exporter.files.clone(),
            clock,
            cfg.janitor_every,
            shutdown.clone(),
        )));
        handles.push(tokio::spawn(orphan_sweeper(
            jobs,
            exporter.files.clone(),
            cfg.orphan_sweep_every,
            shutdown,
        )));
        Workers { handles }
    }

    /// Waits for every task to end (after shutdown was signalled).
    pub async fn join(self) {
        for h in self.handles {
            let _ = h.await;
        }
    }
}

async fn reaper(
    jobs: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match jobs.reap_expired_leases(clock.now_ms()).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("logport_export_leases_expired_total").increment(n);
                tracing::warn!(jobs = n, "requeued jobs whose lease expired")
            }
            Err(e) => tracing::warn!(error = %e, "lease reaper failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Marks exports past their TTL expired, then deletes their files: the state first,
/// so no client is ever shown a `succeeded` job whose files are gone. Files a failed
/// deletion leaves behind belong to an expired job, which the orphan sweep removes.
pub async fn expire_due(jobs: &dyn JobStore, files: &Files, now: i64) -> Result<u64, ExportError> {
    let mut expired = 0;
    loop {
        let due = jobs.due_for_expiry(now, 100).await?;
        if due.is_empty() {
            return Ok(expired);
        }
        for job in due {
            if !jobs.mark_expired(&job.id, now).await? {
                continue;
            }
            expired += 1;
            metrics::counter!("logport_exports_expired_total").increment(1);
            files
                .delete_prefix(&files::job_prefix(&job.tenant, &job.id))
                .await?;
            tracing::info!(job_id = %job.id, tenant = %job.tenant, "export files expired");
        }
    }
}

async fn janitor(
    jobs: Arc<dyn JobStore>,
    files: Files,
    clock: Arc<dyn Clock>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(e) = expire_due(jobs.as_ref(), &files, clock.now_ms()).await {
            tracing::warn!(error = %e, "janitor failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Deletes attempt directories no job will ever serve: attempts that were retried,
/// abandoned by a crashed worker or by one that lost its lease, of failed, canceled or
/// expired jobs, or of jobs the store does not know. Lists first and reads each job
/// after: that read is the fence. An attempt listed before it and neither running nor
/// published at it never will be (attempt numbers only grow, and every write of an
/// attempt is fenced by its number), and an attempt that starts after the listing is
/// not in it.
pub async fn sweep_orphans(jobs: &dyn JobStore, files: &Files) -> Result<u64, ExportError> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_job: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    for key in files.list("exports").await? {
        let segs: Vec<&str> = key.split('/').collect();
        if let [_, tenant, job, attempt, _file] = segs.as_slice() {
            if let Ok(a) = attempt.parse::<u32>() {
                by_job
                    .entry((tenant.to_string(), job.to_string()))
                    .or_default()
                    .insert(a);
            }
        }
    }
    let mut removed = 0;
    for ((tenant, job_id), attempts) in by_job {
        let job = jobs.get(&tenant, &job_id).await?;
        let keep: Option<u32> = match &job {
            Some(j) if j.status == JobStatus::Succeeded => j
                .manifest_key
                .as_deref()
                .and_then(|k| k.rsplit('/').nth(1))
                .and_then(|a| a.parse().ok()),
            Some(j) if j.status == JobStatus::Running => Some(j.attempts),
            _ => None,
        };
        for attempt in attempts.into_iter().filter(|a| Some(*a) != keep) {
            removed += files
                .delete_prefix(&files::attempt_prefix(&tenant, &job_id, attempt))
                .await?;
            tracing::info!(job_id = %job_id, %tenant, attempt, "removed orphaned export files");
        }
    }
    Ok(removed)
}

async fn orphan_sweeper(
    jobs: Arc<dyn JobStore>,
    files: Files,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(e) = sweep_orphans(jobs.as_ref(), &files).await {
            tracing::warn!(error = %e, "orphan sweep failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

struct Worker {
    owner: String,
    jobs: Arc<dyn JobStore>,
    exporter: Arc<Exporter>,
    clock: Arc<dyn Clock>,
    cfg: WorkerConfig,
}

impl Worker {
    fn claim_options(&self) -> ClaimOptions {
        ClaimOptions {
            lease_ms: self.cfg.lease.as_millis() as i64,
            max_running_per_tenant: self.cfg.max_running_per_tenant,
        }
    }

    async fn run(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self
                .jobs
                .claim(&self.owner, &self.claim_options(), self.clock.now_ms())
                .await
            {
                Ok(Some(job)) => {
                    // Queue wait: from the request to this claim (retries included,
                    // with their backoff).
                    let waited = (self.clock.now_ms() - job.created_at).max(0) as f64 / 1000.0;
                    metrics::histogram!("logport_export_queue_wait_seconds").record(waited);
                    failpoint("after_claim").await;
                    let span = tracing::info_span!("export", job_id = %job.id, tenant = %job.tenant, slice = %job.slice, attempt = job.attempts);
                    self.run_job(job, &shutdown).instrument(span).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(self.cfg.poll) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.cfg.poll) => {}
                    }
                }
            }
        }
    }

    /// Runs one attempt and records its metrics: run time and count by outcome, and
    /// the rows, bytes and parts of a published export.
    async fn run_job(&self, job: Job, shutdown: &CancellationToken) {
        let started = std::time::Instant::now();
        let slice = job.slice.clone();
        let (outcome, published) = self.attempt(job, shutdown).await;
        let outcome = outcome.label();
        metrics::histogram!("logport_export_run_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("logport_export_attempts_total", "outcome" => outcome).increment(1);
        if let Some(p) = published {
            metrics::counter!("logport_export_rows_total", "slice" => slice.clone())
                .increment(p.rows);
            metrics::counter!("logport_export_bytes_total", "slice" => slice.clone())
                .increment(p.bytes);
            metrics::counter!("logport_export_parts_total", "slice" => slice)
                .increment(u64::from(p.parts));
        }
    }

    /// One attempt: runs the export while the heartbeat and the shutdown grace watch
    /// it, then records how it ended.
    async fn attempt(&self, job: Job, shutdown: &CancellationToken) -> Ended {
        let Some(lease) = job.lease() else {
            tracing::error!("claimed job has no lease owner");
            return (AttemptOutcome::Error, None);
        };
        tracing::info!("export started");
        let cancel = CancellationToken::new();
        let stop = Arc::new(StopReason::default());
        let counters = Arc::new(Counters::default());
        let heartbeat = self.spawn_heartbeat(&lease, &cancel, &stop, &counters);
        let grace = self.spawn_grace(shutdown, &cancel, &stop);

        let result = self
            .exporter
            .run(Attempt {
                job: &job,
                lease: &lease,
                jobs: self.jobs.as_ref(),
                cancel: &cancel,
                counters: &counters,
            })
            .await;
        let stopped_by = stop.get();
        cancel.cancel();
        let _ = heartbeat.await;
        let _ = grace.await;
        self.record(&job, &lease, result, stopped_by).await
    }

    /// Extends the lease while the attempt runs, publishing its progress; stops the
    /// attempt when the store says the job was canceled or the lease is lost.
    fn spawn_heartbeat(
        &self,
        lease: &Lease,
        cancel: &CancellationToken,
        stop: &Arc<StopReason>,
        counters: &Arc<Counters>,
    ) -> JoinHandle<()> {
        let jobs = Arc::clone(&self.jobs);
        let clock = Arc::clone(&self.clock);
        let lease = lease.clone();
        let cancel = cancel.clone();
        let stop = Arc::clone(stop);
        let counters = Arc::clone(counters);
        let every = self.cfg.heartbeat;
        let lease_ms = self.cfg.lease.as_millis() as i64;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                match jobs
                    .heartbeat(&lease, counters.progress(), lease_ms, clock.now_ms())
                    .await
                {
                    Ok(Heartbeat::Held) => {}
                    Ok(Heartbeat::Canceled) => {
                        stop.set(Stop::Canceled);
                        cancel.cancel();
                    }
                    Ok(Heartbeat::Lost) => {
                        stop.set(Stop::LeaseLost);
                        cancel.cancel();
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        })
    }

    /// After shutdown and the grace period, stops the attempt so the job goes back.
    fn spawn_grace(
        &self,
        shutdown: &CancellationToken,
        cancel: &CancellationToken,
        stop: &Arc<StopReason>,
    ) -> JoinHandle<()> {
        let shutdown = shutdown.clone();
        let cancel = cancel.clone();
        let stop = Arc::clone(stop);
        let grace = self.cfg.grace;
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                    stop.set(Stop::Shutdown);
                    cancel.cancel();
                }
            }
        })
    }

    /// Records how the attempt ended. Files are removed only after a fenced write to
    /// the job store recorded the state that makes them dead (succeed, retry, fail),
    /// or the store confirmed that this very attempt was canceled. A worker whose
    /// fence failed removes nothing: what its attempt left, the orphan sweep removes
    /// once the store says so.
    async fn record(
        &self,
        job: &Job,
        lease: &Lease,
        result: Result<Published, ExportError>,
        stopped_by: Option<Stop>,
    ) -> Ended {
        let now = self.clock.now_ms();
        match result {
            Ok(done) => self.record_success(job, lease, done, now).await,
            Err(ExportError::Canceled) => match stopped_by {
                Some(Stop::Shutdown) => match self.jobs.release(lease, now).await {
                    Ok(_) => {
                        tracing::info!("export released to the queue at shutdown");
                        (AttemptOutcome::Released, None)
                    }
                    Err(e) => unrecorded(e),
                },
                // Canceled or lost, as the heartbeat learnt: the store is asked again
                // all the same, and only a job it says is canceled loses its files.
                _ => self.fence_failed(job, lease, Fence::Heartbeat).await,
            },
            Err(ExportError::LeaseLost) => self.fence_failed(job, lease, Fence::Write).await,
            Err(e) if e.is_retryable() => self.record_retry(job, lease, e, now).await,
            Err(e) => self.record_failure(job, lease, e, now).await,
        }
    }

    /// Publishes the attempt's manifest; earlier attempts' files go.
    async fn record_success(&self, job: &Job, lease: &Lease, done: Published, now: i64) -> Ended {
        failpoint("before_commit").await;
        let expires = now + self.cfg.ttl.as_millis() as i64;
        match self
            .jobs
            .succeed(lease, &done.manifest_key, done.progress, expires, now)
            .await
        {
            Ok(true) => {
                tracing::info!(
                    rows = done.progress.rows,
                    bytes = done.progress.bytes,
                    parts = done.progress.parts,
                    "export succeeded"
                );
                self.remove_other_attempts(job, lease.attempt).await;
                (AttemptOutcome::Succeeded, Some(done.progress))
            }
            Ok(false) => self.fence_failed(job, lease, Fence::Succeed).await,
            Err(e) => unrecorded(e),
        }
    }

    /// Requeues the job after a backoff, or fails it after its last attempt.
    async fn record_retry(&self, job: &Job, lease: &Lease, e: ExportError, now: i64) -> Ended {
        let delay = backoff(&self.cfg, lease.attempt);
        match self
            .jobs
            .retry(lease, &job_error(&e), now + delay.as_millis() as i64, now)
            .await
        {
            Ok(JobStatus::Failed) => {
                tracing::error!(error = %e, "export failed after its last attempt");
                self.remove_files(&files::job_prefix(&job.tenant, &job.id))
                    .await;
                (AttemptOutcome::Failed, None)
            }
            Ok(JobStatus::Queued) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "export attempt failed; will retry");
                self.remove_files(&files::attempt_prefix(&job.tenant, &job.id, lease.attempt))
                    .await;
                (AttemptOutcome::Retry, None)
            }
            // The fence failed: the job is not this attempt's any more.
            Ok(_) => self.fence_failed(job, lease, Fence::Retry).await,
            Err(q) => unrecorded(q),
        }
    }

    /// Fails the job for good.
    async fn record_failure(&self, job: &Job, lease: &Lease, e: ExportError, now: i64) -> Ended {
        match self.jobs.fail(lease, &job_error(&e), now).await {
            Ok(true) => {
                tracing::error!(error = %e, code = e.code(), "export failed");
                self.remove_files(&files::job_prefix(&job.tenant, &job.id))
                    .await;
                (AttemptOutcome::Failed, None)
            }
            Ok(false) => self.fence_failed(job, lease, Fence::Fail).await,
            Err(q) => unrecorded(q),
        }
    }

    /// A fenced write failed, or the heartbeat stopped the attempt: the store says
    /// why. A job canceled while this attempt held it (cancel or `DELETE`) loses every
    /// file, including what this attempt wrote after the canceler removed the rest.
    /// Any other answer means the lease is gone (reaped, another worker runs or ran
    /// the job): nothing is removed, since the files under the job may be the new
    /// holder's, and this attempt's own are the orphan sweep's to judge.
    async fn fence_failed(&self, job: &Job, lease: &Lease, stage: Fence) -> Ended {
        let now = match self.jobs.get(&job.tenant, &job.id).await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the job after its fence failed; no files removed");
                return (AttemptOutcome::LeaseLost, None);
            }
        };
        let canceled_here = now.as_ref().is_some_and(|j| {
            j.status == JobStatus::Canceled
                && j.attempts == lease.attempt
                && j.lease_owner.as_deref() == Some(lease.owner.as_str())
        });
        if canceled_here {
            tracing::info!("export canceled");
            self.remove_files(&files::job_prefix(&job.tenant, &job.id))
                .await;
            return (AttemptOutcome::Canceled, None);
        }
        tracing::warn!(
            stage = stage.as_str(),
            status = now.as_ref().map_or("unknown", |j| j.status.as_str()),
            attempts = now.as_ref().map_or(0, |j| j.attempts),
            "lease lost; attempt abandoned, no files removed"
        );
        (AttemptOutcome::LeaseLost, None)
    }

    /// Earlier attempts' files are never served; remove them once one attempt won
    /// (the succeed that published this attempt is the fence).
    async fn remove_other_attempts(&self, job: &Job, published: u32) {
        for attempt in 1..published {
            self.remove_files(&files::attempt_prefix(&job.tenant, &job.id, attempt))
                .await;
        }
    }

    /// Best effort: what is left behind, the orphan sweep removes later.
    async fn remove_files(&self, prefix: &str) {
        if let Err(e) = self.exporter.files.delete_prefix(prefix).await {
            tracing::warn!(error = %e, %prefix, "could not remove export files");
        }
    }
}

/// What clients see of a failed attempt.
fn job_error(e: &ExportError) -> JobError {
    JobError {
        code: e.code().into(),
        message: e.to_string(),
    }
}

/// The job store did not take the outcome: the lease will expire and the reaper
/// will requeue the job.
fn unrecorded(e: impl std::fmt::Display) -> Ended {
    tracing::error!(error = %e, "could not record the export outcome");
    (AttemptOutcome::Error, None)
}

/// Exponential backoff with jitter: base·2^(attempt−1), capped, scaled by 0.5–1.0.
pub fn backoff(cfg: &WorkerConfig, attempt: u32) -> Duration {
    let exp = cfg
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(cfg.backoff_max);
    capped.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WorkerConfig {
        WorkerConfig {
            workers: 1,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_millis(500),
            ttl: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
            max_running_per_tenant: 4,
            grace: Duration::from_secs(10),
            janitor_every: Duration::from_secs(60),
            orphan_sweep_every: Duration::from_secs(3600),
            owner: "t".into(),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let c = cfg();
        for (attempt, full) in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (30, 60)] {
            for _ in 0..50 {
                let d = backoff(&c, attempt);
                let full = Duration::from_secs(full);
                assert!(d <= full && d >= full / 2, "attempt {attempt}: {d:?}");
            }
        }
    }
}
