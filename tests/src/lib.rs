//! The shared harness for end-to-end tests.
//!
//! Every test starts the real `logport` binary as a child process, against the real
//! ClickHouse server named by `LOGPORT_TEST_CLICKHOUSE_URL` (started by
//! `scripts/test.sh` or `.ci/run`), with its own ClickHouse database, its own data
//! directory (SQLite job store, local object store) and a free port, and talks to it
//! over HTTP. Nothing is shared between tests, so they run in any order and in
//! parallel. A test that cannot reach ClickHouse fails; it never skips.
//!
//! This file starts and stops the processes (the service, private ClickHouse servers,
//! PostgreSQL databases). The modules hold what test files share: `requests` (the
//! HTTP calls tests make again and again), `decode` (independent readers of export
//! formats), `expected` (value-by-value checks of exported rows), `clock` (civil
//! dates), `schemas` (test slices) and `s3` (a test bucket).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

mod clock;
mod decode;
mod expected;
mod requests;
mod s3;
mod schemas;

pub use clock::*;
pub use decode::*;
pub use expected::*;
pub use requests::*;
pub use s3::*;
pub use schemas::*;

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
///
/// The placement fields (which ClickHouse server and database, which job store, which
/// object store directory) default to the service's own; set them to make several
/// services share one queue and one set of files. They are fixed when the service
/// starts: `restart_with` keeps them and only changes `env`.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra `LOGPORT_*` variables.
    pub env: Vec<(String, String)>,
    /// ClickHouse HTTP URL instead of `LOGPORT_TEST_CLICKHOUSE_URL` (e.g. a
    /// [`PrivateClickHouse`]).
    pub clickhouse_url: Option<String>,
    /// An existing ClickHouse database to use instead of a fresh one; the service
    /// does not drop it (its owner does).
    pub clickhouse_database: Option<String>,
    /// Job store URL instead of the service's own SQLite file (e.g. a [`PgDatabase`]).
    pub job_store_url: Option<String>,
    /// Object store directory instead of the service's own `exports/`.
    pub object_store_dir: Option<PathBuf>,
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn clickhouse_url(mut self, url: &str) -> Self {
        self.clickhouse_url = Some(url.into());
        self
    }

    pub fn clickhouse_database(mut self, database: &str) -> Self {
        self.clickhouse_database = Some(database.into());
        self
    }

    pub fn job_store_url(mut self, url: &str) -> Self {
        self.job_store_url = Some(url.into());
        self
    }

    pub fn object_store_dir(mut self, dir: &Path) -> Self {
        self.object_store_dir = Some(dir.to_path_buf());
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
    /// Whether `database` was made for this service (and is dropped with it).
    owns_database: bool,
    job_store_url: String,
    object_store_dir: PathBuf,
}

impl Service {
    pub async fn start() -> Service {
        Service::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Service {
        let clickhouse = options
            .clickhouse_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(clickhouse_url);
        clickhouse_blocking(&clickhouse, "SELECT 1").unwrap_or_else(|e| {
            panic!("ClickHouse at {clickhouse} is not answering ({e}); tests need it")
        });
        let (database, owns_database) = match &options.clickhouse_database {
            Some(db) => (db.clone(), false),
            None => (format!("lpt_{}", uuid::Uuid::new_v4().simple()), true),
        };
        let dir = tempfile::Builder::new()
            .prefix("logport-test-")
            .tempdir()
            .expect("temp dir");
        let job_store_url = options
            .job_store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("jobs.db").display()));
        let object_store_dir = options
            .object_store_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("exports"));
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
                // Shorter than the server's keep-alive, so a pooled connection is
                // never one the server is closing.
                .pool_idle_timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
            owns_database,
            job_store_url,
            object_store_dir,
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
                format!("file://{}", self.object_store_dir.display()),
            )
            .env("LOGPORT_JOB_STORE_URL", &self.job_store_url)
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

    /// The process id of the running `logport serve`.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("the service is not running")
            .id()
    }

    /// The process's peak resident memory (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kb * 1024
    }

    /// `GET /metrics` without a token: the exposition text, whatever the status.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one series of `GET /metrics` (`name` or `name{label="v"}`, as the
    /// exposition spells it); 0 when it has not been recorded yet.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().expect("a metric value"))
    }

    /// Sends a signal (`TERM`, `STOP`, `CONT`, ...) to the process with `kill`.
    pub fn signal(&self, name: &str) {
        send_signal(self.pid(), name);
    }

    /// SIGSTOP: the process freezes (a zombie worker, a stalled VM).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Service::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Has the process exited? Its status if so (without waiting).
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits (polling) until the process exits on its own; panics after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "logport did not exit within {within:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where this service's object store keeps its files (`file://` root).
    pub fn object_store_dir(&self) -> &Path {
        &self.object_store_dir
    }

    /// The job store URL this service uses.
    pub fn job_store_url(&self) -> &str {
        &self.job_store_url
    }

    pub fn get(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(token)
    }

    pub fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(token)
    }

    pub fn delete(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(token)
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
        if self.owns_database {
            let _ = clickhouse_blocking(
                &self.clickhouse,
                &format!("DROP DATABASE IF EXISTS {}", self.database),
            );
        }
    }
}

