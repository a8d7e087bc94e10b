//! How long a query may run, and how it is stopped.
//!
//! Every query runs under a `query_id` of ours. One made for an API request also
//! carries `max_execution_time` and a client-side deadline of the same length, and is
//! watched by a [`KillOnDrop`] guard: when the caller stops waiting before the server
//! finished (the client went away, the request timed out, a preview has all the bytes
//! it may send) the guard sends a detached, time-boxed `KILL QUERY` by that id.
//! ClickHouse does not stop an HTTP query whose client disconnected (18.x has no
//! `cancel_http_readonly_queries_on_client_close`), so without the kill a dropped
//! request would keep a server thread busy until its result was complete.
//!
//! Queries of export jobs run under ids of their attempt and without a time limit: an
//! export of a billion rows takes as long as it takes, and a canceled attempt kills its
//! queries by id prefix ([`crate::Store::kill_queries`]).

use std::time::Duration;

use crate::sql::quote_string;
use crate::StoreError;

/// Longest a `KILL QUERY` may take; a server that does not answer it is stalled, and
/// the query's own `max_execution_time` still ends it.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The id a query runs under and the longest it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    query_id: String,
    max_time: Option<Duration>,
}

impl Bounds {
    /// A query made for an API request: a fresh id, and at most `max_time` on the
    /// server and on the clock.
    pub fn request(max_time: Duration) -> Bounds {
        Bounds {
            query_id: format!("logport-req-{}", uuid::Uuid::new_v4().simple()),
            max_time: Some(max_time),
        }
    }

    /// A query of an export job: the given id (with the attempt's prefix), no limit.
    pub fn job(query_id: impl Into<String>) -> Bounds {
        Bounds {
            query_id: query_id.into(),
            max_time: None,
        }
    }

    /// The same limit for a second query of the same work, under an id of its own: a
    /// server may still hold the first id for a moment after it answered.
    pub(crate) fn next(&self, suffix: &str) -> Bounds {
        Bounds {
            query_id: format!("{}-{suffix}", self.query_id),
            max_time: self.max_time,
        }
    }

    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    pub fn max_time(&self) -> Option<Duration> {
        self.max_time
    }

    /// `max_execution_time`: whole seconds, rounded up (at least 1).
    pub(crate) fn max_execution_secs(&self) -> Option<u64> {
        self.max_time
            .map(|t| (t.as_secs() + u64::from(t.subsec_nanos() > 0)).max(1))
    }

    /// Runs `work` within the client-side deadline (a server that accepted the query
    /// and went silent must not hold the caller): past it, [`StoreError::Timeout`].
    pub(crate) async fn within<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self.max_time {
            Some(t) => tokio::time::timeout(t, work)
                .await
                .unwrap_or(Err(StoreError::Timeout)),
            None => work.await,
        }
    }
}

/// Kills a query by id when dropped before [`KillOnDrop::disarm`]: the caller stopped
/// waiting for a query the server may still be running.
pub(crate) struct KillOnDrop {
    armed: Option<(clickhouse::Client, String)>,
}

impl KillOnDrop {
    pub(crate) fn new(client: &clickhouse::Client, bounds: &Bounds) -> KillOnDrop {
        KillOnDrop {
            armed: Some((client.clone(), bounds.query_id.clone())),
        }
    }

    /// The server has ended the query (an answer or its exception came): nothing to kill.
    pub(crate) fn disarm(mut self) {
        self.armed = None;
    }

    /// Disarms when the result shows the server ended the query; otherwise the guard
    /// is dropped armed and kills it.
    pub(crate) fn settle(self, server_done: bool) {
        if server_done {
            self.disarm();
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some((client, query_id)) = self.armed.take() else {
            return;
        };
        // Outside a runtime (a process shutting down) there is nothing to kill with;
        // the query's max_execution_time still ends it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let sql = format!(
                "KILL QUERY WHERE query_id = {} ASYNC",
                quote_string(&query_id)
            );
            let kill = tokio::time::timeout(KILL_WAIT, client.query_raw(&sql).execute()).await;
            match kill {
                Ok(Ok(())) => {
                    tracing::info!(%query_id, "query killed: its caller stopped waiting")
                }
                // A server that cannot be reached runs nothing to kill.
                Ok(Err(e)) => match StoreError::from(e) {
                    StoreError::Unreachable(e) => {
                        tracing::debug!(%query_id, error = %e, "could not kill a query")
                    }
                    e => tracing::warn!(%query_id, error = %e, "could not kill a query"),
                },
                Err(_) => tracing::warn!(%query_id, "kill query timed out"),
            }
        });
    }
}

/// Did the server end the query? An answer or an exception of its own says so; a
/// timeout or a lost connection leaves it possibly running.
pub(crate) fn server_done<T>(r: &Result<T, StoreError>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => e.is_server_answer(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_time_rounds_up_to_whole_seconds() {
        let secs = |ms| Bounds::request(Duration::from_millis(ms)).max_execution_secs();
        assert_eq!(secs(100), Some(1));
        assert_eq!(secs(1000), Some(1));
        assert_eq!(secs(1500), Some(2));
        assert_eq!(secs(30_000), Some(30));
        assert_eq!(Bounds::job("x").max_execution_secs(), None);
        let a = Bounds::request(Duration::from_secs(1));
        let b = Bounds::request(Duration::from_secs(1));
        assert_ne!(a.query_id(), b.query_id());
        assert!(a.query_id().starts_with("logport-req-"));
    }
}
