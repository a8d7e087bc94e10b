//! The worker pool: claim, run under a heartbeat, then succeed, retry or fail.
//!
//! Each worker task loops: claim the next runnable job under a lease, run the attempt
//! while a sibling task heartbeats (extending the lease, publishing progress, and
//! learning of cancellation or a lost lease), then record the outcome. A reaper
//! requeues jobs whose worker died (lease ran out). Jobs left queued by an earlier
//! process are simply claimed.

use std::sync::Arc;
use std::time::Duration;

use logport_queue::{now_ms, Heartbeat, Job, JobError, JobStatus, JobStore};
use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::pipeline::{Attempt, Counters, Exporter};
use crate::ExportError;

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
    /// Prefix of lease owner names, unique per process.
    pub owner: String,
}

/// The running pool.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn spawn(
        jobs: Arc<dyn JobStore>,
        exporter: Arc<Exporter>,
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
                cfg: cfg.clone(),
            };
            let wake = Arc::clone(&wake);
            let shutdown = shutdown.clone();
            handles.push(tokio::spawn(async move { w.run(wake, shutdown).await }));
        }
        let reaper_jobs = Arc::clone(&jobs);
        let every = cfg.lease / 3;
        handles.push(tokio::spawn(async move {
            loop {
                match reaper_jobs.reap_expired_leases(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(jobs = n, "requeued jobs whose lease expired"),
                    Err(e) => tracing::warn!(error = %e, "lease reaper failed"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        }));
        Workers { handles }
    }

    /// Waits for every worker to finish its current job (after shutdown was signalled).
    pub async fn join(self) {
        for h in self.handles {
            let _ = h.await;
        }
    }
}

struct Worker {
    owner: String,
    jobs: Arc<dyn JobStore>,
    exporter: Arc<Exporter>,
    cfg: WorkerConfig,
}

impl Worker {
    async fn run(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let lease_ms = self.cfg.lease.as_millis() as i64;
        while !shutdown.is_cancelled() {
            match self.jobs.claim(&self.owner, lease_ms, now_ms()).await {
                Ok(Some(job)) => {
                    let span = tracing::info_span!("export", job_id = %job.id, tenant = %job.tenant, slice = %job.slice, attempt = job.attempts);
                    self.run_job(job).instrument(span).await;
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

    async fn run_job(&self, job: Job) {
        let Some(lease) = job.lease() else {
            tracing::error!("claimed job has no lease owner");
            return;
        };
        tracing::info!("export started");
        let cancel = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let heartbeat = {
            let jobs = Arc::clone(&self.jobs);
            let lease = lease.clone();
            let cancel = cancel.clone();
            let counters = Arc::clone(&counters);
            let every = self.cfg.heartbeat;
            let lease_ms = self.cfg.lease.as_millis() as i64;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(every) => {}
                    }
                    match jobs
                        .heartbeat(&lease, counters.progress(), lease_ms, now_ms())
                        .await
                    {
                        Ok(Heartbeat::Held) => {}
                        Ok(other) => {
                            cancel.cancel();
                            return Some(other);
                        }
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
            })
        };

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
        cancel.cancel();
        let stopped_by = heartbeat.await.ok().flatten();

        let now = now_ms();
        let outcome = match result {
            Ok(done) => {
                let expires = now + self.cfg.ttl.as_millis() as i64;
                match self
                    .jobs
                    .succeed(&lease, &done.manifest_key, done.progress, expires, now)
                    .await
                {
                    Ok(true) => {
                        tracing::info!(
                            rows = done.progress.rows,
                            bytes = done.progress.bytes,
                            parts = done.progress.parts,
                            "export succeeded"
                        );
                        return;
                    }
                    Ok(false) => Err("lease lost before completion".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(ExportError::Canceled) => {
                match stopped_by {
                    Some(Heartbeat::Lost) => tracing::warn!("lease lost; attempt abandoned"),
                    _ => tracing::info!("export canceled"),
                }
                return;
            }
            Err(ExportError::LeaseLost) => {
                tracing::warn!("lease lost; attempt abandoned");
                return;
            }
            Err(e) => {
                let err = JobError {
                    code: e.code().into(),
                    message: e.to_string(),
                };
                let recorded = if e.is_retryable() {
                    let delay = backoff(&self.cfg, lease.attempt);
                    self.jobs
                        .retry(&lease, &err, now + delay.as_millis() as i64, now)
                        .await
                        .map(|s| {
                            if s == JobStatus::Failed {
                                tracing::error!(error = %e, "export failed after its last attempt");
                            } else {
                                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "export attempt failed; will retry");
                            }
                        })
                } else {
                    tracing::error!(error = %e, code = e.code(), "export failed");
                    self.jobs.fail(&lease, &err, now).await.map(|_| ())
                };
                recorded.map_err(|e| e.to_string())
            }
        };
        if let Err(e) = outcome {
            // The lease will expire and the reaper will requeue the job.
            tracing::error!(error = %e, "could not record the export outcome");
        }
    }
}

/// Exponential backoff with jitter: base·2^(attempt−1), capped, scaled by 0.5–1.0.
pub fn backoff(cfg: &WorkerConfig, attempt: u32) -> Duration {
    let exp = cfg
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(cfg.backoff_max);
    capped.mul_f64(rand::rng().random_range(0.5..=1.0))
}
