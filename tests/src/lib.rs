//! The shared harness for end-to-end tests.
//!
//! Every test starts the real `logport` binary as a child process, against the real
//! ClickHouse server named by `LOGPORT_TEST_CLICKHOUSE_URL` (started by
//! `scripts/test.sh` or `.ci/run`), with its own ClickHouse database, its own data
//! directory (SQLite job store, local object store) and a free port, and talks to it
//! over HTTP. Nothing is shared between tests, so they run in any order and in
//! parallel. A test that cannot reach ClickHouse fails; it never skips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// Tokens every test service accepts.
pub const ACME: &str = "test-token-acme";
pub const GLOBEX: &str = "test-token-globex";

/// The ClickHouse server tests use.
pub fn clickhouse_url() -> String {
    match std::env::var("LOGPORT_TEST_CLICKHOUSE_URL") {
        Ok(u) if !u.is_empty() => u.trim_end_matches('/').to_string(),
        _ => panic!(
            "LOGPORT_TEST_CLICKHOUSE_URL is not set: run the tests with ./scripts/test.sh, \
             which starts a private ClickHouse server"
        ),
    }
}

/// The `logport` binary cargo built next to this test executable.
pub fn logport_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LOGPORT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/logport
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("logport");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p logport), or use ./scripts/test.sh",
        bin.display()
    );
    bin
}

