//! `logport ingest FILE --slice S`: load an NDJSON or CSV file (gzip welcome) through
//! the HTTP API.
//!
//! The file is sent in batches of `--batch-rows` records, several at a time. Every
//! batch carries an `Idempotency-Key` derived from the file's size, its name and the
//! batch number, so a batch that is retried — after a timeout, a 503, a dropped
//! connection, or when the whole command is run again — is never stored twice.
//! Rows are stored once per event anyway (the server deduplicates them); the key also
//! gets a retried batch its first answer back. Retries back off exponentially; a 4xx
//! other than 429 stops the load with the server's problem detail (a 409 means the
//! file changed since a run less than `LOGPORT_INGEST_KEY_TTL` ago sent it).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// NDJSON or CSV file (`.gz` is decompressed; `-` reads standard input).
    pub file: PathBuf,
    /// Slice to load into.
    #[arg(long)]
    pub slice: String,
    /// Server URL.
    #[arg(long, env = "LOGPORT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token.
    #[arg(long, env = "LOGPORT_TOKEN", hide_env_values = true)]
    pub token: String,
    /// `ndjson` or `csv`; default: from the file name (`.csv`, `.csv.gz`), else ndjson.
    #[arg(long)]
    pub format: Option<String>,
    /// Records per request.
    #[arg(long, default_value_t = 20_000)]
    pub batch_rows: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Store the good records of a batch and report the bad ones, instead of
    /// rejecting the batch.
    #[arg(long)]
    pub skip_bad: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

struct Batch {
    n: u64,
    body: Vec<u8>,
    records: u64,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_rows >= 1, "--batch-rows must be at least 1");
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    let name = args.file.display().to_string();
    let csv = match args.format.as_deref() {
        Some("csv") => true,
        Some("ndjson") | Some("jsonl") => false,
        Some(other) => bail!("--format must be ndjson or csv, not `{other}`"),
        None => name.ends_with(".csv") || name.ends_with(".csv.gz"),
    };
    let (lines, size) = open_input(&args.file, &name)?;
    // Keys are stable for the same file, so running the command again resumes safely.
    let identity = identity(&args, &name, size);
    let bar = progress(args.quiet);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let url = format!(
        "{}/v1/ingest/{}{}",
        args.url.trim_end_matches('/'),
        crate::client::encode(&args.slice),
        if args.skip_bad { "?on_error=skip" } else { "" }
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<anyhow::Result<Batch>>(args.concurrency * 2);
    // Reading and splitting happen on a blocking thread; requests on the runtime.
    let reader_task = tokio::task::spawn_blocking({
        let batch_rows = args.batch_rows as u64;
        move || split_batches(lines, csv, batch_rows, &tx)
    });

    let content_type = if csv {
        "text/csv"
    } else {
        "application/x-ndjson"
    };
    let token = args.token.clone();
    let results = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
        .map(|batch| {
            let (http, url, token, identity, bar) = (
                http.clone(),
                url.clone(),
                token.clone(),
                identity.clone(),
                bar.clone(),
            );
            async move {
                let batch = batch?;
                let key = format!("logport-ingest-{identity}-{}", batch.n);
                let (accepted, rejected) =
                    send(&http, &url, &token, content_type, &key, batch.body).await?;
                bar.inc(batch.records);
                anyhow::Ok((accepted, rejected))
            }
        })
        .buffer_unordered(args.concurrency);
    tokio::pin!(results);
    let (mut accepted, mut rejected) = (0u64, 0u64);
    while let Some(r) = results.next().await {
        let (a, b) = r?;
        accepted += a;
        rejected += b;
    }
    reader_task.await.context("the reader stopped")?;
    bar.finish_and_clear();
    eprintln!("logport: {accepted} events stored, {rejected} rejected, from {name}");
    Ok(())
}

/// The file (or standard input for `-`), gunzipped when it starts as gzip does, and
/// its size on disk (0 for standard input).
fn open_input(
    file: &std::path::Path,
    name: &str,
) -> anyhow::Result<(Box<dyn BufRead + Send>, u64)> {
    let (reader, size): (Box<dyn Read + Send>, u64) = if name == "-" {
        (Box::new(std::io::stdin()), 0)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot open {name}"))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(f), size)
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let gz = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let lines: Box<dyn BufRead + Send> = if gz {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::bufread::MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    };
    Ok((lines, size))
}

/// What names this run's batches: the slice, the file, its size and the batch size.
fn identity(args: &IngestArgs, name: &str, size: u64) -> String {
    let mut h = Sha256::new();
    h.update(args.slice.as_bytes());
    h.update(
        std::fs::canonicalize(&args.file)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| name.to_string()),
    );
    h.update(size.to_le_bytes());
    h.update((args.batch_rows as u64).to_le_bytes());
    hex::encode(&h.finalize()[..12])
}

fn progress(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new_spinner();
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {human_pos} events sent ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// Cuts the input into batches of `batch_rows` records (a CSV header starts each
/// batch; a quoted CSV record may span lines) and sends them until the input ends,
/// a read fails (sent as the last item) or the receiver is gone.
fn split_batches(
    mut lines: Box<dyn BufRead + Send>,
    csv: bool,
    batch_rows: u64,
    tx: &tokio::sync::mpsc::Sender<anyhow::Result<Batch>>,
) {
    let mut header: Option<Vec<u8>> = None;
    let mut n = 0u64;
    loop {
        let mut body = Vec::with_capacity(1 << 20);
        if let Some(h) = &header {
            body.extend_from_slice(h);
        }
        let mut records = 0u64;
        let mut line = Vec::new();
        while records < batch_rows {
            line.clear();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    let _ =
                        tx.blocking_send(Err(anyhow::Error::new(e).context("reading the file")));
                    return;
                }
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            if csv && header.is_none() {
                header = Some(line.clone());
                body.extend_from_slice(&line);
                continue;
            }
            // A CSV record may span lines inside quotes: keep reading until the
            // quotes balance.
            if csv {
                while line.iter().filter(|b| **b == b'"').count() % 2 == 1 {
                    match lines.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            body.extend_from_slice(&line);
            records += 1;
        }
        if records == 0 {
            return;
        }
        n += 1;
        if tx.blocking_send(Ok(Batch { n, body, records })).is_err() {
            return;
        }
    }
}

/// Sends one batch until it is acknowledged; returns (accepted, rejected).
async fn send(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    content_type: &str,
    key: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u64, u64)> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .header("idempotency-key", key)
            .body(body.clone())
            .send()
            .await;
        let retry_after = match sent {
            Ok(resp) if resp.status().is_success() => {
                let v: serde_json::Value = resp.json().await.context("the answer is not JSON")?;
                let n = |k: &str| v[k].as_u64().unwrap_or(0);
                return Ok((n("accepted"), n("rejected")));
            }
            Ok(resp) => {
                let status = resp.status();
                let after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let retryable = status.is_server_error() || status == 429;
                let detail: serde_json::Value = resp.json().await.unwrap_or_default();
                if !retryable {
                    bail!(
                        "the server refused a batch ({status}): {}",
                        detail["detail"].as_str().unwrap_or("no detail")
                    );
                }
                after
            }
            Err(e) if attempt >= 30 => return Err(e).context("the server did not answer"),
            Err(_) => None,
        };
        anyhow::ensure!(attempt < 30, "a batch was refused 30 times; giving up");
        tokio::time::sleep(retry_after.unwrap_or(delay)).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