/// `kill -s NAME PID`.
fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {pid} failed: {status}");
}

/// Is the process running (not gone, not a zombie)?
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The PostgreSQL server tests use for job stores shared by several replicas.
pub fn postgres_url() -> String {
    match std::env::var("LOGPORT_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
    }
}

/// Runs SQL with `psql` against a PostgreSQL URL; returns unaligned tuples-only output.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql (install postgresql-client): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A fresh PostgreSQL database on [`postgres_url`]'s server, for one test's job
/// store; dropped (connections and all) on Drop. A test that cannot reach
/// PostgreSQL fails.
pub struct PgDatabase {
    pub name: String,
    /// `postgres://…/name`: pass to [`Options::job_store_url`].
    pub url: String,
    admin: String,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        let admin = postgres_url();
        let name = format!("lpt_{}", uuid::Uuid::new_v4().simple());
        psql(&admin, &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} is not usable ({e}); the replica tests need it")
        });
        // Same server and credentials, another database (keep any ?query).
        let (head, tail) = admin
            .rsplit_once('/')
            .expect("postgres URL with a database");
        let query = tail.split_once('?').map(|(_, q)| format!("?{q}"));
        let url = format!("{head}/{name}{}", query.unwrap_or_default());
        PgDatabase { name, url, admin }
    }

    /// Runs SQL in this database (e.g. to read the `jobs` table).
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let force = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if psql(&self.admin, &force).is_err() {
            let _ = psql(
                &self.admin,
                &format!("DROP DATABASE IF EXISTS {}", self.name),
            );
        }
    }
}

/// `private-server.sh start`'s exit code when another server answers on its port.
const PORT_TAKEN: i32 = 3;

/// A ClickHouse server of one test's own, started with
/// `deploy/clickhouse/private-server.sh`, that the test may stop, crash, pause and
/// start again on the same ports (so services keep their URL). Stopped on Drop.
pub struct PrivateClickHouse {
    dir: tempfile::TempDir,
    http_port: u16,
    tcp_port: u16,
    pub url: String,
    paused: std::sync::atomic::AtomicBool,
}

