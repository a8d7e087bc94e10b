//! `logport export`, `logport download`, `logport jobs`, `logport cancel`: a client of
//! a Logport server's HTTP API, for people who do not write HTTP.
//!
//! Decisions:
//! - No server configuration is read: these commands run where there is no ClickHouse.
//!   The server and token come from `--url`/`--token` or `LOGPORT_URL`/`LOGPORT_TOKEN`.
//! - `--filter 'FIELD OP VALUES'` uses the API's operators: `in`/`not_in` take
//!   comma-separated values, `between` two, `is_null`/`not_null` none, the others one
//!   (the rest of the text, commas and all). The field and operator are checked
//!   against `GET /v1/slices/{slice}`, and values are typed by the field's type
//!   (numbers for numeric fields), so the server sees the same JSON a script would send.
//! - A part is downloaded to `DIR/<file>.partial` and renamed to `DIR/<file>`
//!   (`part-00001.csv.gz`) once its SHA-256 matches the job's. A partial file left by an
//!   interrupted run is resumed with `Range` and `If-Range: "<sha256>"` (the part's
//!   ETag), so bytes of another file are never appended. If the finished file does not
//!   match, it is downloaded again from the start, once. A file already there with the
//!   right checksum is kept: running the command again fetches only what is missing.
//! - `export --idempotency-key KEY` makes a rerun find the same job instead of queuing
//!   another one; `logport download ID --out DIR` resumes any job's files.
//! - Progress bars go to standard error (drawn only on a terminal); standard output
//!   gets what scripts read: the job id, the saved paths, the jobs table.
//! - Errors print the server's problem title and detail and exit with status 1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Where the server is and who is asking.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Server URL.
    #[arg(long, env = "LOGPORT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token.
    #[arg(long, env = "LOGPORT_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Log slice (`logport catalog` or GET /v1/slices lists them).
    #[arg(long)]
    pub slice: String,
    /// First day (`YYYY-MM-DD`) or instant (RFC 3339), inclusive.
    #[arg(long)]
    pub since: String,
    /// Last day (inclusive) or instant.
    #[arg(long)]
    pub until: String,
    /// Comma-separated fields (default: the slice's default fields).
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
    /// `FIELD OP VALUES`, e.g. `country_code in US,DE` or `cost gt 0`; repeatable.
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// `event` (event_time) or `received` (received_time).
    #[arg(long)]
    pub date_dimension: Option<String>,
    /// How the dates are read: `UTC`, `+03:00`, `Europe/Berlin`.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Only this app.
    #[arg(long)]
    pub app_id: Option<u64>,
    /// csv, tsv, jsonl, json or parquet.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// none, gzip or zstd (not with parquet).
    #[arg(long)]
    pub compression: Option<String>,
    /// Split into files of at most this many rows.
    #[arg(long)]
    pub part_max_rows: Option<u64>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// The same key with the same request finds the same job (a rerun resumes it).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait until the export is done, with a progress bar.
    #[arg(long)]
    pub wait: bool,
    /// Download every file into this directory (implies --wait).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Export id (`logport jobs` lists them).
    pub id: String,
    /// Directory for the files.
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct JobsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only jobs in this status: queued, running, succeeded, failed, canceled, expired.
    #[arg(long)]
    pub status: Option<String>,
    /// Only jobs of this slice.
    #[arg(long)]
    pub slice: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// The API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Export id.
    pub id: String,
}

/// Runs a client command on a runtime of its own (one thread is plenty).
pub fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(f)
}

/// Requests that are not downloads give up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a waiting command asks for its job.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Polls that may fail in a row (503, a restarting server) before waiting gives up.
const POLL_RETRIES: u32 = 20;

