//! `logport serve` and `logport migrate`: wiring the service together.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use logport_api::{ApiLimits, AppState, Downloads, Quotas, Tokens};
use logport_catalog::Catalog;
use logport_export::{Exporter, Files, WorkerConfig, Workers};
use logport_queue::{Clock, IngestKeys, SystemClock, TokenStore};
use logport_store::{
    ClusterConfig, Inserter, InserterConfig, RetentionPolicy, RetentionReport, Store, StoreConfig,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Settings};

pub fn load_catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    let catalog = match &settings.raw.schema_dir {
        Some(dir) => Catalog::load_dir(dir),
        None => Catalog::builtin(),
    };
    catalog.context("the catalog is invalid")
}

/// Connects to ClickHouse (or its cluster) with the retention policy in force: the
/// catalog's days, the configured default and per-slice overrides.
async fn connect(settings: &Settings, catalog: &Catalog) -> anyhow::Result<Store> {
    let raw = &settings.raw;
    let default_days = (raw.default_retention_days > 0).then_some(raw.default_retention_days);
    let policy = RetentionPolicy::new(catalog, default_days, &raw.retention)
        .map_err(|m| anyhow::anyhow!("configuration error: retention: {m}"))?;
    let store = Store::connect(&StoreConfig {
        url: raw.clickhouse_url.clone(),
        user: raw.clickhouse_user.clone(),
        password: raw.clickhouse_password.clone(),
        database: raw.clickhouse_database.clone(),
        cluster: raw.clickhouse_cluster.as_ref().map(|name| ClusterConfig {
            name: name.clone(),
            server_urls: raw.clickhouse_cluster_servers.clone(),
        }),
    })
    .await
    .with_context(|| {
        format!(
            "cannot reach ClickHouse at {}",
            logport_queue::redact_urls(&raw.clickhouse_url)
        )
    })?;
    Ok(store.with_retention(policy))
}

/// One retention pass: drops every wholly expired partition, logs and counts it.
async fn retention_pass(store: &Store, catalog: &Catalog) -> RetentionReport {
    let (report, errors) = store.apply_retention(catalog, now_secs()).await;
    for d in &report.dropped {
        metrics::counter!("logport_retention_dropped_partitions_total", "slice" => d.slice.clone())
            .increment(1);
        metrics::counter!("logport_retention_dropped_rows_total", "slice" => d.slice.clone())
            .increment(d.rows);
    }
    let outcome = if errors.is_empty() { "ok" } else { "error" };
    metrics::counter!("logport_retention_runs_total", "outcome" => outcome).increment(1);
    if !report.dropped.is_empty() {
        tracing::info!(
            partitions = report.dropped.len(),
            rows = report.rows(),
            "retention dropped expired partitions"
        );
    }
    report
}

/// `logport retention`: one pass, then exit (for cron or a Kubernetes CronJob when
/// no `serve` process runs the schedule).
pub async fn retention_once(settings: Settings) -> anyhow::Result<()> {
    let catalog = load_catalog(&settings)?;
    let store = connect(&settings, &catalog).await?;
    for (slice, days) in store.retention().bounded() {
        tracing::debug!(slice, days, "retention policy");
    }
    let report = retention_pass(&store, &catalog).await;
    for d in &report.dropped {
        println!(
            "{:<16} {:<10} {:>12} rows  {}",
            d.slice, d.partition, d.rows, d.server
        );
    }
    Ok(())
}

