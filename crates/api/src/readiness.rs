//! Readiness of the backends for `GET /readyz`, probed at most once a second and one
//! probe at a time, however many callers ask.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::AppState;

/// How long a readiness probe's result answers `/readyz`: a load balancer or an
/// attacker polling it cannot make it query the backends more often than this.
const PROBE_TTL: Duration = Duration::from_secs(1);
/// Longest a probe waits for a backend: a hung one counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One probe of the backends: each one's error, `None` when it answered.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub clickhouse: Option<String>,
    pub job_store: Option<String>,
    pub object_store: Option<String>,
}

impl Probe {
    pub fn ok(&self) -> bool {
        self.clickhouse.is_none() && self.job_store.is_none() && self.object_store.is_none()
    }
}

/// The latest readiness probe, shared by every request: at most one probe runs at a
/// time (callers arriving meanwhile wait for its result), and its result is reused
/// for [`PROBE_TTL`].
#[derive(Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Probe>)>>,
}

impl Readiness {
    pub(crate) async fn current(&self, state: &AppState) -> Arc<Probe> {
        let mut last = self.last.lock().await;
        if let Some((at, probe)) = last.as_ref() {
            if at.elapsed() < PROBE_TTL {
                return Arc::clone(probe);
            }
        }
        let probe = Arc::new(probe(state).await);
        *last = Some((Instant::now(), Arc::clone(&probe)));
        probe
    }
}

async fn probe(state: &AppState) -> Probe {
    metrics::counter!("logport_readiness_probes_total").increment(1);
    let (clickhouse, job_store, object_store) = tokio::join!(
        bounded(state.store.ping()),
        bounded(state.jobs.ping()),
        bounded(state.files.ping()),
    );
    let probe = Probe {
        clickhouse,
        job_store,
        object_store,
    };
    if !probe.ok() {
        tracing::warn!(
            clickhouse = probe.clickhouse.as_deref().unwrap_or("ok"),
            job_store = probe.job_store.as_deref().unwrap_or("ok"),
            object_store = probe.object_store.as_deref().unwrap_or("ok"),
            "not ready"
        );
    }
    probe
}

/// A backend's answer within [`PROBE_TIMEOUT`]: `None`, or why not (any password in
/// a URL masked).
async fn bounded<E: std::fmt::Display>(
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Option<String> {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(logport_queue::redact_urls(&e.to_string())),
        Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}