/// An HTTP client for one server and token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(server: &ServerArgs) -> anyhow::Result<Api> {
        let base = server.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url (LOGPORT_URL) must start with http:// or https://, not `{base}`");
        }
        if server.token.trim().is_empty() {
            bail!("no token: pass --token or set LOGPORT_TOKEN");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("logport/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            http,
            base,
            token: server.token.trim().to_string(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request and reads a JSON answer; a non-2xx answer becomes its problem.
    async fn json(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = self.send(req.timeout(REQUEST_TIMEOUT)).await?;
        let text = resp.text().await.context("reading the answer")?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the server's answer is not JSON")
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(problem(resp).await)
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_timeout() {
            anyhow!("{} did not answer in time", self.base)
        } else {
            anyhow!(
                "cannot reach {} ({}); set --url or LOGPORT_URL",
                self.base,
                error_chain(&e)
            )
        }
    }

    async fn job(&self, id: &str) -> anyhow::Result<Value> {
        check_id(id)?;
        self.json(self.request(reqwest::Method::GET, &format!("/v1/exports/{id}")))
            .await
    }
}

/// Export ids are 32 hex digits; anything else is a typo, not a server question.
fn check_id(id: &str) -> anyhow::Result<()> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        bail!("`{id}` is not an export id (32 hex digits; `logport jobs` lists them)")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A problem+json answer as one line: `422 The request is not acceptable: detail`.
async fn problem(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let (title, detail) = match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.get("detail").is_some() || v.get("title").is_some() => {
            let mut detail = v["detail"].as_str().unwrap_or("").to_string();
            // Name the member the problem is about (`filters[1].value: …`).
            if let Some(field) = v["field"].as_str() {
                if !detail.contains(field) {
                    detail = format!("{field}: {detail}");
                }
            }
            (v["title"].as_str().unwrap_or("").to_string(), detail)
        }
        _ => (
            status.canonical_reason().unwrap_or("").to_string(),
            text.trim().chars().take(500).collect(),
        ),
    };
    let mut line = format!("{}", status.as_u16());
    for part in [title, detail] {
        if !part.is_empty() {
            line.push_str(if line.contains(' ') { ": " } else { " " });
            line.push_str(&part);
        }
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        line.push_str(" (check --token or LOGPORT_TOKEN)");
    }
    anyhow!(line)
}

/// `logport export`.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let mut body = Map::new();
    body.insert("slice".into(), json!(args.slice));
    body.insert("date_since".into(), json!(args.since));
    body.insert("date_until".into(), json!(args.until));
    let optional = [
        (
            "date_dimension",
            args.date_dimension.as_ref().map(|v| json!(v)),
        ),
        ("timezone", args.timezone.as_ref().map(|v| json!(v))),
        ("app_id", args.app_id.map(|v| json!(v))),
        ("format", Some(json!(args.format))),
        ("compression", args.compression.as_ref().map(|v| json!(v))),
        ("part_max_rows", args.part_max_rows.map(|v| json!(v))),
        ("limit", args.limit.map(|v| json!(v))),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    let fields: Vec<&String> = args.fields.iter().filter(|f| !f.is_empty()).collect();
    if !fields.is_empty() {
        body.insert("fields".into(), json!(fields));
    }
    if !args.filters.is_empty() {
        let slice = api
            .json(api.request(
                reqwest::Method::GET,
                &format!("/v1/slices/{}", encode(&args.slice)),
            ))
            .await?;
        let filters = args
            .filters
            .iter()
            .map(|f| parse_filter(f, &slice))
            .collect::<anyhow::Result<Vec<_>>>()?;
        body.insert("filters".into(), Value::Array(filters));
    }
    let body = Value::Object(body);

    let mut req = api
        .request(reqwest::Method::POST, "/v1/exports")
        .json(&body);
    if let Some(key) = &args.idempotency_key {
        req = req.header("Idempotency-Key", key);
    }
    let job = api
        .json(req)
        .await
        .map_err(|e| with_filter_hint(e, &args.filters))?;
    let id = job["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the server's answer has no job id: {job}"))?
        .to_string();
    println!("{id}");
    if !(args.wait || args.out.is_some()) {
        eprintln!(
            "export {id} is {}",
            job["status"].as_str().unwrap_or("queued")
        );
        return Ok(());
    }
    // The estimate gives the progress bar its length; a failure only costs the bar.
    let estimate = api
        .json(
            api.request(reqwest::Method::POST, "/v1/exports/evaluate")
                .json(&body),
        )
        .await
        .ok()
        .and_then(|e| e["estimated_rows"].as_u64());
    eprintln!("export {id} queued; waiting (Ctrl-C stops waiting, not the export)");
    let job = wait(&api, &id, estimate, args.quiet).await?;
    match &args.out {
        Some(dir) => save_all(&api, &job, dir, args.quiet).await,
        None => Ok(()),
    }
}

