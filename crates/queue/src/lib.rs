//! Durable export jobs.
//!
//! A job is stored before the API answers 202, claimed by one worker at a time under
//! a lease, and moves only along the edges of [`JobStatus::allows`]. Every write a
//! worker makes after claiming is fenced by its [`Lease`] (job, owner, attempt): a
//! worker that lost its lease can no longer record parts, progress or completion.
//! Time is passed in (`now`, Unix milliseconds) so tests move a clock instead of
//! sleeping. Backends: SQLite (embedded, the default) and PostgreSQL.

mod compat;
pub mod ingest_keys;
mod postgres;
mod sql;
mod sqlite;
pub mod tokens;

use std::sync::Arc;

use async_trait::async_trait;
use logport_catalog::ExportRequest;
use serde::Serialize;

pub use ingest_keys::{IngestKey, IngestKeys, KeyedIngest};
pub use postgres::PostgresJobStore;
pub use sql::SqlStore;
pub use sqlite::SqliteJobStore;
pub use tokens::{AuditRecord, NewToken, PendingAudit, Revoked, Scope, TokenInfo, TokenStore};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Canceled,
        JobStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The state machine, in one place:
    /// `queued → running → succeeded | failed | canceled`, `running → queued` (retry or
    /// lost lease), `queued → canceled`, `succeeded → expired`.
    pub fn allows(self, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Canceled)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Canceled)
                | (Running, Queued)
                | (Succeeded, Expired)
        )
    }

    /// States from which `to` may be entered.
    pub fn predecessors(to: JobStatus) -> Vec<JobStatus> {
        JobStatus::ALL
            .into_iter()
            .filter(|from| from.allows(to))
            .collect()
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled | JobStatus::Expired
        )
    }
}

/// Why a job failed, for clients (`error.code` is stable, `message` is prose).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

/// One finished file of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    pub n: u32,
    /// Object-store key; never shown to clients.
    #[serde(skip)]
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// How far a job is: rows and bytes written, parts finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub rows: u64,
    pub bytes: u64,
    pub parts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub tenant: String,
    pub slice: String,
    pub status: JobStatus,
    /// The normalised export request, as the client will see it.
    pub request: ExportRequest,
    pub idempotency_key: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub progress: Progress,
    pub error: Option<JobError>,
    /// Parts of the published attempt once succeeded; of the running attempt before.
    pub parts: Vec<Part>,
    pub manifest_key: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
}

impl Job {
    /// The fencing token of the attempt this job is in.
    pub fn lease(&self) -> Option<Lease> {
        Some(Lease {
            job_id: self.id.clone(),
            owner: self.lease_owner.clone()?,
            attempt: self.attempts,
        })
    }
}

/// A worker's claim on one attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub owner: String,
    pub attempt: u32,
}

/// What a new job carries.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant: String,
    pub slice: String,
    pub request: ExportRequest,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    /// The app the export reads (`None`: every app), so quotas can count per app.
    pub app_id: Option<u64>,
    /// Requests with the same fingerprint share one result (AppMetrica's "identical
    /// request"): see [`CompatJobs::find_by_fingerprint`].
    pub fingerprint: Option<String>,
}

/// The newest job made for a fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct FingerprintedJob {
    pub job: Job,
    /// When its result (or its failure) was first handed to a client.
    pub served_at: Option<i64>,
}

/// A job under its number: Metrica-style clients address requests by integer ids,
/// counted per tenant from 1.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberedJob {
    pub number: u64,
    /// When a client removed its files (as opposed to the janitor's expiry).
    pub cleaned_at: Option<i64>,
    pub job: Job,
}

/// The result of `create`: a new job, or the one an earlier request with the same
/// idempotency key made.
#[derive(Debug, Clone)]
pub enum Created {
    New(Job),
    Existing(Job),
}

impl Created {
    pub fn job(&self) -> &Job {
        match self {
            Created::New(j) | Created::Existing(j) => j,
        }
    }
}

/// What the lease holder learns from a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Still ours; lease extended.
    Held,
    /// Someone canceled the job: stop, clean up, write nothing more.
    Canceled,
    /// The lease is gone (expired and requeued, or taken): stop at once.
    Lost,
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<JobStatus>,
    pub slice: Option<String>,
    pub limit: u32,
    /// Jobs strictly older than this `(created_at, id)`.
    pub before: Option<(i64, String)>,
    /// Only jobs of these apps (a token limited to some apps sees only theirs; jobs
    /// over every app are not among them). `None`: any.
    pub apps: Option<Vec<u64>>,
    /// Not the jobs of these slices (those the caller may not read).
    pub hidden_slices: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job store error: {0}")]
    Backend(String),
    /// The idempotency key was used before with a different request body.
    #[error("idempotency key reused with a different request")]
    IdempotencyConflict,
    #[error("unsupported job store URL `{0}`; use sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// A request that cannot be written as JSON (a bug, not the store's failure).
    #[error("export request cannot be stored: {0}")]
    Request(String),
}