/// Runs one SQL statement on ClickHouse and returns the TSV answer. Blocking and
/// dependency-free so it also works from `Drop`.
pub fn clickhouse_blocking(url: &str, sql: &str) -> Result<String, String> {
    let addr = url
        .strip_prefix("http://")
        .ok_or("only http:// ClickHouse URLs are supported in tests")?;
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let req = format!(
        "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    stream
        .write_all(req.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.to_string())
    } else {
        Err(format!("{}: {body}", head.lines().next().unwrap_or("")))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// How to start a service.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra `LOGPORT_*` variables.
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A running `logport serve` with its own database and data directory.
pub struct Service {
    child: Option<Child>,
    pub base: String,
    pub database: String,
    pub clickhouse: String,
    pub dir: tempfile::TempDir,
    options: Options,
    port: u16,
    pub http: reqwest::Client,
}

impl Service {
    pub async fn start() -> Service {
        Service::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Service {
        let clickhouse = clickhouse_url();
        clickhouse_blocking(&clickhouse, "SELECT 1").unwrap_or_else(|e| {
            panic!("ClickHouse at {clickhouse} is not answering ({e}); tests need it")
        });
        let database = format!("lpt_{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::Builder::new()
            .prefix("logport-test-")
            .tempdir()
            .expect("temp dir");
        let mut svc = Service {
            child: None,
            base: String::new(),
            database,
            clickhouse,
            dir,
            options,
            port: free_port(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        };
        svc.spawn().await;
        svc
    }

    /// The environment a `logport` process of this service gets.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(logport_bin());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,logport=debug")
            .env("LOGPORT_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("LOGPORT_CLICKHOUSE_URL", &self.clickhouse)
            .env("LOGPORT_CLICKHOUSE_DATABASE", &self.database)
            .env(
                "LOGPORT_OBJECT_STORE_URL",
                format!("file://{}", self.dir.path().join("exports").display()),
            )
            .env(
                "LOGPORT_JOB_STORE_URL",
                format!("sqlite://{}", self.dir.path().join("jobs.db").display()),
            )
            .env(
                "LOGPORT_STATIC_TOKENS",
                format!("{ACME}@acme,{GLOBEX}@globex"),
            )
            .env("LOGPORT_HEARTBEAT", "1s")
            .env("LOGPORT_LEASE", "5s");
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("logport.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = self
            .command(&["serve"])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn logport");
        self.child = Some(child);
        self.base = format!("http://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(self.url("/healthz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("logport exited with {status} at start:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "logport did not start:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `kill -9`: no cleanup, no graceful shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the process and starts a new one on the same database and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Restarts with different options (same database and data).
    pub async fn restart_with(&mut self, options: Options) {
        self.kill();
        self.options = options;
        self.spawn().await;
    }

    pub fn get(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(token)
    }

    pub fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(token)
    }

    /// POSTs NDJSON lines to `/v1/ingest/{slice}`; panics unless 200.
    pub async fn ingest(&self, token: &str, slice: &str, rows: &[Value]) -> Value {
        let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
        let resp = self
            .post(&format!("/v1/ingest/{slice}"), token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("ingest request");
        let status = resp.status();
        let body: Value = resp.json().await.expect("ingest answer is JSON");
        assert_eq!(status, 200, "ingest failed: {body}");
        body
    }

    /// Creates an export; panics unless 202.
    pub async fn create_export(&self, token: &str, request: &Value) -> Value {
        let resp = self
            .post("/v1/exports", token)
            .json(request)
            .send()
            .await
            .expect("create export");
        let status = resp.status();
        let body: Value = resp.json().await.expect("export answer is JSON");
        assert_eq!(status, 202, "export not accepted: {body}");
        body
    }

    /// Polls until the export leaves queued/running; returns its final view.
    pub async fn wait_export(&self, token: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job: Value = self
                .get(&format!("/v1/exports/{id}"), token)
                .send()
                .await
                .expect("poll")
                .json()
                .await
                .expect("job JSON");
            match job["status"].as_str() {
                Some("queued") | Some("running") => {}
                _ => return job,
            }
            assert!(
                Instant::now() < deadline,
                "export {id} did not finish: {job}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates an export, waits for success, and returns (job, bytes of every part).
    pub async fn export(&self, token: &str, request: &Value) -> (Value, Vec<Vec<u8>>) {
        let created = self.create_export(token, request).await;
        let id = created["id"].as_str().expect("job id").to_string();
        let job = self.wait_export(token, &id).await;
        assert_eq!(
            job["status"],
            "succeeded",
            "export failed: {job}\n{}",
            self.logs()
        );
        let mut parts = Vec::new();
        for p in job["parts"].as_array().expect("parts") {
            let url = p["url"].as_str().expect("part url");
            let resp = self.get(url, token).send().await.expect("download");
            assert_eq!(resp.status(), 200, "download {url}");
            parts.push(resp.bytes().await.expect("part body").to_vec());
        }
        (job, parts)
    }

    /// Runs SQL on this service's ClickHouse database (tables unqualified are not
    /// resolved: qualify them with `self.database`).
    pub fn clickhouse(&self, sql: &str) -> String {
        clickhouse_blocking(&self.clickhouse, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `SELECT count()` of a slice's table for a tenant.
    pub fn count(&self, slice: &str, tenant: &str) -> u64 {
        self.clickhouse(&format!(
            "SELECT count() FROM {}.{slice} WHERE tenant_id = '{tenant}'",
            self.database
        ))
        .trim()
        .parse()
        .expect("count")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            eprintln!("---- logport log (last lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = clickhouse_blocking(
            &self.clickhouse,
            &format!("DROP DATABASE IF EXISTS {}", self.database),
        );
    }
}

/// Parses CSV bytes (with a header row) into records, with the `csv` crate as an
/// independent reader.
pub fn parse_csv(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let header = r
        .headers()
        .expect("csv header")
        .iter()
        .map(String::from)
        .collect();
    let rows = r
        .records()
        .map(|rec| rec.expect("csv record").iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// Parses JSON lines.
pub fn parse_jsonl(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// A problem+json answer: status, content type and body.
pub async fn problem(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(ct, "application/problem+json", "{status} {body}");
    for k in ["type", "title", "status", "detail"] {
        assert!(body.get(k).is_some(), "problem lacks {k}: {body}");
    }
    assert_eq!(body["status"], status, "{body}");
    (status, body)
}