/// `logport download`.
pub async fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let job = api.job(&args.id).await?;
    let job = match job["status"].as_str() {
        Some("queued") | Some("running") => wait(&api, &args.id, None, args.quiet).await?,
        _ => finished(job)?,
    };
    save_all(&api, &job, &args.out, args.quiet).await
}

/// `logport jobs`.
pub async fn jobs(args: JobsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let mut query = format!("limit={}", args.limit);
    for (k, v) in [("status", &args.status), ("slice", &args.slice)] {
        if let Some(v) = v {
            query.push_str(&format!("&{k}={}", encode(v)));
        }
    }
    let list = api
        .json(api.request(reqwest::Method::GET, &format!("/v1/exports?{query}")))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let jobs = list["exports"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        eprintln!("no exports");
        return Ok(());
    }
    println!(
        "{:<32}  {:<9}  {:<16}  {:<24}  {:>12}  {:>14}",
        "ID", "STATUS", "SLICE", "CREATED", "ROWS", "BYTES"
    );
    for j in &jobs {
        println!(
            "{:<32}  {:<9}  {:<16}  {:<24}  {:>12}  {:>14}",
            j["id"].as_str().unwrap_or(""),
            j["status"].as_str().unwrap_or(""),
            j["slice"].as_str().unwrap_or(""),
            j["created_at"].as_str().unwrap_or(""),
            j["progress"]["rows"].as_u64().unwrap_or(0),
            j["progress"]["bytes"].as_u64().unwrap_or(0),
        );
    }
    Ok(())
}

/// `logport cancel`.
pub async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    check_id(&args.id)?;
    let job = api
        .json(api.request(
            reqwest::Method::POST,
            &format!("/v1/exports/{}/cancel", args.id),
        ))
        .await?;
    println!(
        "export {} is {}",
        args.id,
        job["status"].as_str().unwrap_or("canceled")
    );
    Ok(())
}