/// Runs [`retention_pass`] now and then every `every`, until shutdown.
async fn retention_schedule(
    store: Store,
    catalog: Arc<Catalog>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        retention_pass(&store, &catalog).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

fn now_secs() -> i64 {
    logport_queue::now_ms().div_euclid(1000)
}

/// Installs the process-wide Prometheus recorder and returns its renderer.
fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    // Seconds: from a fast query to an hours-long export or queue wait.
    const BUCKETS: &[f64] = &[
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        900.0, 3600.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .context("metric buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe_metrics();
    metrics::gauge!("logport_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// `# HELP` lines for every metric (docs/operations.md has the same list).
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "logport_jobs",
        "Export jobs in each state in the shared job store (every replica reports the same)"
    );
    describe_gauge!(
        "logport_job_store_up",
        "0 when the job store could not be read at the last scrape"
    );
    describe_histogram!(
        "logport_export_queue_wait_seconds",
        Unit::Seconds,
        "From an export's creation to a worker claiming it"
    );
    describe_histogram!(
        "logport_export_run_seconds",
        Unit::Seconds,
        "Run time of one export attempt, by outcome"
    );
    describe_counter!(
        "logport_export_attempts_total",
        "Export attempts by outcome"
    );
    describe_counter!("logport_export_rows_total", "Rows of published exports");
    describe_counter!(
        "logport_export_bytes_total",
        Unit::Bytes,
        "Bytes (as stored) of published exports"
    );
    describe_counter!("logport_export_parts_total", "Files of published exports");
    describe_counter!(
        "logport_export_leases_expired_total",
        "Jobs requeued because their worker stopped heartbeating"
    );
    describe_counter!(
        "logport_exports_expired_total",
        "Exports whose files the janitor removed"
    );
    describe_counter!("logport_ingest_rows_total", "Ingested rows committed");
    describe_counter!("logport_ingest_requests_total", "Ingest requests committed");
    describe_counter!(
        "logport_ingest_batches_total",
        "INSERT statements (coalesced ingest batches) committed"
    );
    describe_counter!(
        "logport_ingest_failed_batches_total",
        "INSERT statements that failed"
    );
    describe_histogram!(
        "logport_clickhouse_query_duration_seconds",
        Unit::Seconds,
        "ClickHouse statements by kind (exports: to the last byte)"
    );
    describe_counter!(
        "logport_clickhouse_errors_total",
        "Failed ClickHouse statements by kind and error code"
    );
    describe_counter!(
        "logport_object_store_errors_total",
        "Failed object store operations (not-found answers excluded)"
    );
    describe_counter!(
        "logport_retention_runs_total",
        "Retention passes by outcome"
    );
    describe_counter!(
        "logport_retention_dropped_partitions_total",
        "Expired partitions dropped"
    );
    describe_counter!(
        "logport_retention_dropped_rows_total",
        "Rows in the expired partitions dropped"
    );
    describe_counter!(
        "logport_readiness_probes_total",
        "Probes of the backends made for /readyz (at most one a second, one at a time)"
    );
    describe_counter!(
        "logport_activity_rows_set_aside_total",
        "Activity rows of the job store's outbox set aside because they can never be written"
    );
    describe_gauge!("logport_build_info", "Always 1, labelled with the version");
}

async fn run_migrations(store: &Store, catalog: &Catalog) -> anyhow::Result<()> {
    let report = store.migrate(catalog).await.context("migration failed")?;
    if report.is_noop() {
        tracing::info!(database = store.database(), "schema up to date");
    } else {
        tracing::info!(
            database = store.database(),
            created = ?report.created_tables,
            added = ?report.added_columns,
            "schema migrated"
        );
    }
    Ok(())
}

pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let catalog = load_catalog(&settings)?;
    let store = connect(&settings, &catalog).await?;
    run_migrations(&store, &catalog).await
}

pub fn print_catalog(settings: &Settings) -> anyhow::Result<()> {
    let catalog = load_catalog(settings)?;
    for s in catalog.slices() {
        println!(
            "{:<16} {:>3} fields  {}",
            s.name,
            s.fields.len(),
            s.description
        );
    }
    Ok(())
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let raw = &settings.raw;
    let metrics = install_metrics()?;
    let backends = open_backends(&settings).await?;
    let tokens = tokens(raw, Arc::clone(&backends.stores.tokens))?;
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let workers = spawn_workers(
        &settings,
        &backends,
        Arc::clone(&clock),
        Arc::clone(&wake),
        shutdown.clone(),
    );
    let retention = tokio::spawn(retention_schedule(
        backends.store.clone(),
        Arc::clone(&backends.catalog),
        settings.retention_interval,
        shutdown.clone(),
    ));
    let purge_keys = spawn_key_purge(
        Arc::clone(&backends.stores.ingest_keys),
        Arc::clone(&clock),
        shutdown.clone(),
    );
    let upkeep = spawn_metrics_upkeep(metrics.clone(), shutdown.clone());
    let token_store = Arc::clone(&backends.stores.tokens);
    let state = web::Data::new(app_state(
        &settings, backends, tokens, wake, clock, &metrics,
    ));
    // Activity rows recorded by `logport token …` wait in the job store until moved.
    logport_api::activity::spawn_outbox_mover(
        token_store,
        Arc::clone(&state.catalog),
        Arc::clone(&state.inserter),
        Arc::clone(&state.clock),
        format!("outbox-{}", instance_id()),
    );
    let server = http_server(&settings, state)?;
    tracing::info!(listen = %raw.listen, workers = raw.workers, "logport serving");

    // SIGTERM or Ctrl-C: stop accepting requests and claiming jobs at once; running
    // exports get the grace period, then go back to the queue.
    let handle = server.handle();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: no new requests or jobs; finishing running exports");
        on_signal.cancel();
        handle.stop(true).await;
    });
    let result = server.await;
    shutdown.cancel();
    let _ = upkeep.await;
    let _ = purge_keys.await;
    retention.abort();
    let bound = settings.shutdown_grace + Duration::from_secs(10);
    if tokio::time::timeout(bound, workers.join()).await.is_err() {
        tracing::warn!(
            "exports still running after the grace period; their leases will expire and they will be retried"
        );
    }
    tracing::info!("logport stopped");
    result.context("the HTTP server failed")
}

