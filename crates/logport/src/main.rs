//! `logport`: the Logs API service and its command-line tools.

mod config;
mod gen;
mod ingest_cmd;
mod serve;

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
    Migrate,
    /// Load and validate the catalog, print its slices, and exit.
    Catalog,
    /// Write realistic synthetic events of a slice as NDJSON or CSV.
    Gen(gen::GenArgs),
    /// Load an NDJSON or CSV file through the API, with retries that never duplicate.
    Ingest(ingest_cmd::IngestArgs),
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
fn run_tool(command: Command) -> Result<std::process::ExitCode, Command> {
    let result = match command {
        Command::Gen(args) => gen::run(args),
        Command::Ingest(args) => match runtime() {
            Ok(rt) => rt.block_on(ingest_cmd::run(args)),
            Err(code) => return Ok(code),
        },
        other => return Err(other),
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
        Err(server_command) => server_command,
    };
    let settings = match load_settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("logport: configuration error: {e:#}");
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
            Command::Migrate => serve::migrate(settings).await,
            Command::Catalog => serve::print_catalog(&settings),
            Command::Gen(_) | Command::Ingest(_) => unreachable!("tools ran above"),
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