/// Percent-encodes a path segment or query value (slice names are identifiers, but a
/// typo need not be): everything but RFC 3986's unreserved characters.
pub(crate) fn encode(s: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

/// Adds which `--filter` a `filters[i]…` problem is about.
fn with_filter_hint(e: anyhow::Error, filters: &[String]) -> anyhow::Error {
    let text = e.to_string();
    let index = text
        .split("filters[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse::<usize>().ok());
    match index.and_then(|i| filters.get(i)) {
        Some(f) => anyhow!("{text} (in --filter '{f}')"),
        None => e,
    }
}

/// Parses `FIELD OP VALUES` against the slice's catalog entry into an API filter.
fn parse_filter(text: &str, slice: &Value) -> anyhow::Result<Value> {
    let bad = |why: String| anyhow!("--filter '{text}': {why}");
    let trimmed = text.trim();
    let mut words = trimmed.splitn(2, char::is_whitespace);
    let field = words.next().unwrap_or("");
    let rest = words.next().unwrap_or("").trim_start();
    let (op, values) = rest
        .split_once(char::is_whitespace)
        .map(|(o, v)| (o, v.trim()))
        .unwrap_or((rest, ""));
    if field.is_empty() || op.is_empty() {
        return Err(bad(
            "write FIELD OP VALUES, e.g. 'country_code in US,DE' or 'cost gt 0'".into(),
        ));
    }
    let fields = slice["fields"].as_array().cloned().unwrap_or_default();
    let Some(info) = fields.iter().find(|f| f["name"] == field) else {
        let names: Vec<&str> = fields
            .iter()
            .filter(|f| f["filterable"] == true)
            .filter_map(|f| f["name"].as_str())
            .collect();
        return Err(bad(format!(
            "{} has no field `{field}`; filterable fields: {}",
            slice["name"].as_str().unwrap_or("the slice"),
            names.join(", ")
        )));
    };
    let ops: Vec<&str> = info["ops"]
        .as_array()
        .map(|o| o.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if ops.is_empty() {
        return Err(bad(format!("`{field}` cannot be filtered on")));
    }
    if !ops.contains(&op) {
        return Err(bad(format!(
            "`{op}` does not apply to {field} ({}); use one of {}",
            info["type"].as_str().unwrap_or("?"),
            ops.join(", ")
        )));
    }
    let ty = info["type"].as_str().unwrap_or("String");
    let mut filter = json!({"field": field, "op": op});
    match op {
        "is_null" | "not_null" => {
            if !values.is_empty() {
                return Err(bad(format!("`{op}` takes no value")));
            }
        }
        "in" | "not_in" | "between" => {
            let list: Vec<Value> = values
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| typed(v, ty))
                .collect();
            if list.is_empty() {
                return Err(bad(format!("`{op}` needs values separated by commas")));
            }
            if op == "between" && list.len() != 2 {
                return Err(bad("`between` takes two values: LOW,HIGH".into()));
            }
            filter["values"] = Value::Array(list);
        }
        _ => filter["value"] = typed(values, ty),
    }
    Ok(filter)
}

/// A value as the field's ClickHouse type wants it in JSON: numbers for numeric
/// types, strings otherwise (and for text that is not a number, which the server
/// then rejects with its own message).
fn typed(text: &str, ty: &str) -> Value {
    let mut base = ty;
    while let Some(inner) = base
        .strip_prefix("Nullable(")
        .or_else(|| base.strip_prefix("LowCardinality("))
        .and_then(|s| s.strip_suffix(')'))
    {
        base = inner;
    }
    if base.starts_with("UInt") || base.starts_with("Int") {
        if let Ok(n) = text.parse::<u64>() {
            return json!(n);
        }
        if let Ok(n) = text.parse::<i64>() {
            return json!(n);
        }
    }
    if base.starts_with("Float") {
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    json!(text)
}

fn bar(quiet: bool, len: Option<u64>, template: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// Polls a job until it leaves queued/running; the finished job, or why it failed.
async fn wait(api: &Api, id: &str, estimate: Option<u64>, quiet: bool) -> anyhow::Result<Value> {
    let bar = match estimate {
        Some(n) if n > 0 => bar(
            quiet,
            Some(n),
            "{spinner} {msg:9} [{bar:30}] {human_pos}/{human_len} rows  {elapsed}",
        ),
        _ => bar(quiet, None, "{spinner} {msg:9} {human_pos} rows  {elapsed}"),
    };
    let mut failures = 0;
    let job = loop {
        let job = match api.job(id).await {
            Ok(job) => {
                failures = 0;
                job
            }
            // A restarting or overloaded server is worth a few more polls.
            Err(e) if failures < POLL_RETRIES && is_transient(&e) => {
                failures += 1;
                bar.set_message("retrying");
                tokio::time::sleep(POLL_EVERY * 4).await;
                continue;
            }
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        let status = job["status"].as_str().unwrap_or("");
        bar.set_message(status.to_string());
        bar.set_position(job["progress"]["rows"].as_u64().unwrap_or(0));
        if !matches!(status, "queued" | "running") {
            break job;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    bar.finish_and_clear();
    let job = finished(job)?;
    eprintln!(
        "export {id} succeeded: {} rows in {} file(s)",
        job["progress"]["rows"].as_u64().unwrap_or(0),
        job["parts"].as_array().map_or(0, Vec::len)
    );
    Ok(job)
}

/// 5xx answers and connection failures: a later poll may succeed.
fn is_transient(e: &anyhow::Error) -> bool {
    let text = e.to_string();
    text.starts_with("cannot reach")
        || text.ends_with("did not answer in time")
        || ["502", "503", "504"]
            .iter()
            .any(|code| text.starts_with(code))
}

/// The job if it succeeded; otherwise why not.
fn finished(job: Value) -> anyhow::Result<Value> {
    let id = job["id"].as_str().unwrap_or("?");
    match job["status"].as_str() {
        Some("succeeded") => Ok(job),
        Some("failed") => bail!(
            "export {id} failed: {}",
            job["error"]["message"]
                .as_str()
                .or(job["error"]["code"].as_str())
                .unwrap_or("no reason given")
        ),
        Some("canceled") => bail!("export {id} was canceled"),
        Some("expired") => bail!("export {id} has expired: its files are gone"),
        other => bail!("export {id} is {}", other.unwrap_or("in an unknown state")),
    }
}

/// Downloads every part of a succeeded job into `dir`; prints each saved path.
async fn save_all(api: &Api, job: &Value, dir: &Path, quiet: bool) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let parts = job["parts"].as_array().cloned().unwrap_or_default();
    let total: u64 = parts.iter().filter_map(|p| p["bytes"].as_u64()).sum();
    let bar = bar(
        quiet,
        Some(total),
        "{spinner} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}  {msg}",
    );
    for part in &parts {
        let path = save_part(api, part, dir, &bar).await.inspect_err(|_| {
            bar.abandon();
        })?;
        bar.suspend(|| println!("{}", path.display()));
    }
    bar.finish_and_clear();
    eprintln!(
        "{} file(s), {total} bytes, SHA-256 verified, in {}",
        parts.len(),
        dir.display()
    );
    Ok(())
}

/// One part, resumed from `<file>.partial` when there is one, checked, renamed.
async fn save_part(
    api: &Api,
    part: &Value,
    dir: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<PathBuf> {
    let n = part["n"].as_u64().unwrap_or(0);
    let file = part["file"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("part-{n:05}"));
    // The name comes from the server: a plain file name, nothing that climbs out of DIR.
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !plain {
        bail!("part {n} has an unexpected file name `{file}`");
    }
    let url = part["url"]
        .as_str()
        .ok_or_else(|| anyhow!("part {n} has no url"))?;
    let sha = part["sha256"].as_str().unwrap_or("").to_ascii_lowercase();
    let size = part["bytes"].as_u64().unwrap_or(0);
    let target = dir.join(&file);
    let partial = dir.join(format!("{file}.partial"));

    if tokio::fs::try_exists(&target).await.unwrap_or(false) {
        if sha256_file(&target).await? == sha {
            bar.inc(size);
            bar.suspend(|| eprintln!("{file}: already downloaded"));
            return Ok(target);
        }
        bar.suspend(|| eprintln!("{file}: the file there does not match; downloading it again"));
    }
    for attempt in 0..2 {
        let have = match tokio::fs::metadata(&partial).await {
            Ok(m) if m.len() <= size => m.len(),
            Ok(_) => {
                tokio::fs::remove_file(&partial).await?;
                0
            }
            Err(_) => 0,
        };
        if have < size || size == 0 {
            fetch(api, url, &file, &partial, have, &sha, bar).await?;
        } else {
            bar.inc(have);
        }
        let got = sha256_file(&partial).await?;
        if got == sha {
            tokio::fs::rename(&partial, &target)
                .await
                .with_context(|| format!("cannot rename {}", partial.display()))?;
            return Ok(target);
        }
        tokio::fs::remove_file(&partial).await?;
        if attempt == 0 {
            bar.suspend(|| {
                eprintln!(
                    "{file}: SHA-256 {got} does not match the server's {sha}; downloading it again from the start"
                )
            });
            bar.set_position(bar.position().saturating_sub(size));
        }
    }
    bail!("{file}: downloaded twice and its SHA-256 still does not match {sha}")
}

/// Appends the part's bytes from `have` on to `partial` (or rewrites it when the
/// server sends the whole file).
async fn fetch(
    api: &Api,
    url: &str,
    file: &str,
    partial: &Path,
    have: u64,
    sha: &str,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut have = have;
    let resp = loop {
        let mut req = api.request(reqwest::Method::GET, url);
        if have > 0 {
            req = req
                .header(header::RANGE, format!("bytes={have}-"))
                .header(header::IF_RANGE, format!("\"{sha}\""));
        }
        match api.send(req).await {
            // The partial file is longer than what the server has: start over.
            Err(e) if have > 0 && e.to_string().starts_with("416") => have = 0,
            other => break other?,
        }
    };
    let resumed = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
    if resumed {
        let range = resp
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !range.starts_with(&format!("bytes {have}-")) {
            bail!("{file}: asked for bytes from {have}, the server sent `{range}`");
        }
        bar.inc(have);
        bar.suspend(|| eprintln!("{file}: resuming at byte {have}"));
    }
    let mut out = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(partial)
        .await
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let mut out_buf = tokio::io::BufWriter::with_capacity(1 << 20, &mut out);
    let mut body = resp.bytes_stream();
    let result = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| anyhow!("{file}: the download broke off: {}", error_chain(&e)))?;
            out_buf.write_all(&chunk).await?;
            bar.inc(chunk.len() as u64);
        }
        anyhow::Ok(())
    }
    .await;
    // Whatever arrived stays in the partial file for the next run to resume.
    out_buf.flush().await?;
    out.sync_all().await?;
    result
}

async fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        anyhow::Ok(hex::encode(h.finalize()))
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice() -> Value {
        json!({"name": "clicks", "fields": [
            {"name": "country_code", "type": "LowCardinality(String)", "filterable": true,
             "ops": ["eq", "ne", "in", "not_in", "prefix"]},
            {"name": "cost", "type": "Nullable(Float64)", "filterable": true,
             "ops": ["eq", "in", "gt", "between", "is_null"]},
            {"name": "app_id", "type": "UInt64", "filterable": true, "ops": ["eq", "in"]},
            {"name": "city", "type": "String", "filterable": true, "ops": ["eq"]},
            {"name": "note", "type": "String", "filterable": false},
        ]})
    }

    #[test]
    fn filters_parse_into_typed_api_filters() {
        let s = slice();
        let cases = [
            (
                "country_code in US, DE",
                json!({"field": "country_code", "op": "in", "values": ["US", "DE"]}),
            ),
            (
                "cost gt 0.5",
                json!({"field": "cost", "op": "gt", "value": 0.5}),
            ),
            (
                "cost between 1,2",
                json!({"field": "cost", "op": "between", "values": [1.0, 2.0]}),
            ),
            (
                "app_id in 18446744073709551615,7",
                json!({"field": "app_id", "op": "in", "values": [u64::MAX, 7]}),
            ),
            (
                "city eq Washington, D.C.",
                json!({"field": "city", "op": "eq", "value": "Washington, D.C."}),
            ),
            (
                "  cost   is_null ",
                json!({"field": "cost", "op": "is_null"}),
            ),
            (
                "app_id eq abc",
                json!({"field": "app_id", "op": "eq", "value": "abc"}),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_filter(text, &s).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn bad_filters_say_what_to_write() {
        let s = slice();
        for (text, says) in [
            ("country", "FIELD OP VALUES"),
            (
                "country in US",
                "has no field `country`; filterable fields: country_code, cost, app_id, city",
            ),
            ("cost prefix 1", "use one of eq, in, gt, between, is_null"),
            ("note eq x", "cannot be filtered"),
            ("cost between 1", "two values"),
            ("cost in ,", "values separated by commas"),
            ("cost is_null 1", "takes no value"),
        ] {
            let e = parse_filter(text, &s).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--filter '{text}'")), "{e}");
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn problems_name_the_filter() {
        let e = with_filter_hint(
            anyhow!("422 The request is not acceptable: filters[1].value: `x` is not a number"),
            &["a eq 1".into(), "cost gt x".into()],
        );
        assert!(e.to_string().ends_with("(in --filter 'cost gt x')"), "{e}");
    }
}
