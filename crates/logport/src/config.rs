//! The one configuration type: defaults < `logport.toml` < `LOGPORT_*` environment <
//! command-line flags. Parsing stops at the first bad value and names its key or
//! variable; what comes out has been validated and cannot be half-set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything `logport` can be told, as the file spells it.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
#[group(skip)]
pub struct Config {
    #[arg(long, env = "LOGPORT_LISTEN")]
    pub listen: String,
    #[arg(long, env = "LOGPORT_CLICKHOUSE_URL")]
    pub clickhouse_url: String,
    #[arg(long, env = "LOGPORT_CLICKHOUSE_USER")]
    pub clickhouse_user: Option<String>,
    #[arg(long, env = "LOGPORT_CLICKHOUSE_PASSWORD")]
    pub clickhouse_password: Option<String>,
    #[arg(long, env = "LOGPORT_CLICKHOUSE_DATABASE")]
    pub clickhouse_database: String,
    /// `file:///dir` (default: `./data/exports`, made absolute).
    #[arg(long, env = "LOGPORT_OBJECT_STORE_URL")]
    pub object_store_url: Option<String>,
    #[arg(long, env = "LOGPORT_JOB_STORE_URL")]
    pub job_store_url: String,
    #[arg(long, env = "LOGPORT_WORKERS", value_parser = number::<usize>)]
    pub workers: usize,
    /// How long finished export files stay (`7d`, `12h`, `30m`).
    #[arg(long, env = "LOGPORT_EXPORT_TTL")]
    pub export_ttl: String,
    /// `token@tenant[,token@tenant…]`: bootstrap tokens for development and tests.
    #[arg(long, env = "LOGPORT_STATIC_TOKENS")]
    pub static_tokens: Option<String>,
    /// Load slices from this directory instead of the catalog built into the binary.
    #[arg(long, env = "LOGPORT_SCHEMA_DIR")]
    pub schema_dir: Option<PathBuf>,
    #[arg(long, env = "LOGPORT_INGEST_MAX_BYTES", value_parser = number::<usize>)]
    pub ingest_max_bytes: usize,
    #[arg(long, env = "LOGPORT_INGEST_MAX_LINE_BYTES", value_parser = number::<usize>)]
    pub ingest_max_line_bytes: usize,
    #[arg(long, env = "LOGPORT_INGEST_MAX_ROWS", value_parser = number::<usize>)]
    pub ingest_max_rows: usize,
    #[arg(long, env = "LOGPORT_JSON_MAX_BYTES", value_parser = number::<usize>)]
    pub json_max_bytes: usize,
    /// Longest a preview (`POST /v1/logs/{slice}/preview`) may run before it answers 504.
    #[arg(long, env = "LOGPORT_PREVIEW_TIMEOUT")]
    pub preview_timeout: String,
    /// Most bytes of rows one preview answers (cut beyond, with `"truncated": true`).
    #[arg(long, env = "LOGPORT_PREVIEW_MAX_BYTES", value_parser = number::<usize>)]
    pub preview_max_bytes: usize,
    /// Longest a count or size estimate made for a request may run (504 beyond).
    #[arg(long, env = "LOGPORT_QUERY_TIMEOUT")]
    pub query_timeout: String,
    /// Most parts one export may write (422 at creation when the estimate passes it).
    #[arg(long, env = "LOGPORT_EXPORT_MAX_PARTS", value_parser = number::<u32>)]
    pub export_max_parts: u32,
    /// Longest a small ingest request waits to be coalesced with others.
    #[arg(long, env = "LOGPORT_INGEST_BATCH_WAIT")]
    pub ingest_batch_wait: String,
    /// How long the answer to an ingest request with an `Idempotency-Key` is kept for
    /// its retries (the events themselves are deduplicated for as long as they exist).
    #[arg(long, env = "LOGPORT_INGEST_KEY_TTL")]
    pub ingest_key_ttl: String,
    /// Parallel ClickHouse reads of one large export (each writes one part).
    #[arg(long, env = "LOGPORT_EXPORT_PARALLELISM", value_parser = number::<usize>)]
    pub export_parallelism: usize,
    /// Exports with fewer rows are read by one query.
    #[arg(long, env = "LOGPORT_EXPORT_PARALLEL_MIN_ROWS", value_parser = number::<u64>)]
    pub export_parallel_min_rows: u64,
    /// Memory every ingest request in progress may hold together (503 beyond).
    #[arg(long, env = "LOGPORT_INGEST_MAX_INFLIGHT_BYTES", value_parser = number::<usize>)]
    pub ingest_max_inflight_bytes: usize,
    /// Share of `ingest_max_inflight_bytes` one tenant may hold (0 < share ≤ 1); also
    /// the most one request may hold (413 beyond).
    #[arg(long, env = "LOGPORT_INGEST_TENANT_SHARE", value_parser = number::<f64>)]
    pub ingest_tenant_share: f64,
    /// How long an ingest body may take before its minimum rate counts.
    #[arg(long, env = "LOGPORT_INGEST_BODY_GRACE")]
    pub ingest_body_grace: String,
    /// Bytes per second an ingest body must arrive at, on average, after the grace
    /// (408 when slower; 0: no minimum).
    #[arg(long, env = "LOGPORT_INGEST_MIN_BODY_RATE", value_parser = number::<u64>)]
    pub ingest_min_body_rate: u64,
    #[arg(long, env = "LOGPORT_MAX_RANGE_DAYS", value_parser = number::<u32>)]
    pub max_range_days: u32,
    /// Most exports one tenant may have queued (429 beyond).
    #[arg(long, env = "LOGPORT_MAX_QUEUED_PER_TENANT", value_parser = number::<u64>)]
    pub max_queued_per_tenant: u64,
    /// Most exports one tenant may have running at once (others wait their turn).
    #[arg(long, env = "LOGPORT_MAX_RUNNING_PER_TENANT", value_parser = number::<u32>)]
    pub max_running_per_tenant: u32,
    /// Most rows one export may return (429 beyond; 0 = no limit, no count at submit).
    #[arg(long, env = "LOGPORT_MAX_ROWS_PER_EXPORT", value_parser = number::<u64>)]
    pub max_rows_per_export: u64,
    #[arg(long, env = "LOGPORT_MAX_ATTEMPTS", value_parser = number::<u32>)]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    #[arg(long, env = "LOGPORT_RETRY_BACKOFF")]
    pub retry_backoff: String,
    #[arg(long, env = "LOGPORT_RETRY_BACKOFF_MAX")]
    pub retry_backoff_max: String,
    /// How long running exports may take to finish after SIGTERM before they are
    /// handed back to the queue.
    #[arg(long, env = "LOGPORT_SHUTDOWN_GRACE")]
    pub shutdown_grace: String,
    /// How often expired export files are looked for.
    #[arg(long, env = "LOGPORT_JANITOR_INTERVAL")]
    pub janitor_interval: String,
    #[arg(long, env = "LOGPORT_LEASE")]
    pub lease: String,
    #[arg(long, env = "LOGPORT_HEARTBEAT")]
    pub heartbeat: String,
    /// `text` or `json`.
    #[arg(long, env = "LOGPORT_LOG_FORMAT")]
    pub log_format: String,
    /// Serve part downloads as a 302 to a presigned URL (S3 stores only).
    #[arg(long, env = "LOGPORT_PRESIGNED_DOWNLOADS", action = clap::ArgAction::Set, value_parser = boolean)]
    pub presigned_downloads: bool,
    /// How long a presigned download URL stays valid.
    #[arg(long, env = "LOGPORT_PRESIGN_TTL")]
    pub presign_ttl: String,
    /// How often the object store is swept for files no job owns any more.
    #[arg(long, env = "LOGPORT_ORPHAN_SWEEP_INTERVAL")]
    pub orphan_sweep_interval: String,
    /// Largest AppMetrica-style response; larger results answer 400 `Try to use more parts.`
    #[arg(long, env = "LOGPORT_COMPAT_MAX_RESPONSE_BYTES", value_parser = number::<u64>)]
    pub compat_max_response_bytes: u64,
    /// Bytes the processed, not yet cleaned Metrica-style log requests of one counter may hold.
    #[arg(long, env = "LOGPORT_COMPAT_COUNTER_QUOTA_BYTES", value_parser = number::<u64>)]
    pub compat_counter_quota_bytes: u64,
    /// Size at which Metrica-style log requests are cut into parts.
    #[arg(long, env = "LOGPORT_COMPAT_PART_MAX_BYTES", value_parser = number::<u64>)]
    pub compat_part_max_bytes: u64,
    /// Requests per second each API token may send, sustained (0: no limit).
    #[arg(long, env = "LOGPORT_RATE_LIMIT_PER_SECOND", value_parser = number::<f64>)]
    pub rate_limit_per_second: f64,
    /// Requests a token may send at once on top of the sustained rate.
    #[arg(long, env = "LOGPORT_RATE_LIMIT_BURST", value_parser = number::<u32>)]
    pub rate_limit_burst: u32,
    /// Failed authentications a peer address may make per minute, sustained (0: no
    /// limit); beyond, its unknown tokens get 429 without being looked up.
    #[arg(long, env = "LOGPORT_AUTH_FAILURES_PER_MINUTE", value_parser = number::<u32>)]
    pub auth_failures_per_minute: u32,
    /// Failed authentications a peer address may make at once.
    #[arg(long, env = "LOGPORT_AUTH_FAILURE_BURST", value_parser = number::<u32>)]
    pub auth_failure_burst: u32,
    /// Largest request line plus headers, in bytes (431 beyond).
    #[arg(long, env = "LOGPORT_MAX_HEADER_BYTES", value_parser = number::<usize>)]
    pub max_header_bytes: usize,
    /// Longest a handler may take before its answer starts (504 beyond).
    #[arg(long, env = "LOGPORT_REQUEST_TIMEOUT")]
    pub request_timeout: String,
    /// Longest a client may take to send a request's line and headers.
    #[arg(long, env = "LOGPORT_REQUEST_HEADER_TIMEOUT")]
    pub request_header_timeout: String,
    /// Shard the tables over this ClickHouse cluster (its name in the servers'
    /// `<remote_servers>`): `{slice}_local` tables plus Distributed `{slice}` tables.
    #[arg(long, env = "LOGPORT_CLICKHOUSE_CLUSTER")]
    pub clickhouse_cluster: Option<String>,
    /// HTTP URLs of every server of the cluster, where DDL and retention run
    /// (default: the cluster's hosts on `clickhouse_url`'s port).
    #[arg(long, env = "LOGPORT_CLICKHOUSE_CLUSTER_SERVERS", value_parser = url_list)]
    pub clickhouse_cluster_servers: UrlList,
    /// How often expired partitions are dropped.
    #[arg(long, env = "LOGPORT_RETENTION_INTERVAL")]
    pub retention_interval: String,
    /// Days kept by slices whose catalog entry sets no `retention_days` (0: forever).
    #[arg(long, env = "LOGPORT_DEFAULT_RETENTION_DAYS", value_parser = number::<u32>)]
    pub default_retention_days: u32,
    /// Days kept per slice, overriding the catalog (`clicks = 30`; 0: forever).
    #[arg(long, env = "LOGPORT_RETENTION", value_parser = parse_retention)]
    pub retention: std::collections::BTreeMap<String, u32>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <metrics_token>`.
    #[arg(long, env = "LOGPORT_METRICS_TOKEN")]
    pub metrics_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            clickhouse_url: "http://127.0.0.1:8123".into(),
            clickhouse_user: None,
            clickhouse_password: None,
            clickhouse_database: "logport".into(),
            object_store_url: None,
            job_store_url: "sqlite://./data/jobs.db".into(),
            workers: 2,
            export_ttl: "7d".into(),
            static_tokens: None,
            schema_dir: None,
            ingest_max_bytes: 64 << 20,
            ingest_max_line_bytes: 1 << 20,
            ingest_max_rows: 1_000_000,
            json_max_bytes: 1 << 20,
            preview_timeout: "15s".into(),
            preview_max_bytes: 4 << 20,
            query_timeout: "30s".into(),
            export_max_parts: 10_000,
            ingest_batch_wait: "200ms".into(),
            ingest_key_ttl: "24h".into(),
            export_parallelism: std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
            export_parallel_min_rows: 1_000_000,
            ingest_max_inflight_bytes: 256 << 20,
            ingest_tenant_share: 0.5,
            ingest_body_grace: "10s".into(),
            ingest_min_body_rate: 1024,
            max_range_days: 366,
            max_queued_per_tenant: 100,
            max_running_per_tenant: 4,
            max_rows_per_export: 0,
            max_attempts: 5,
            retry_backoff: "2s".into(),
            retry_backoff_max: "5m".into(),
            shutdown_grace: "20s".into(),
            janitor_interval: "1m".into(),
            lease: "30s".into(),
            heartbeat: "5s".into(),
            log_format: "text".into(),
            presigned_downloads: false,
            presign_ttl: "15m".into(),
            orphan_sweep_interval: "1h".into(),
            compat_max_response_bytes: 1 << 30,
            compat_counter_quota_bytes: 10 << 30,
            compat_part_max_bytes: 256 << 20,
            rate_limit_per_second: 50.0,
            rate_limit_burst: 100,
            auth_failures_per_minute: 30,
            auth_failure_burst: 20,
            max_header_bytes: 16 << 10,
            request_timeout: "120s".into(),
            request_header_timeout: "5s".into(),
            clickhouse_cluster: None,
            clickhouse_cluster_servers: Vec::new(),
            retention_interval: "1h".into(),
            default_retention_days: 0,
            retention: std::collections::BTreeMap::new(),
            metrics_token: None,
        }
    }
}

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub raw: Config,
    pub request_timeout: Duration,
    pub request_header_timeout: Duration,
    pub object_store_url: String,
    pub export_ttl: Duration,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub shutdown_grace: Duration,
    pub janitor_interval: Duration,
    pub presign_ttl: Duration,
    pub orphan_sweep_interval: Duration,
    pub ingest_batch_wait: Duration,
    pub ingest_key_ttl: Duration,
    pub ingest_body_grace: Duration,
    pub retention_interval: Duration,
    pub preview_timeout: Duration,
    pub query_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    File(String),
    #[error("{key}: {message}")]
    Value { key: String, message: String },
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key: key.into(),
        message: message.into(),
    }
}

/// Parses `clicks=30,events=90` (days per slice; 0 keeps forever).
pub fn parse_retention(text: &str) -> Result<std::collections::BTreeMap<String, u32>, String> {
    let mut out = std::collections::BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (slice, days) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not slice=days"))?;
        let days = days
            .trim()
            .parse()
            .map_err(|_| format!("`{item}`: days must be a whole number"))?;
        out.insert(slice.trim().to_string(), days);
    }
    Ok(out)
}

/// Parses a duration through humantime: `250ms`, `30s`, `5m`, `12h`, `7d`, or several
/// in one word (`1h30m`). Two of humantime's spellings stay refused, as they always
/// were here: spaces (`7 days`; a value is one word, in the file as in a variable) and
/// weeks, months and years (humantime's month and year are averages of 30.44 and
/// 365.25 days; a TTL in days says what it means).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(format!("`{t}` is not a duration like 30s or 7d"));
    }
    let calendar_unit = t
        .split(|c: char| c.is_ascii_digit() || c == '.')
        .any(|unit| matches!(unit.chars().next(), Some('w' | 'M' | 'y')));
    if calendar_unit {
        return Err(format!("`{t}`: unit must be ms, s, m, h or d"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{t}` is not a duration like 30s or 7d ({e})"))
}