impl From<sqlx::Error> for QueueError {
    fn from(e: sqlx::Error) -> Self {
        QueueError::Backend(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for QueueError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        QueueError::Backend(e.to_string())
    }
}

/// Storage of jobs. Every backend passes the same conformance suite.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a queued job, or returns the existing one for the same tenant and
    /// idempotency key (an error if its request differs).
    async fn create(&self, new: NewJob, now: i64) -> Result<Created, QueueError>;

    /// One of the tenant's jobs; `None` for another tenant's id.
    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Job>, QueueError>;

    /// The tenant's jobs, newest first.
    async fn list(&self, tenant: &str, q: &ListQuery) -> Result<Vec<Job>, QueueError>;

    /// Takes the next runnable job under a lease until `now + lease_ms`. Workers are
    /// shared fairly: the job goes to the tenant running the fewest jobs, among equals
    /// to the one that claimed least recently, and a tenant already running
    /// `max_running_per_tenant` jobs is skipped. So a tenant with one export queued
    /// behind another's hundred gets the next free worker, and with W workers and k
    /// tenants with work each runs at least ⌊W/k⌋ once running jobs finish (a running
    /// job is never preempted).
    async fn claim(
        &self,
        owner: &str,
        opts: &ClaimOptions,
        now: i64,
    ) -> Result<Option<Job>, QueueError>;

    /// How many queued (not yet running) jobs the tenant has.
    async fn count_queued(&self, tenant: &str) -> Result<u64, QueueError>;

    /// Extends the lease and records progress.
    async fn heartbeat(
        &self,
        lease: &Lease,
        progress: Progress,
        lease_ms: i64,
        now: i64,
    ) -> Result<Heartbeat, QueueError>;

    /// Records a finished part of the lease's attempt.
    async fn add_part(&self, lease: &Lease, part: &Part, now: i64) -> Result<bool, QueueError>;

    /// Marks the attempt succeeded with its manifest; its parts become the job's parts.
    async fn succeed(
        &self,
        lease: &Lease,
        manifest_key: &str,
        progress: Progress,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, QueueError>;

    /// Fails the job for good.
    async fn fail(&self, lease: &Lease, error: &JobError, now: i64) -> Result<bool, QueueError>;

    /// Puts the job back in the queue after a retryable error, runnable from
    /// `run_after`; fails it instead when no attempts are left.
    async fn retry(
        &self,
        lease: &Lease,
        error: &JobError,
        run_after: i64,
        now: i64,
    ) -> Result<JobStatus, QueueError>;

    /// Gives a running job back to the queue without spending an attempt (graceful
    /// shutdown): it becomes runnable at once.
    async fn release(&self, lease: &Lease, now: i64) -> Result<bool, QueueError>;

    /// Requeues (or fails, when out of attempts) running jobs whose lease ran out.
    async fn reap_expired_leases(&self, now: i64) -> Result<u64, QueueError>;

    /// Succeeded jobs whose files are past `expires_at`, oldest first.
    async fn due_for_expiry(&self, now: i64, limit: u32) -> Result<Vec<Job>, QueueError>;

    /// `succeeded → expired` (after the files were deleted).
    async fn mark_expired(&self, id: &str, now: i64) -> Result<bool, QueueError>;

    /// Cancels a queued or running job of the tenant. Returns the job as it is now.
    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> Result<Option<Job>, QueueError>;

    /// Is the store answering?
    async fn ping(&self) -> Result<(), QueueError>;

    /// How many jobs of every tenant are in each state (for metrics); states
    /// without jobs are absent.
    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, QueueError>;
}

/// What only the compatibility protocols (AppMetrica, Metrica) ask of the job store:
/// identical requests by fingerprint, per-app counts and the integer numbers
/// Metrica-style clients address requests by. Every backend passes the same
/// conformance suite.
#[async_trait]
pub trait CompatJobs: Send + Sync + 'static {
    /// The tenant's newest job created with this fingerprint.
    async fn find_by_fingerprint(
        &self,
        tenant: &str,
        fingerprint: &str,
    ) -> Result<Option<FingerprintedJob>, QueueError>;