/// What `serve` reads and writes: the catalog, ClickHouse (migrated), the job store's
/// roles and the object store.
struct Backends {
    catalog: Arc<Catalog>,
    store: Store,
    stores: logport_queue::Stores,
    files: Files,
}

async fn open_backends(settings: &Settings) -> anyhow::Result<Backends> {
    let raw = &settings.raw;
    let catalog = Arc::new(load_catalog(settings)?);
    let store = connect(settings, &catalog).await?;
    run_migrations(&store, &catalog).await?;
    let stores = logport_queue::open_stores(&raw.job_store_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the job store {}",
                logport_queue::redact_urls(&raw.job_store_url)
            )
        })?;
    let files = Files::from_url(&settings.object_store_url)
        .with_context(|| format!("cannot open the object store {}", settings.object_store_url))?;
    Ok(Backends {
        catalog,
        store,
        stores,
        files,
    })
}

/// The static tokens and the token store, with the request and failure rate limits.
fn tokens(raw: &Config, store: Arc<dyn TokenStore>) -> anyhow::Result<Tokens> {
    Ok(match &raw.static_tokens {
        Some(spec) => Tokens::parse_static(spec).map_err(anyhow::Error::msg)?,
        None => Tokens::default(),
    }
    .with_store(store)
    .with_rate_limit(logport_api::RateLimit {
        per_second: raw.rate_limit_per_second,
        burst: raw.rate_limit_burst,
    })
    .with_failure_limit(logport_api::RateLimit {
        per_second: f64::from(raw.auth_failures_per_minute) / 60.0,
        burst: raw.auth_failure_burst,
    }))
}

/// This process among the replicas: its pid and a random suffix.
fn instance_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The export workers, claiming jobs from the queue until `shutdown`.
fn spawn_workers(
    settings: &Settings,
    backends: &Backends,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> Workers {
    let raw = &settings.raw;
    let exporter = Arc::new(Exporter {
        store: backends.store.clone(),
        files: backends.files.clone(),
        catalog: Arc::clone(&backends.catalog),
        parallelism: raw.export_parallelism,
        parallel_min_rows: raw.export_parallel_min_rows,
        max_parts: raw.export_max_parts,
    });
    Workers::spawn(
        Arc::clone(&backends.stores.jobs),
        exporter,
        clock,
        WorkerConfig {
            workers: raw.workers,
            lease: settings.lease,
            heartbeat: settings.heartbeat,
            poll: Duration::from_millis(500),
            ttl: settings.export_ttl,
            backoff_base: settings.retry_backoff,
            backoff_max: settings.retry_backoff_max,
            max_running_per_tenant: raw.max_running_per_tenant,
            grace: settings.shutdown_grace,
            janitor_every: settings.janitor_interval,
            orphan_sweep_every: settings.orphan_sweep_interval,
            owner: format!("logport-{}", instance_id()),
        },
        wake,
        shutdown,
    )
}

/// Runs `tick` every `period`, the first time one period from now, until `shutdown`.
fn spawn_every<F, Fut>(
    period: Duration,
    shutdown: CancellationToken,
    mut tick: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => tick().await,
            }
        }
    })
}