/// Comma-separated URLs in a variable (a TOML list in the file). An alias, so that
/// clap takes the whole list as one value of the field instead of one per flag.
type UrlList = Vec<String>;

fn url_list(v: &str) -> Result<UrlList, String> {
    Ok(v.split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect())
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("`{v}` is not a valid number"))
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("`{v}` is not true or false")),
    }
}

/// The `LOGPORT_*` layer, from the `#[arg(env)]` of every field: clap reads, parses
/// and types the variables. The command has no command line of its own (`serve
/// --listen` and `migrate --cluster` are applied after it, in main.rs), so tools that
/// need no server configuration never read it. Its arguments have no defaults — those
/// are `Config::default`, under the file — and `update_from_arg_matches` writes only
/// the fields whose variable is set, which keeps defaults < file < environment.
fn env_command() -> clap::Command {
    use clap::Args;
    Config::augment_args(clap::Command::new("logport-env").no_binary_name(true)).mut_args(|arg| {
        // A variable set to nothing is unset, so `LOGPORT_X=` in a unit file is harmless.
        let empty = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|v| v.is_empty());
        let arg = arg.required(false);
        if empty {
            arg.env(None::<&'static str>)
        } else {
            arg
        }
    })
}

/// A clap error, named by the variable it is about and told in the parser's words.
fn env_error(command: &clap::Command, e: &clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue};
    // Rendered as `--workers <WORKERS>`.
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split_whitespace().next().unwrap_or(""),
        _ => "",
    };
    let var = command
        .get_arguments()
        .find(|a| {
            a.get_long()
                .is_some_and(|l| flag.strip_prefix("--") == Some(l))
        })
        .and_then(|a| a.get_env())
        .map_or_else(|| "LOGPORT_*".into(), |v| v.to_string_lossy().into_owned());
    let message =
        std::error::Error::source(e).map_or_else(|| e.kind().to_string(), ToString::to_string);
    bad(&var, message)
}

