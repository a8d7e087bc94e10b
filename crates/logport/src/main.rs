//! `logport`: the Logs API service and its command-line tools.

mod config;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use clap::{Parser, Subcommand};
use logport_api::{ApiLimits, AppState, Tokens};
use logport_catalog::{Catalog, SpecLimits};
use logport_export::{Exporter, Files, WorkerConfig, Workers};
use logport_store::{Store, StoreConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Settings};

#[derive(Parser)]
#[command(
    name = "logport",
    version,
    about = "Raw event logs in ClickHouse, exported on demand"
)]
struct Cli {
    /// Configuration file (default: ./logport.toml when present).
    #[arg(long, global = true, env = "LOGPORT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the export workers (migrates ClickHouse first).
    Serve {
        /// Address to listen on (overrides LOGPORT_LISTEN).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Create or update the ClickHouse database and tables from the catalog.
    Migrate,
    /// Load and validate the catalog, print its slices, and exit.
    Catalog,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match load_settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("logport: configuration error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing(&settings.raw.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("logport: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { .. } => serve(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::Catalog => print_catalog(&settings),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "logport stopped");
            eprintln!("logport: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut cfg = Config::from_file(cli.config.as_deref())?;
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Command::Serve {
        listen: Some(listen),
    } = &cli.command
    {
        cfg.listen = listen.clone();
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cfg.validate(&cwd)?)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_catalog(settings: &Settings) -> anyhow::Result<Catalog> {
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

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let catalog = load_catalog(&settings)?;
    let store = connect(&settings).await?;
    run_migrations(&store, &catalog).await
}

fn print_catalog(settings: &Settings) -> anyhow::Result<()> {
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
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
    let spec_limits = SpecLimits {
        max_range_days: raw.max_range_days,
        ..SpecLimits::default()
    };

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
    let workers = Workers::spawn(
        Arc::clone(&jobs),
        exporter,
        WorkerConfig {
            workers: raw.workers,
            lease: settings.lease,
            heartbeat: settings.heartbeat,
            poll: Duration::from_millis(500),
            ttl: settings.export_ttl,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            owner,
        },
        Arc::clone(&wake),
        shutdown.clone(),
    );

    let state = web::Data::new(AppState {
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
        max_attempts: raw.max_attempts,
        wake,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(logport_api::configure)
            .default_service(web::to(logport_api::not_found))
    })
    .bind(&raw.listen)
    .with_context(|| format!("cannot listen on {}", raw.listen))?
    .shutdown_timeout(30)
    .run();
    tracing::info!(listen = %raw.listen, workers = raw.workers, "logport serving");
    let result = server.await;
    tracing::info!("shutting down: waiting for running exports");
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(30), workers.join())
        .await
        .is_err()
    {
        tracing::warn!(
            "exports still running at shutdown; their leases will expire and they will be retried"
        );
    }
    result.context("the HTTP server failed")
}