/// Answers kept for Idempotency-Key retries are forgotten once they expire.
fn spawn_key_purge(
    keys: Arc<dyn IngestKeys>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    spawn_every(Duration::from_secs(60), shutdown, move || {
        let (keys, now) = (Arc::clone(&keys), clock.now_ms());
        async move {
            match keys.purge_ingest_keys(now).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(keys = n, "expired ingest keys purged"),
                Err(e) => tracing::warn!(error = %e, "cannot purge expired ingest keys"),
            }
        }
    })
}

/// Histograms are kept in buckets that need draining now and then.
fn spawn_metrics_upkeep(
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    spawn_every(Duration::from_secs(5), shutdown, move || {
        metrics.run_upkeep();
        std::future::ready(())
    })
}

/// What every request handler shares.
fn app_state(
    settings: &Settings,
    backends: Backends,
    tokens: Tokens,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    metrics: &PrometheusHandle,
) -> AppState {
    let raw = &settings.raw;
    let Backends {
        catalog,
        store,
        stores,
        files,
    } = backends;
    let inserter = Inserter::new(
        store.clone(),
        InserterConfig {
            max_wait: settings.ingest_batch_wait,
            ..InserterConfig::default()
        },
    );
    AppState {
        inserter,
        ingest_budget: Arc::new(logport_api::admission::IngestBudget::new(
            raw.ingest_max_inflight_bytes,
            raw.ingest_tenant_share,
        )),
        ingest_keys: stores.ingest_keys,
        ingest_key_ttl: settings.ingest_key_ttl,
        catalog,
        store,
        jobs: stores.jobs,
        compat_jobs: stores.compat,
        files,
        tokens,
        limits: ApiLimits {
            ingest_max_bytes: raw.ingest_max_bytes,
            ingest_max_line_bytes: raw.ingest_max_line_bytes,
            ingest_max_rows: raw.ingest_max_rows,
            json_max_bytes: raw.json_max_bytes,
            preview_timeout: settings.preview_timeout,
            max_header_bytes: raw.max_header_bytes,
            request_timeout: settings.request_timeout,
            ingest_pace: logport_api::admission::BodyPace {
                grace: settings.ingest_body_grace,
                min_rate: raw.ingest_min_body_rate,
            },
            query_timeout: settings.query_timeout,
            preview_max_bytes: raw.preview_max_bytes,
            export_max_parts: raw.export_max_parts,
        },
        quotas: Quotas {
            max_queued_per_tenant: raw.max_queued_per_tenant,
            max_range_days: raw.max_range_days,
            max_rows_per_export: (raw.max_rows_per_export > 0).then_some(raw.max_rows_per_export),
        },
        downloads: Downloads {
            presigned: raw.presigned_downloads,
            presign_ttl: settings.presign_ttl,
        },
        max_attempts: raw.max_attempts,
        compat: logport_api::CompatLimits {
            max_response_bytes: raw.compat_max_response_bytes,
            counter_quota_bytes: raw.compat_counter_quota_bytes,
            part_max_bytes: raw.compat_part_max_bytes,
        },
        wake,
        clock,
        metrics: Some(logport_api::MetricsEndpoint {
            render: Arc::new({
                let metrics = metrics.clone();
                move || metrics.render()
            }),
            token: raw.metrics_token.clone(),
        }),
        readiness: Default::default(),
    }
}

/// The HTTP server, bound and running (it answers once awaited).
fn http_server(
    settings: &Settings,
    state: web::Data<AppState>,
) -> anyhow::Result<actix_web::dev::Server> {
    let raw = &settings.raw;
    Ok(HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(logport_api::limits::guard))
            .app_data(state.clone())
            .configure(logport_api::configure)
            .default_service(web::to(logport_api::not_found))
    })
    .bind(&raw.listen)
    .with_context(|| format!("cannot listen on {}", raw.listen))?
    .disable_signals()
    // Longer than common clients' pool idle timeouts, so a client never sends a
    // request on a connection the server is closing.
    .keep_alive(Duration::from_secs(120))
    .client_request_timeout(settings.request_header_timeout)
    // A client that closes its connection has given up on the answer: stop its
    // handler (which kills the ClickHouse query it waits for) instead of finishing
    // work nobody will read. HTTP/1 half-closing clients are not supported.
    .h1_allow_half_closed(false)
    .shutdown_timeout(settings.shutdown_grace.as_secs().max(1))
    .run())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops logport");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