    /// Records that a job's outcome was handed to a client; only the first time
    /// counts. Returns whether this call recorded it.
    async fn mark_served(&self, tenant: &str, id: &str, now: i64) -> Result<bool, QueueError>;

    /// How many of the tenant's jobs for this app are queued or running.
    async fn count_pending_for_app(&self, tenant: &str, app_id: u64) -> Result<u64, QueueError>;

    /// The job's number, assigned now (the tenant's next) if it has none; `None` for
    /// another tenant's or an unknown job.
    async fn number(&self, tenant: &str, id: &str) -> Result<Option<u64>, QueueError>;

    /// The tenant's job with this number.
    async fn numbered(&self, tenant: &str, number: u64) -> Result<Option<NumberedJob>, QueueError>;

    /// The tenant's numbered jobs (of one app, when given), newest (highest number)
    /// first.
    async fn list_numbered(
        &self,
        tenant: &str,
        app_id: Option<u64>,
        limit: u32,
    ) -> Result<Vec<NumberedJob>, QueueError>;

    /// Records that a client removed the files of a numbered job; only the first time
    /// counts.
    async fn mark_cleaned(&self, tenant: &str, number: u64, now: i64) -> Result<bool, QueueError>;

    /// Bytes of the succeeded (not yet expired or cleaned) numbered jobs of an app.
    async fn prepared_bytes(&self, tenant: &str, app_id: u64) -> Result<u64, QueueError>;
}

/// How a worker claims.
#[derive(Debug, Clone, Copy)]
pub struct ClaimOptions {
    pub lease_ms: i64,
    pub max_running_per_tenant: u32,
}

/// One job-store database in its four roles.
pub struct Stores {
    pub jobs: Arc<dyn JobStore>,
    pub compat: Arc<dyn CompatJobs>,
    pub tokens: Arc<dyn TokenStore>,
    pub ingest_keys: Arc<dyn IngestKeys>,
}

