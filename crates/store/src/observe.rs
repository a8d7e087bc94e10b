//! Query metrics: every ClickHouse statement is timed by kind (`op`), and failures
//! are counted by ClickHouse error code (or `unreachable`, `timeout`, `client`), so
//! an operator can tell a slow server from a failing one and a schema problem
//! (`60` unknown table, `47` unknown column) from overload (`202`, `241`).

use std::time::Instant;

use crate::StoreError;

pub(crate) fn record<T>(op: &'static str, started: Instant, r: &Result<T, StoreError>) {
    metrics::histogram!("logport_clickhouse_query_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = r {
        metrics::counter!("logport_clickhouse_errors_total", "op" => op, "code" => e.code_label())
            .increment(1);
    }
}
