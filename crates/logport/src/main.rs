//! `logport`: the Logs API service and its command-line tools.

mod client;
mod config;
mod gen;
mod ingest_cmd;
mod logging;
mod serve;
mod token;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    Migrate {
        /// Shard the tables over this ClickHouse cluster (its name in the servers'
        /// remote_servers): `{slice}_local` tables on every server plus Distributed
        /// `{slice}` tables. Overrides LOGPORT_CLICKHOUSE_CLUSTER.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Drop the partitions whose rows are all past their slice's retention, once.
    Retention,
    /// Load and validate the catalog, print its slices, and exit.
    Catalog,
    /// Write realistic synthetic events of a slice as NDJSON or CSV.
    Gen(gen::GenArgs),
    /// Load an NDJSON or CSV file through the API, with retries that never duplicate.
    Ingest(ingest_cmd::IngestArgs),
    /// Ask a server for an export; --wait shows its progress, --out DIR downloads it.
    Export(client::ExportArgs),
    /// Download (or resume downloading) the files of an export, checking their SHA-256.
    Download(client::DownloadArgs),
    /// List your exports on a server, newest first.
    Jobs(client::JobsArgs),
    /// Stop a queued or running export.
    Cancel(client::CancelArgs),
    /// Create, list and revoke API tokens (needs only the job store).
    Token(token::TokenArgs),
}

/// A runtime for the commands that need one.
fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("logport: cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        })
}

/// Tools that talk to a server over HTTP or only print: no server configuration.
fn run_tool(command: Command) -> Result<std::process::ExitCode, Box<Command>> {
    let result = match command {
        Command::Gen(args) => gen::run(args),
        Command::Ingest(args) => match runtime() {
            Ok(rt) => rt.block_on(ingest_cmd::run(args)),
            Err(code) => return Ok(code),
        },
        Command::Export(args) => client::block_on(client::export(args)),
        Command::Download(args) => client::block_on(client::download(args)),
        Command::Jobs(args) => client::block_on(client::jobs(args)),
        Command::Cancel(args) => client::block_on(client::cancel(args)),
        other => return Err(Box::new(other)),
    };
    Ok(match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logport: {e:#}");
            std::process::ExitCode::FAILURE
        }
    })
}

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    cli.command = match run_tool(cli.command) {
        Ok(code) => return code,
        Err(server_command) => *server_command,
    };
    let settings = match load_settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            // A file's parse error quotes the line, which may hold a URL's password.
            let e = logport_queue::redact_urls(&format!("{e:#}"));
            eprintln!("logport: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing(&settings.raw.log_format);
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { .. } => serve::serve(settings).await,
            Command::Migrate { .. } => serve::migrate(settings).await,
            Command::Retention => serve::retention_once(settings).await,
            Command::Catalog => serve::print_catalog(&settings),
            Command::Token(args) => token::run(args, settings).await,
            Command::Gen(_)
            | Command::Ingest(_)
            | Command::Export(_)
            | Command::Download(_)
            | Command::Jobs(_)
            | Command::Cancel(_) => unreachable!("tools ran above"),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let e = logport_queue::redact_urls(&format!("{e:#}"));
            tracing::error!(error = %e, "logport stopped");
            eprintln!("logport: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut cfg = Config::from_file(cli.config.as_deref())?;
    cfg.apply_env()?;
    if let Command::Serve {
        listen: Some(listen),
    } = &cli.command
    {
        cfg.listen = listen.clone();
    }
    if let Command::Migrate {
        cluster: Some(cluster),
    } = &cli.command
    {
        cfg.clickhouse_cluster = Some(cluster.clone());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cfg.validate(&cwd)?)
}

fn init_tracing(format: &str) {
    logging::init(format);
}