/// Opens the store a URL names once, in every role (one database, one pool):
/// `sqlite://PATH` (created when missing) or `postgres://…` (the database must exist;
/// tables are created).
pub async fn open_stores(url: &str) -> Result<Stores, QueueError> {
    fn all<T: JobStore + CompatJobs + TokenStore + IngestKeys>(store: T) -> Stores {
        let store = Arc::new(store);
        Stores {
            jobs: store.clone(),
            compat: store.clone(),
            tokens: store.clone(),
            ingest_keys: store,
        }
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(all(SqliteJobStore::open(path).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(all(PostgresJobStore::open(url).await?));
    }
    Err(QueueError::BadUrl(redact_urls(url)))
}

/// Where time comes from. Leases, backoff and expiry read it, so tests can move time
/// instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        ManualClock(std::sync::atomic::AtomicI64::new(start_ms))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The text a request is stored as: its JSON with members in name order, which is
/// what jobs stored while the request was an untyped `serde_json::Value` hold (its
/// maps are ordered by key), so rows of either era read back and hash alike.
pub fn request_text(request: &ExportRequest) -> Result<String, QueueError> {
    serde_json::to_value(request)
        .map(|v| v.to_string())
        .map_err(|e| QueueError::Request(e.to_string()))
}

/// A stored request, read back.
pub fn parse_request(text: &str) -> Result<ExportRequest, QueueError> {
    serde_json::from_str(text)
        .map_err(|e| QueueError::Backend(format!("stored request does not parse: {e}")))
}

/// A stable digest of a request, for idempotency comparisons: the SHA-256 of its
/// stored text, so a retry matches a job stored before the request was typed.
pub fn request_hash(request: &ExportRequest) -> Result<String, QueueError> {
    Ok(text_hash(&request_text(request)?))
}

/// The digest [`request_hash`] gives, of a request's stored text already at hand.
pub(crate) fn text_hash(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// `text` with the password of every URL in it masked: `postgres://user:secret@host/db`
/// becomes `postgres://user:***@host/db`, and a `password=…` query parameter
/// `password=***`. For any message, log line or answer that may quote a job store (or
/// ClickHouse) URL: configuration carries credentials, messages must not.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(amp) => {
                let userinfo = &authority[..amp];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[amp..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_password_params(&out)
}

/// `password=secret` (any case) → `password=***`, up to `&`, a quote or whitespace.
fn redact_password_params(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(i) = lower[from..].find(KEY) {
        let value = from + i + KEY.len();
        out.push_str(&text[from..value]);
        let end = text[value..]
            .find(|c: char| matches!(c, '&' | '"' | '\'' | '`' | '#') || c.is_whitespace())
            .map_or(text.len(), |e| value + e);
        if end > value {
            out.push_str("***");
        }
        from = end;
    }
    out.push_str(&text[from..]);
    out
}

/// Milliseconds since the epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        for (text, want) in [
            (
                "cannot open the job store postgres://logport:s3cr3t@db:5432/jobs",
                "cannot open the job store postgres://logport:***@db:5432/jobs",
            ),
            ("postgresql://u:p@ss@h/d?x=1", "postgresql://u:***@h/d?x=1"),
            (
                "postgres://u@h/d?sslmode=require&password=hunter2&x=1",
                "postgres://u@h/d?sslmode=require&password=***&x=1",
            ),
            ("PASSWORD=abc def", "PASSWORD=*** def"),
            ("sqlite://./data/jobs.db", "sqlite://./data/jobs.db"),
            (
                "http://user@h:8123 and http://a:b@c",
                "http://user@h:8123 and http://a:***@c",
            ),
            ("`postgres://x:y@z`", "`postgres://x:***@z`"),
            ("no url here", "no url here"),
            ("ends with ://", "ends with ://"),
            ("password=", "password="),
            ("ünïcode://ü:ß@h", "ünïcode://ü:***@h"),
        ] {
            assert_eq!(redact_urls(text), want, "{text}");
        }
    }

    /// A request as the API stored it while `Job.request` was untyped JSON: the text
    /// of a `serde_json::Value` (members in name order), and the SHA-256 of that text
    /// as its idempotency hash.
    const OLD_TEXT: &str = r#"{"app_id":42,"bucket":{"count":4,"number":1},"compression":"zstd","date_dimension":"received","date_since":"2026-11-01","date_until":"2026-11-07 12:00:00","fields":["click_id","cost","country_code"],"filters":[{"field":"cost","op":"gt","value":0.5},{"field":"country_code","op":"not_in","values":["US","DE"]},{"field":"sub1","op":"is_null"}],"format":"jsonl","json_strings":true,"limit":10,"part_max_rows":1000,"single_file":true,"slice":"clicks","timezone":"Europe/Berlin"}"#;
    const OLD_HASH: &str = "00406a1474badc284961a20e646eb7ad901434fca953d0b83002399e08e79c5d";

    #[test]
    fn typed_requests_keep_the_stored_text_and_hash_of_untyped_ones() {
        use logport_catalog::{Compression, DateDimension, FilterOp, Format};
        let request = parse_request(OLD_TEXT).unwrap();
        assert_eq!(request.format, Some(Format::Jsonl));
        assert_eq!(request.compression, Some(Compression::Zstd));
        assert_eq!(request.date_dimension, Some(DateDimension::Received));
        assert_eq!(request.filters[1].op, FilterOp::NotIn);
        assert_eq!(request_text(&request).unwrap(), OLD_TEXT);
        assert_eq!(request_hash(&request).unwrap(), OLD_HASH);
        // Built as a value (as the compat protocols do), the same request is the same.
        let built = ExportRequest {
            slice: "clicks".into(),
            app_id: Some(42),
            date_since: "2026-11-01".into(),
            date_until: "2026-11-07 12:00:00".into(),
            date_dimension: Some(DateDimension::Received),
            timezone: Some("Europe/Berlin".into()),
            fields: Some(vec![
                "click_id".into(),
                "cost".into(),
                "country_code".into(),
            ]),
            filters: request.filters.clone(),
            format: Some(Format::Jsonl),
            compression: Some(Compression::Zstd),
            part_max_rows: Some(1000),
            part_max_bytes: None,
            utf8_bom: None,
            csv_excel_safe: None,
            limit: Some(10),
            json_strings: Some(true),
            bucket: Some(logport_catalog::BucketRequest {
                count: 4,
                number: 1,
            }),
            single_file: Some(true),
        };
        assert_eq!(request_hash(&built).unwrap(), OLD_HASH);
        assert!(matches!(
            parse_request(r#"{"slice":"clicks","format":"xls"}"#),
            Err(QueueError::Backend(_))
        ));
    }

    #[test]
    fn the_state_machine() {
        use JobStatus::*;
        assert!(Queued.allows(Running));
        assert!(Running.allows(Queued));
        assert!(Succeeded.allows(Expired));
        assert!(!Succeeded.allows(Running));
        assert!(!Canceled.allows(Queued));
        assert!(!Failed.allows(Running));
        assert!(!Expired.allows(Succeeded));
        assert_eq!(JobStatus::predecessors(Canceled), [Queued, Running]);
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
    }
}
