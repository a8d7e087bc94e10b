//! `logport serve` and `logport migrate`: wiring the service together.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use logport_api::{ApiLimits, AppState, Downloads, InFlightKeys, Quotas, Tokens};
use logport_catalog::{Catalog, SpecLimits};
use logport_export::{Exporter, Files, WorkerConfig, Workers};
use logport_queue::{Clock, SystemClock};
use logport_store::{Inserter, InserterConfig, Store, StoreConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

pub fn load_catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    let catalog = match &settings.raw.schema_dir {
        Some(dir) => Catalog::load_dir(dir),
        None => Catalog::builtin(),
    };
    catalog.context("the catalog is invalid")
}

async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    let raw = &settings.raw;
    Store::connect(&StoreConfig {
        url: raw.clickhouse_url.clone(),
        user: raw.clickhouse_user.clone(),
        password: raw.clickhouse_password.clone(),
        database: raw.clickhouse_database.clone(),
    })
    .await
    .with_context(|| format!("cannot reach ClickHouse at {}", raw.clickhouse_url))
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
    let store = connect(&settings).await?;
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
    let raw = settings.raw.clone();
    let catalog = Arc::new(load_catalog(&settings)?);
    let store = connect(&settings).await?;
    run_migrations(&store, &catalog).await?;
    let jobs = logport_queue::open(&raw.job_store_url)
        .await
        .with_context(|| format!("cannot open the job store {}", raw.job_store_url))?;
    let files = Files::from_url(&settings.object_store_url)
        .with_context(|| format!("cannot open the object store {}", settings.object_store_url))?;
    let tokens = match &raw.static_tokens {
        Some(spec) => Tokens::parse_static(spec).map_err(anyhow::Error::msg)?,
        None => Tokens::default(),
    };
    let spec_limits = SpecLimits { parquet: true };

    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let exporter = Arc::new(Exporter {
        store: store.clone(),
        files: files.clone(),
        catalog: Arc::clone(&catalog),
        limits: spec_limits,
    });
    let owner = format!(
        "logport-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let workers = Workers::spawn(
        Arc::clone(&jobs),
        exporter,
        Arc::clone(&clock),
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
            owner,
        },
        Arc::clone(&wake),
        shutdown.clone(),
    );

    let inserter = Inserter::new(
        store.clone(),
        InserterConfig {
            max_wait: settings.ingest_batch_wait,
            ..InserterConfig::default()
        },
    );
    let state = web::Data::new(AppState {
        inserter,
        ingest_gate: Arc::new(tokio::sync::Semaphore::new(
            raw.ingest_max_inflight_bytes.div_ceil(1024),
        )),
        ingest_keys: InFlightKeys::default(),
        catalog,
        store,
        jobs,
        files,
        tokens,
        limits: ApiLimits {
            ingest_max_bytes: raw.ingest_max_bytes,
            ingest_max_line_bytes: raw.ingest_max_line_bytes,
            ingest_max_rows: raw.ingest_max_rows,
            json_max_bytes: raw.json_max_bytes,
        },
        spec_limits,
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
    });
    let server = HttpServer::new(move || {
        App::new()
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
    .shutdown_timeout(settings.shutdown_grace.as_secs().max(1))
    .run();
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
    let bound = settings.shutdown_grace + Duration::from_secs(10);
    if tokio::time::timeout(bound, workers.join()).await.is_err() {
        tracing::warn!(
            "exports still running after the grace period; their leases will expire and they will be retried"
        );
    }
    tracing::info!("logport stopped");
    result.context("the HTTP server failed")
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