impl PrivateClickHouse {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse/private-server.sh")
    }

    /// The lane that runs the tests against another ClickHouse (scripts/test.sh's
    /// current-engine lane) sets `LOGPORT_TEST_SHARED_CLICKHOUSE_ONLY` and leaves out
    /// the nextest group `own-clickhouse`: a test that starts its own (18.16) server
    /// there is missing from that group's list in `.config/nextest.toml`.
    fn allowed() {
        if std::env::var_os("LOGPORT_TEST_SHARED_CLICKHOUSE_ONLY").is_some() {
            panic!(
                "this test starts a ClickHouse of its own (PrivateClickHouse), which this \
                 lane does not allow: add it to the `own-clickhouse` test group in \
                 .config/nextest.toml"
            );
        }
    }

    /// Starts a new server on free ports with an empty data directory. Two tests may
    /// be handed the same free port; the one whose server finds it taken tries others.
    pub fn launch() -> PrivateClickHouse {
        Self::allowed();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("logport-test-ch-")
                .tempdir()
                .expect("temp dir");
            let (http_port, tcp_port) = (free_port(), free_port());
            let ch = PrivateClickHouse {
                dir,
                http_port,
                tcp_port,
                url: format!("http://127.0.0.1:{http_port}"),
                paused: std::sync::atomic::AtomicBool::new(false),
            };
            match ch.try_start() {
                Ok(()) => return ch,
                Err(PORT_TAKEN) => continue,
                Err(code) => panic!("private ClickHouse did not start (exit {code}); see above"),
            }
        }
        panic!("no free ports for a private ClickHouse after 5 tries");
    }

    /// (Re)starts the server on its ports and data; returns when it answers.
    pub fn start(&self) {
        if let Err(code) = self.try_start() {
            panic!("private ClickHouse did not start (exit {code}); see above");
        }
    }

    /// [`PrivateClickHouse::start`], answering `private-server.sh`'s exit code on failure
    /// ([`PORT_TAKEN`]: another server holds a port).
    fn try_start(&self) -> Result<(), i32> {
        let out = Command::new(Self::script())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.http_port.to_string())
            .arg(self.tcp_port.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run private-server.sh");
        if !out.status.success() {
            eprintln!(
                "private ClickHouse did not start: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Err(out.status.code().unwrap_or(-1));
        }
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(url, self.url, "private ClickHouse came up on another port");
        Ok(())
    }

    /// Stops the server cleanly (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&self) {
        self.resume();
        let status = Command::new(Self::script())
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("run private-server.sh");
        assert!(status.success(), "private ClickHouse did not stop");
    }

    /// Crashes the server (SIGKILL): open connections are reset mid-request.
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, "KILL");
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_file(self.dir.path().join("server.pid"));
        }
        self.paused
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("server.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGSTOP: connections are still accepted (by the kernel) but nothing is
    /// answered, so queries hang.
    pub fn pause(&self) {
        let pid = self.pid().expect("private ClickHouse is not running");
        send_signal(pid, "STOP");
        self.paused.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// SIGCONT after [`PrivateClickHouse::pause`].
    pub fn resume(&self) {
        if self.paused.swap(false, std::sync::atomic::Ordering::SeqCst) {
            if let Some(pid) = self.pid() {
                send_signal(pid, "CONT");
            }
        }
    }

    /// Runs SQL on this server.
    pub fn query(&self, sql: &str) -> String {
        clickhouse_blocking(&self.url, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The native-protocol port (what `remote_servers` and Distributed tables use).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// Starts `shards` servers that each know the cluster `name`, one shard per
    /// server (`<remote_servers>` in every server's `config.d/`, which ClickHouse
    /// merges into the configuration `private-server.sh` writes). Without ZooKeeper
    /// there is no `ON CLUSTER` DDL: create tables on every server directly.
    pub fn launch_cluster(name: &str, shards: usize) -> Vec<PrivateClickHouse> {
        Self::allowed();
        let servers: Vec<PrivateClickHouse> = (0..shards)
            .map(|_| {
                let dir = tempfile::Builder::new()
                    .prefix("logport-test-ch-")
                    .tempdir()
                    .expect("temp dir");
                let http_port = free_port();
                PrivateClickHouse {
                    dir,
                    http_port,
                    tcp_port: free_port(),
                    url: format!("http://127.0.0.1:{http_port}"),
                    paused: std::sync::atomic::AtomicBool::new(false),
                }
            })
            .collect();
        let shard_xml: String = servers
            .iter()
            .map(|s| {
                format!(
                    "<shard><replica><host>127.0.0.1</host><port>{}</port></replica></shard>",
                    s.tcp_port
                )
            })
            .collect();
        let xml = format!(
            "<?xml version=\"1.0\"?>\n<yandex><remote_servers><{name}>{shard_xml}</{name}></remote_servers></yandex>\n"
        );
        for s in &servers {
            let conf_d = s.dir.path().join("config.d");
            std::fs::create_dir_all(&conf_d).expect("config.d");
            std::fs::write(conf_d.join("remote_servers.xml"), &xml).expect("remote_servers.xml");
            s.start();
        }
        servers
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-s", "CONT", &pid.to_string()])
                .status();
            let _ = Command::new(Self::script())
                .arg("stop")
                .arg(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------
// Tokens made with `logport token`, and raw HTTP (tests/tests/security.rs).
// ---------------------------------------------------------------------------------

/// A token made with `logport token create` for a service.
#[derive(Debug, Clone)]
pub struct CliToken {
    /// The secret (`lp_…`): what requests send.
    pub secret: String,
    /// The public id (`tok_…`).
    pub id: String,
    /// What `token create --json` printed.
    pub info: Value,
}

impl Service {
    /// Runs `logport <args>` with this service's configuration (its job store);
    /// returns (success, stdout, stderr).
    pub fn logport_cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run logport");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// `logport token create --tenant T --scopes S [extra…] --json`; panics on failure.
    pub fn create_token(&self, tenant: &str, scopes: &str, extra: &[&str]) -> CliToken {
        let mut args = vec!["token", "create", "--tenant", tenant, "--scopes", scopes];
        args.extend_from_slice(extra);
        args.push("--json");
        let (ok, stdout, stderr) = self.logport_cli(&args);
        assert!(ok, "token create {args:?} failed: {stderr}");
        let info: Value = serde_json::from_str(stdout.trim()).expect("token create prints JSON");
        CliToken {
            secret: info["token"].as_str().expect("token").to_string(),
            id: info["id"].as_str().expect("id").to_string(),
            info,
        }
    }

    /// `logport token revoke ID --json`; panics on failure.
    pub fn revoke_token(&self, id: &str) -> Value {
        let (ok, stdout, stderr) = self.logport_cli(&["token", "revoke", id, "--json"]);
        assert!(ok, "token revoke {id} failed: {stderr}");
        serde_json::from_str(stdout.trim()).expect("token revoke prints JSON")
    }

    /// Sends `request` (a whole HTTP/1.1 request, bytes as given: no URL
    /// normalisation, any header bytes) and returns the status, the head and the body.
    pub fn raw_http(&self, request: &[u8]) -> (u16, String, Vec<u8>) {
        let addr = self.base.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
        stream.write_all(request).expect("send");
        let mut resp = Vec::new();
        let _ = stream.read_to_end(&mut resp);
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(resp.len());
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let body = resp.get(split + 4..).unwrap_or_default().to_vec();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head, body)
    }

    /// A `GET path` with a bearer token, sent raw (`Connection: close`).
    pub fn raw_get(&self, path: &[u8], token: &str) -> (u16, String, Vec<u8>) {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(path);
        req.extend_from_slice(
            format!(
                " HTTP/1.1\r\nHost: logport\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        self.raw_http(&req)
    }
}

// ---------------------------------------------------------------------------------
// Slow queries (tests/tests/bounded.rs, compat.rs): a column that takes seconds to read.
// ---------------------------------------------------------------------------------

impl Service {
    /// Makes reading the `String` column `column` of `slice` slow, for queries that must
    /// still be running when a test looks: the table becomes a view over its rows plus
    /// `rows` rows of `tenant` (`app_id` `app_id`, `event_time` noon of `day`), and the
    /// view computes `column` with ClickHouse's `sleepEachRow` (40 µs a row: 2.6 s per
    /// 65,536-row block, between which a query notices KILL QUERY and
    /// max_execution_time). 1,000,000 rows take about 20 s on two cores. Queries that
    /// do not read the column (counts without a filter on it) stay fast: ClickHouse
    /// reads only the view columns a query uses. Ingest into the slice stops working.
    pub fn slow_column(
        &self,
        slice: &str,
        column: &str,
        tenant: &str,
        app_id: u64,
        day: &str,
        rows: u64,
    ) {
        let db = &self.database;
        self.clickhouse(&format!("RENAME TABLE {db}.{slice} TO {db}.{slice}_data"));
        let columns = self.clickhouse(&format!(
            "SELECT name FROM system.columns WHERE database = '{db}' AND table = '{slice}_data' \
             FORMAT TSV"
        ));
        let select: Vec<String> = columns
            .lines()
            .map(|c| {
                if c == column {
                    format!("if(sleepEachRow(0.00004) = 0, `{c}`, '') AS `{c}`")
                } else {
                    format!("`{c}`")
                }
            })
            .collect();
        self.clickhouse(&format!(
            "INSERT INTO {db}.{slice}_data (tenant_id, app_id, event_time, received_time, `{column}`) \
             SELECT '{tenant}', {app_id}, toDateTime('{day} 12:00:00'), now() - 60, \
             concat('slow-', toString(number)) FROM numbers({rows})"
        ));
        self.clickhouse(&format!(
            "CREATE VIEW {db}.{slice} AS SELECT {} FROM {db}.{slice}_data",
            select.join(", ")
        ));
    }

    /// Queries this service runs on ClickHouse for requests (ids `logport-req-…`) that
    /// read its database, as `system.processes` lists them now.
    pub fn running_request_queries(&self) -> u64 {
        self.clickhouse(&format!(
            "SELECT count() FROM system.processes WHERE startsWith(query_id, 'logport-req-') \
             AND position(query, '{}') > 0",
            self.database
        ))
        .trim()
        .parse()
        .expect("a count")
    }

    /// Waits until no request query of this service runs; how long that took. Panics
    /// after `within`.
    pub async fn wait_request_queries_gone(&self, within: Duration) -> Duration {
        let started = Instant::now();
        while self.running_request_queries() > 0 {
            assert!(
                started.elapsed() < within,
                "a request query still runs after {within:?}:\n{}",
                self.clickhouse("SELECT query_id, elapsed, query FROM system.processes FORMAT TSV")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }
}