impl Config {
    /// Reads `path` if given (it must exist), else `./logport.toml` if present.
    pub fn from_file(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("logport.toml"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| ConfigError::File(format!("{}: {e}", path.display()))),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Config::default())
            }
            Err(e) => Err(ConfigError::File(format!("{}: {e}", path.display()))),
        }
    }

    /// Applies this process's `LOGPORT_*` variables (and nothing else).
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        let command = env_command();
        let matches = command
            .clone()
            .try_get_matches_from(std::iter::empty::<String>());
        self.apply_matches(&command, matches)
    }

    /// [`Config::apply_env`] with `vars` standing in for the environment: the same
    /// arguments, parsers and errors (the values go in as the command's flags), so a
    /// test need not change its process's environment.
    #[cfg(test)]
    fn apply_vars(&mut self, vars: &[(&str, &str)]) -> Result<(), ConfigError> {
        let command = env_command();
        let flags: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| {
                let name = arg.get_env()?.to_str()?;
                let (_, value) = vars.iter().find(|(k, v)| *k == name && !v.is_empty())?;
                Some(format!("--{}={value}", arg.get_long()?))
            })
            .collect();
        let matches = command
            .clone()
            .mut_args(|a| a.env(None::<&'static str>))
            .try_get_matches_from(flags);
        self.apply_matches(&command, matches)
    }

    fn apply_matches(
        &mut self,
        command: &clap::Command,
        matches: Result<clap::ArgMatches, clap::Error>,
    ) -> Result<(), ConfigError> {
        use clap::FromArgMatches;
        let matches = matches.map_err(|e| env_error(command, &e))?;
        self.update_from_arg_matches(&matches)
            .map_err(|e| env_error(command, &e))
    }

    /// Checks every value and resolves defaults that depend on the environment.
    pub fn validate(self, cwd: &Path) -> Result<Settings, ConfigError> {
        self.check_backends()?;
        self.check_limits()?;
        self.check_request_limits()?;
        let object_store_url = match &self.object_store_url {
            Some(u) => u.clone(),
            None => format!("file://{}", cwd.join("data/exports").display()),
        };
        self.with_timings(object_store_url)
    }

    /// Where Logport listens, what it talks to, and the names it is given.
    fn check_backends(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:8080", self.listen),
            ));
        }
        if !(self.clickhouse_url.starts_with("http://")
            || self.clickhouse_url.starts_with("https://"))
        {
            return Err(bad("clickhouse_url", "must start with http:// or https://"));
        }
        if !logport_store::is_safe_ident(&self.clickhouse_database) {
            return Err(bad(
                "clickhouse_database",
                "must match [A-Za-z_][A-Za-z0-9_]*",
            ));
        }
        if let Some(cluster) = &self.clickhouse_cluster {
            if !logport_store::is_safe_ident(cluster) {
                return Err(bad(
                    "clickhouse_cluster",
                    "must match [A-Za-z_][A-Za-z0-9_]*",
                ));
            }
        }
        if let Some(url) = self
            .clickhouse_cluster_servers
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(bad(
                "clickhouse_cluster_servers",
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        if let Some(name) = self
            .retention
            .keys()
            .find(|k| !logport_store::is_safe_ident(k))
        {
            return Err(bad("retention", format!("`{name}` is not a slice name")));
        }
        let store_ok = ["sqlite://", "postgres://", "postgresql://"]
            .iter()
            .any(|p| self.job_store_url.starts_with(p));
        if !store_ok {
            return Err(bad(
                "job_store_url",
                "must be sqlite://PATH or postgres://USER@HOST:PORT/DATABASE",
            ));
        }
        if let Some(tokens) = &self.static_tokens {
            logport_api::Tokens::parse_static(tokens).map_err(|m| bad("static_tokens", m))?;
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(bad("log_format", "must be text or json"));
        }
        Ok(())
    }

    /// Counts and sizes: workers, queues, request bodies, exports.
    fn check_limits(&self) -> Result<(), ConfigError> {
        // 0 makes an API-only node: it queues jobs that other processes run.
        if self.workers > 256 {
            return Err(bad("workers", "must be 0 to 256"));
        }
        for (key, v) in [
            ("max_attempts", u64::from(self.max_attempts)),
            ("max_range_days", u64::from(self.max_range_days)),
            ("max_queued_per_tenant", self.max_queued_per_tenant),
            (
                "max_running_per_tenant",
                u64::from(self.max_running_per_tenant),
            ),
            ("ingest_max_bytes", self.ingest_max_bytes as u64),
            ("ingest_max_line_bytes", self.ingest_max_line_bytes as u64),
            ("ingest_max_rows", self.ingest_max_rows as u64),
            ("json_max_bytes", self.json_max_bytes as u64),
            ("compat_max_response_bytes", self.compat_max_response_bytes),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        // The export spec's own lower bound for part_max_bytes.
        if self.compat_part_max_bytes < 1024 {
            return Err(bad("compat_part_max_bytes", "must be at least 1024"));
        }
        if !(1..=64).contains(&self.export_parallelism) {
            return Err(bad("export_parallelism", "must be 1 to 64"));
        }
        if !(1024..=(256 << 20)).contains(&self.preview_max_bytes) {
            return Err(bad("preview_max_bytes", "must be 1024 to 268435456"));
        }
        if !(1..=1_000_000).contains(&self.export_max_parts) {
            return Err(bad("export_max_parts", "must be 1 to 1000000"));
        }
        if !(self.ingest_tenant_share > 0.0 && self.ingest_tenant_share <= 1.0) {
            return Err(bad(
                "ingest_tenant_share",
                "must be a fraction above 0 and at most 1",
            ));
        }
        if (self.ingest_max_inflight_bytes as f64 * self.ingest_tenant_share)
            < self.ingest_max_bytes as f64
        {
            return Err(bad(
                "ingest_max_inflight_bytes",
                "times ingest_tenant_share must be at least ingest_max_bytes (one largest \
                 body must fit in what one request may hold)",
            ));
        }
        Ok(())
    }

    /// What one client may send: its rate, its failed authentications, its headers.
    fn check_request_limits(&self) -> Result<(), ConfigError> {
        if !self.rate_limit_per_second.is_finite() || self.rate_limit_per_second < 0.0 {
            return Err(bad(
                "rate_limit_per_second",
                "must be a number of requests per second, 0 for no limit",
            ));
        }
        if self.rate_limit_burst == 0 {
            return Err(bad("rate_limit_burst", "must be at least 1"));
        }
        if self.auth_failure_burst == 0 {
            return Err(bad("auth_failure_burst", "must be at least 1"));
        }
        // actix reads at most 128 KiB of head; a limit above that would never answer 431.
        if !(1024..=65_536).contains(&self.max_header_bytes) {
            return Err(bad("max_header_bytes", "must be 1024 to 65536"));
        }
        Ok(())
    }

    /// Parses every duration and checks its bounds: the last step of `validate`.
    fn with_timings(self, object_store_url: String) -> Result<Settings, ConfigError> {
        let duration = |key: &str, v: &str| parse_duration(v).map_err(|m| bad(key, m));
        let within = |key: &str, v: &str, min: Duration, max: Duration, says: &str| {
            let d = duration(key, v)?;
            if d < min || d > max {
                return Err(bad(key, says));
            }
            Ok(d)
        };
        let positive = |key: &str, v: &str| {
            let d = duration(key, v)?;
            if d.is_zero() {
                return Err(bad(key, "must be positive"));
            }
            Ok(d)
        };
        let (secs, ms) = (Duration::from_secs, Duration::from_millis);
        let lease = duration("lease", &self.lease)?;
        let heartbeat = duration("heartbeat", &self.heartbeat)?;
        if heartbeat.is_zero() || heartbeat * 2 > lease {
            return Err(bad(
                "heartbeat",
                "must be positive and at most half the lease",
            ));
        }
        Ok(Settings {
            export_ttl: duration("export_ttl", &self.export_ttl)?,
            lease,
            heartbeat,
            retry_backoff: duration("retry_backoff", &self.retry_backoff)?,
            retry_backoff_max: duration("retry_backoff_max", &self.retry_backoff_max)?,
            shutdown_grace: duration("shutdown_grace", &self.shutdown_grace)?,
            janitor_interval: positive("janitor_interval", &self.janitor_interval)?,
            presign_ttl: within(
                "presign_ttl",
                &self.presign_ttl,
                Duration::from_nanos(1),
                secs(7 * 86_400),
                "must be between 1s and 7d",
            )?,
            orphan_sweep_interval: positive("orphan_sweep_interval", &self.orphan_sweep_interval)?,
            ingest_batch_wait: duration("ingest_batch_wait", &self.ingest_batch_wait)?,
            ingest_key_ttl: within(
                "ingest_key_ttl",
                &self.ingest_key_ttl,
                secs(60),
                secs(30 * 86_400),
                "must be between 1m and 30d",
            )?,
            ingest_body_grace: duration("ingest_body_grace", &self.ingest_body_grace)?,
            retention_interval: positive("retention_interval", &self.retention_interval)?,
            preview_timeout: within(
                "preview_timeout",
                &self.preview_timeout,
                ms(100),
                secs(600),
                "must be between 100ms and 10m",
            )?,
            query_timeout: within(
                "query_timeout",
                &self.query_timeout,
                ms(100),
                secs(600),
                "must be between 100ms and 10m",
            )?,
            request_timeout: within(
                "request_timeout",
                &self.request_timeout,
                secs(1),
                secs(3600),
                "must be between 1s and 1h",
            )?,
            request_header_timeout: within(
                "request_header_timeout",
                &self.request_header_timeout,
                ms(100),
                secs(300),
                "must be between 100ms and 5m",
            )?,
            object_store_url,
            raw: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_limits() {
        let s = Config::default().validate(Path::new("/")).unwrap();
        assert_eq!(s.raw.rate_limit_per_second, 50.0);
        assert_eq!(s.raw.rate_limit_burst, 100);
        assert_eq!(s.request_timeout, Duration::from_secs(120));
        let mut c = Config::default();
        c.apply_vars(&[
            ("LOGPORT_RATE_LIMIT_PER_SECOND", "0.5"),
            ("LOGPORT_RATE_LIMIT_BURST", "3"),
            ("LOGPORT_MAX_HEADER_BYTES", "4096"),
            ("LOGPORT_REQUEST_TIMEOUT", "2s"),
        ])
        .unwrap();
        let s = c.validate(Path::new("/")).unwrap();
        assert_eq!(
            (s.raw.rate_limit_per_second, s.raw.rate_limit_burst),
            (0.5, 3)
        );
        assert_eq!(s.raw.max_header_bytes, 4096);
        assert_eq!(s.request_timeout, Duration::from_secs(2));
        for (k, v, key) in [
            (
                "LOGPORT_RATE_LIMIT_PER_SECOND",
                "-1",
                "rate_limit_per_second",
            ),
            (
                "LOGPORT_RATE_LIMIT_PER_SECOND",
                "NaN",
                "rate_limit_per_second",
            ),
            ("LOGPORT_RATE_LIMIT_BURST", "0", "rate_limit_burst"),
            ("LOGPORT_MAX_HEADER_BYTES", "100", "max_header_bytes"),
            ("LOGPORT_MAX_HEADER_BYTES", "1000000", "max_header_bytes"),
            ("LOGPORT_REQUEST_TIMEOUT", "0s", "request_timeout"),
            (
                "LOGPORT_REQUEST_HEADER_TIMEOUT",
                "1h",
                "request_header_timeout",
            ),
        ] {
            let mut c = Config::default();
            c.apply_vars(&[(k, v)]).unwrap();
            let e = c.validate(Path::new("/")).unwrap_err();
            assert!(e.to_string().starts_with(key), "{k}={v}: {e}");
        }
        let mut c = Config::default();
        let e = c
            .apply_vars(&[("LOGPORT_RATE_LIMIT_BURST", "lots")])
            .unwrap_err();
        assert!(
            e.to_string().starts_with("LOGPORT_RATE_LIMIT_BURST:"),
            "{e}"
        );
    }

    #[test]
    fn ingest_admission_and_auth_failure_settings() {
        let s = Config::default().validate(Path::new("/")).unwrap();
        assert_eq!(s.raw.ingest_tenant_share, 0.5);
        assert_eq!(s.ingest_body_grace, Duration::from_secs(10));
        assert_eq!(s.raw.ingest_min_body_rate, 1024);
        assert_eq!(
            (s.raw.auth_failures_per_minute, s.raw.auth_failure_burst),
            (30, 20)
        );
        let mut c = Config::default();
        c.apply_vars(&[
            ("LOGPORT_INGEST_TENANT_SHARE", "1"),
            ("LOGPORT_INGEST_BODY_GRACE", "2s"),
            ("LOGPORT_INGEST_MIN_BODY_RATE", "0"),
            ("LOGPORT_AUTH_FAILURES_PER_MINUTE", "0"),
            ("LOGPORT_AUTH_FAILURE_BURST", "5"),
        ])
        .unwrap();
        let s = c.validate(Path::new("/")).unwrap();
        assert_eq!(s.raw.ingest_tenant_share, 1.0);
        assert_eq!(s.ingest_body_grace, Duration::from_secs(2));
        assert_eq!(s.raw.ingest_min_body_rate, 0);
        assert_eq!(s.raw.auth_failure_burst, 5);
        for pairs in [
            &[("LOGPORT_INGEST_TENANT_SHARE", "0")][..],
            &[("LOGPORT_INGEST_TENANT_SHARE", "1.5")],
            &[("LOGPORT_INGEST_TENANT_SHARE", "NaN")],
            // Half of 100 MB cannot hold one 64 MiB body.
            &[("LOGPORT_INGEST_MAX_INFLIGHT_BYTES", "100000000")],
            &[("LOGPORT_INGEST_BODY_GRACE", "soon")],
            &[("LOGPORT_AUTH_FAILURE_BURST", "0")],
        ] {
            let mut c = Config::default();
            c.apply_vars(pairs).unwrap();
            let e = c.validate(Path::new("/")).unwrap_err();
            let key = pairs[0]
                .0
                .trim_start_matches("LOGPORT_")
                .to_ascii_lowercase();
            assert!(e.to_string().starts_with(&key), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn query_bounds() {
        let s = Config::default().validate(Path::new("/")).unwrap();
        assert_eq!(s.query_timeout, Duration::from_secs(30));
        assert_eq!(s.raw.preview_max_bytes, 4 << 20);
        assert_eq!(s.raw.export_max_parts, 10_000);
        let mut c = Config::default();
        c.apply_vars(&[
            ("LOGPORT_QUERY_TIMEOUT", "1500ms"),
            ("LOGPORT_PREVIEW_MAX_BYTES", "2048"),
            ("LOGPORT_EXPORT_MAX_PARTS", "3"),
        ])
        .unwrap();
        let s = c.validate(Path::new("/")).unwrap();
        assert_eq!(s.query_timeout, Duration::from_millis(1500));
        assert_eq!((s.raw.preview_max_bytes, s.raw.export_max_parts), (2048, 3));
    }

    #[test]
    fn defaults_run_on_one_machine() {
        let s = Config::default().validate(Path::new("/srv")).unwrap();
        assert_eq!(s.raw.listen, "127.0.0.1:8080");
        assert_eq!(s.raw.clickhouse_url, "http://127.0.0.1:8123");
        assert_eq!(s.object_store_url, "file:///srv/data/exports");
        assert_eq!(s.raw.job_store_url, "sqlite://./data/jobs.db");
        assert_eq!(s.export_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(s.raw.workers, 2);
    }

    #[test]
    fn env_overrides_file_and_errors_name_the_variable() {
        let mut c: Config = toml::from_str("workers = 3\nlisten = \"0.0.0.0:9000\"").unwrap();
        c.apply_vars(&[("LOGPORT_WORKERS", "5"), ("LOGPORT_EXPORT_TTL", "12h")])
            .unwrap();
        let s = c.validate(Path::new("/")).unwrap();
        assert_eq!(s.raw.workers, 5);
        assert_eq!(s.raw.listen, "0.0.0.0:9000");
        assert_eq!(s.export_ttl, Duration::from_secs(12 * 3600));

        let mut c = Config::default();
        let e = c.apply_vars(&[("LOGPORT_WORKERS", "many")]).unwrap_err();
        assert!(e.to_string().starts_with("LOGPORT_WORKERS:"), "{e}");
        for (k, v, key) in [
            ("LOGPORT_EXPORT_TTL", "7 days", "export_ttl"),
            ("LOGPORT_LISTEN", "localhost", "listen"),
            ("LOGPORT_CLICKHOUSE_DATABASE", "a-b", "clickhouse_database"),
            ("LOGPORT_STATIC_TOKENS", "x", "static_tokens"),
            ("LOGPORT_WORKERS", "999", "workers"),
            ("LOGPORT_JOB_STORE_URL", "mysql://x", "job_store_url"),
            ("LOGPORT_PREVIEW_TIMEOUT", "0s", "preview_timeout"),
            ("LOGPORT_PREVIEW_TIMEOUT", "soon", "preview_timeout"),
            ("LOGPORT_QUERY_TIMEOUT", "0s", "query_timeout"),
            ("LOGPORT_QUERY_TIMEOUT", "1h", "query_timeout"),
            ("LOGPORT_PREVIEW_MAX_BYTES", "100", "preview_max_bytes"),
            ("LOGPORT_EXPORT_MAX_PARTS", "0", "export_max_parts"),
            (
                "LOGPORT_COMPAT_PART_MAX_BYTES",
                "10",
                "compat_part_max_bytes",
            ),
            (
                "LOGPORT_COMPAT_MAX_RESPONSE_BYTES",
                "0",
                "compat_max_response_bytes",
            ),
        ] {
            let mut c = Config::default();
            c.apply_vars(&[(k, v)]).unwrap();
            let e = c.validate(Path::new("/")).unwrap_err();
            assert!(e.to_string().starts_with(key), "{k}={v}: {e}");
        }
    }

    #[test]
    fn retention_cluster_and_metrics_settings() {
        let mut c: Config =
            toml::from_str("retention_interval = \"10m\"\n[retention]\nclicks = 30\nevents = 0\n")
                .unwrap();
        assert_eq!(c.retention.get("clicks"), Some(&30));
        c.apply_vars(&[
            ("LOGPORT_RETENTION", "clicks=14, installations=400"),
            ("LOGPORT_DEFAULT_RETENTION_DAYS", "90"),
            ("LOGPORT_CLICKHOUSE_CLUSTER", "logs"),
            (
                "LOGPORT_CLICKHOUSE_CLUSTER_SERVERS",
                "http://ch1:8123, http://ch2:8123",
            ),
            ("LOGPORT_METRICS_TOKEN", "scrape"),
        ])
        .unwrap();
        let s = c.validate(Path::new("/")).unwrap();
        assert_eq!(s.retention_interval, Duration::from_secs(600));
        assert_eq!(
            s.raw.retention,
            [
                ("clicks".to_string(), 14),
                ("installations".to_string(), 400)
            ]
            .into()
        );
        assert_eq!(s.raw.default_retention_days, 90);
        assert_eq!(s.raw.clickhouse_cluster.as_deref(), Some("logs"));
        assert_eq!(
            s.raw.clickhouse_cluster_servers,
            ["http://ch1:8123", "http://ch2:8123"]
        );
        assert_eq!(s.raw.metrics_token.as_deref(), Some("scrape"));

        let e = Config::default()
            .apply_vars(&[("LOGPORT_RETENTION", "clicks")])
            .unwrap_err();
        assert!(e.to_string().starts_with("LOGPORT_RETENTION:"), "{e}");
        for (k, v, key) in [
            ("LOGPORT_RETENTION_INTERVAL", "0s", "retention_interval"),
            ("LOGPORT_RETENTION", "a-b=3", "retention"),
            (
                "LOGPORT_CLICKHOUSE_CLUSTER",
                "my-cluster",
                "clickhouse_cluster",
            ),
            (
                "LOGPORT_CLICKHOUSE_CLUSTER_SERVERS",
                "ch1:8123",
                "clickhouse_cluster_servers",
            ),
        ] {
            let mut c = Config::default();
            c.apply_vars(&[(k, v)]).unwrap();
            let e = c.validate(Path::new("/")).unwrap_err();
            assert!(e.to_string().starts_with(key), "{k}={v}: {e}");
        }
    }

    #[test]
    fn the_example_file_in_deploy_is_valid() {
        let text = include_str!("../../../deploy/logport.example.toml");
        let c: Config = toml::from_str(text).unwrap();
        let s = c.validate(Path::new("/")).unwrap();
        assert_eq!(s.raw.retention.get("clicks"), Some(&400));
        assert_eq!(s.retention_interval, Duration::from_secs(3600));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<Config>("colour = 1").is_err());
    }

    #[test]
    fn every_field_has_its_variable() {
        let command = env_command();
        let mut count = 0;
        for arg in command.get_arguments() {
            let want = format!("LOGPORT_{}", arg.get_id().as_str().to_ascii_uppercase());
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(&*want));
            count += 1;
        }
        assert_eq!(count, 58);
    }

    #[test]
    fn variables_reach_the_fields_through_clap_and_empty_ones_are_unset() {
        let mut c = Config::default();
        c.apply_vars(&[
            ("LOGPORT_WORKERS", " 7 "),
            ("LOGPORT_PRESIGNED_DOWNLOADS", "yes"),
            ("LOGPORT_SCHEMA_DIR", "/etc/logport/slices"),
            ("LOGPORT_METRICS_TOKEN", ""),
            ("LOGPORT_LISTEN", ""),
        ])
        .unwrap();
        assert_eq!(c.workers, 7);
        assert!(c.presigned_downloads);
        assert_eq!(c.schema_dir, Some(PathBuf::from("/etc/logport/slices")));
        assert_eq!(c.metrics_token, None);
        assert_eq!(c.listen, "127.0.0.1:8080");
        let e = Config::default()
            .apply_vars(&[("LOGPORT_PRESIGNED_DOWNLOADS", "maybe")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "LOGPORT_PRESIGNED_DOWNLOADS: `maybe` is not true or false"
        );

        // The process's own environment, read by clap's `env`. Only this test sets
        // these two, and nextest gives each test its own process.
        std::env::set_var("LOGPORT_MAX_ATTEMPTS", "9");
        std::env::set_var("LOGPORT_CLICKHOUSE_PASSWORD", "");
        let mut c = Config::default();
        c.apply_env().unwrap();
        assert_eq!(c.max_attempts, 9);
        assert_eq!(c.clickhouse_password, None);
        std::env::set_var("LOGPORT_MAX_ATTEMPTS", "nine");
        let e = Config::default().apply_env().unwrap_err();
        assert_eq!(
            e.to_string(),
            "LOGPORT_MAX_ATTEMPTS: `nine` is not a valid number"
        );
        std::env::remove_var("LOGPORT_MAX_ATTEMPTS");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3w").is_err());
        assert_eq!(
            parse_duration(" 1h30m ").unwrap(),
            Duration::from_secs(5400)
        );
        for refused in ["7 days", "1y", "2M", "", "-5s"] {
            assert!(parse_duration(refused).is_err(), "{refused}");
        }
    }
}
