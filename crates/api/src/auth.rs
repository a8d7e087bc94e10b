//! Who is calling: a token mapped to a tenant, its scopes and its apps.
//!
//! Tokens come from two places: the token store in the job store's database
//! (`logport token create`; stored as SHA-256 digests only) and, for development and
//! tests, `LOGPORT_STATIC_TOKENS` (every scope, every app; also kept as digests, so
//! neither memory dumps nor logs hold a usable token). `Authorization: Bearer <t>` and
//! `Authorization: OAuth <t>` (what AppMetrica and Metrica clients send) are both
//! accepted.
//!
//! Decisions:
//! - Scopes: `ingest` writes (`POST /v1/ingest/{slice}`); `export` reads (exports,
//!   previews, estimates, downloads, the AppMetrica and Metrica protocols); `admin` is
//!   everything. The catalog (`GET /v1/slices…`) is readable with any scope: it holds
//!   no customer data. The `activity` slice (the audit log) is `admin` only, both to
//!   read (exports, previews, and the jobs and files made from it) and to write, so an
//!   ingest token cannot forge audit rows.
//! - A token limited to apps reads and writes only those: every ingested row's
//!   `app_id`, an export's `app_id` (then required), a protocol's `application_id` or
//!   `counter_id` must be one of them (403 otherwise), and it sees only the jobs of
//!   its apps — another app's job answers 404, as another tenant's does.
//! - Lookups are cached for [`CACHE_TTL`], so a revoked token stops working within
//!   about a second on every replica; expiry is checked on every request. When the
//!   job store cannot answer, a token found valid within [`STALE_MAX`] keeps its last
//!   answer (nobody can revoke it meanwhile) instead of every request failing.
//! - Guessing is cheap to refuse and never loads the job store: a token without the
//!   shape of a generated secret (`lp_` and 64 hex digits) is never looked up; tokens
//!   the store does not know are remembered apart from known ones (a flood of random
//!   tokens neither evicts a valid token's entry nor reaches the store twice for the
//!   same token); and failed authentications are limited per peer address (an IPv6
//!   peer by its /64; a token bucket: `LOGPORT_AUTH_FAILURES_PER_MINUTE`, burst
//!   `LOGPORT_AUTH_FAILURE_BURST`).
//!   A peer past its limit gets 429 with `Retry-After` for any token the server does
//!   not already know as valid, before any lookup; tokens it knows (and static ones)
//!   keep working from the same address, so one bad client behind a shared address
//!   does not lock out the others.
//! - Rate: every token of the token store has a token bucket
//!   (`LOGPORT_RATE_LIMIT_PER_SECOND`, burst `LOGPORT_RATE_LIMIT_BURST`); an empty
//!   bucket answers 429 with `Retry-After`. Buckets live in the process: with several
//!   replicas each enforces its own. Static tokens are the operator's own (development,
//!   tests, bootstrap) and are not limited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use logport_queue::tokens::{is_well_formed_secret, token_digest};
use logport_queue::{Job, Scope, TokenInfo, TokenStore};

use crate::error::ApiError;
use crate::AppState;

/// How long a token lookup is trusted before the store is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// How long a valid token's last lookup stands in for one the job store cannot answer.
pub const STALE_MAX: Duration = Duration::from_secs(300);
/// Most cached known tokens (only tokens the store holds), and most remembered unknown
/// ones; each cache is pruned, then started over, when full.
const CACHE_MAX: usize = 10_000;
/// How long a token the store does not hold is answered without asking it again (a
/// secret is random and printed at creation: nobody sends one before it exists).
const UNKNOWN_TTL: Duration = Duration::from_secs(60);
/// How the ids of static tokens start (never a stored token's `tok_`).
const STATIC_PREFIX: &str = "static-";
/// The slice only `admin` tokens may read or write.
pub const ADMIN_SLICE: &str = "activity";

/// The authenticated caller; every handler that touches data takes one.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    /// The token's public id (`tok_…`, or `static-…` for `LOGPORT_STATIC_TOKENS`).
    pub token_id: String,
    pub token_name: String,
    pub scopes: Vec<Scope>,
    /// The apps the token may touch; `None`: every app of the tenant.
    pub apps: Option<Vec<u64>>,
    /// The peer's address (the socket's, not a forwarded header a client can forge).
    pub ip: String,
    pub user_agent: String,
}

impl Caller {
    /// Whether the token carries `scope` (`admin` carries every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// 403 unless the token carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token lacks the `{}` scope (it has {})",
                scope.as_str(),
                Scope::join(&self.scopes)
            )))
        }
    }

    /// Whether the token may touch this app.
    pub fn may_use_app(&self, app: u64) -> bool {
        self.apps.as_ref().is_none_or(|a| a.contains(&app))
    }

    /// 403 unless the token may read what `app_id` selects (`None`: every app, which
    /// only an unrestricted token may).
    pub fn require_app(&self, app_id: Option<u64>, field: &str) -> Result<(), ApiError> {
        match (&self.apps, app_id) {
            (None, _) => Ok(()),
            (Some(_), Some(app)) if self.may_use_app(app) => Ok(()),
            (Some(list), None) => Err(ApiError::Forbidden(format!(
                "this token is limited to apps {}: set `{field}` to one of them",
                show_apps(list)
            ))),
            (Some(list), Some(app)) => Err(ApiError::Forbidden(format!(
                "this token is limited to apps {}; `{field}` {app} is not one of them",
                show_apps(list)
            ))),
        }
    }

    /// Whether the token may read (or write) a slice: the audit log needs `admin`.
    pub fn may_use_slice(&self, slice: &str) -> bool {
        slice != ADMIN_SLICE || self.scopes.contains(&Scope::Admin)
    }

    /// 403 unless [`Caller::may_use_slice`].
    pub fn require_slice(&self, slice: &str) -> Result<(), ApiError> {
        if self.may_use_slice(slice) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the `{slice}` slice needs a token with the `admin` scope"
            )))
        }
    }

    /// Slices whose jobs this caller does not see.
    pub fn hidden_slices(&self) -> Vec<String> {
        if self.may_use_slice(ADMIN_SLICE) {
            Vec::new()
        } else {
            vec![ADMIN_SLICE.to_string()]
        }
    }

    /// Whether one of the tenant's jobs is visible to this caller (its slice and its
    /// app); a job that is not answers 404, like another tenant's.
    pub fn sees_job(&self, job: &Job) -> bool {
        let app = job.request.app_id;
        self.may_use_slice(&job.slice)
            && match &self.apps {
                None => true,
                Some(list) => app.is_some_and(|a| list.contains(&a)),
            }
    }
}

fn show_apps(list: &[u64]) -> String {
    let shown: Vec<String> = list.iter().take(20).map(u64::to_string).collect();
    let more = if list.len() > 20 { ", …" } else { "" };
    format!("[{}{more}]", shown.join(", "))
}

/// Tenant names appear in object keys and logs: keep them to a safe alphabet.
pub fn is_valid_tenant(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && t.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

pub fn digest(token: &str) -> String {
    token_digest(token)
}

/// Who a token is, once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant: String,
    pub token_id: String,
    pub token_name: String,
    pub scopes: Vec<Scope>,
    pub apps: Option<Vec<u64>>,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials at all.
    Missing,
    /// Malformed, unknown, revoked or expired: the sentence says which.
    Invalid(String),
    /// The token store cannot be asked.
    Unavailable,
    /// The token's rate limit is used up: retry after this many seconds.
    RateLimited(u32),
    /// The peer failed authentication too often: retry after this many seconds.
    Throttled(u32),
}

impl From<AuthFailure> for ApiError {
    fn from(f: AuthFailure) -> Self {
        match f {
            AuthFailure::Missing => {
                ApiError::Unauthorized("send Authorization: Bearer <token>".into())
            }
            AuthFailure::Invalid(why) => ApiError::Unauthorized(why),
            AuthFailure::Unavailable => ApiError::Unavailable {
                detail: "tokens cannot be checked right now (the job store is unavailable); \
                         retry later"
                    .into(),
                retry_after: 2,
            },
            AuthFailure::RateLimited(retry_after) => ApiError::TooMany {
                limit: "rate_limit",
                field: None,
                detail: format!(
                    "this token sent more requests than its rate limit allows; retry in \
                     {retry_after} s"
                ),
                retry_after,
            },
            AuthFailure::Throttled(retry_after) => ApiError::TooMany {
                limit: "auth_failures",
                field: None,
                detail: format!(
                    "too many failed authentications from this address; retry in \
                     {retry_after} s"
                ),
                retry_after,
            },
        }
    }
}

/// A request rate: sustained requests per second and the burst on top.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 50.0,
            burst: 100,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One token bucket per key (an API token's id, or a peer address for failed
/// authentications).
///
/// Kept rather than the `governor` crate (issue 15 asked for a reason): the failure
/// limiter must ask whether a peer's bucket has a request left *without taking one*
/// (`check`, before a lookup; only a failed authentication is charged, by `take`), and
/// governor's keyed limiter has no such peek — `check_key` and `check_key_n` consume
/// when they conform. Its keyed state also grows with every key until the caller
/// runs `retain_recent`, where this map is bounded by [`CACHE_MAX`] on its own (a
/// flood of random tokens or addresses cannot grow it). Both needs would take as
/// much code around governor as the bucket below is.
#[derive(Default)]
struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// Takes one request from `key`'s bucket, or says when one will be there.
    fn take(&self, key: &str, now: Instant) -> Result<(), u32> {
        self.charge(key, now, true)
    }

    /// Whether `key`'s bucket has a request left, without taking it.
    fn check(&self, key: &str, now: Instant) -> Result<(), u32> {
        self.charge(key, now, false)
    }

    fn charge(&self, key: &str, now: Instant, take: bool) -> Result<(), u32> {
        let RateLimit { per_second, burst } = self.limit;
        if per_second <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= CACHE_MAX && !buckets.contains_key(key) {
            // Full buckets carry no state worth keeping.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst
            });
            // Memory stays bounded even when every bucket is in use.
            if buckets.len() >= CACHE_MAX {
                buckets.clear();
            }
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * per_second;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            if take {
                b.tokens -= 1.0;
            }
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / per_second;
            Err(wait.ceil().clamp(1.0, 3600.0) as u32)
        }
    }
}

/// A stored token and when the store last said so.
type Known = (Instant, TokenInfo);

/// The tokens a server accepts: static ones, the token store, and their rate limits.
#[derive(Clone, Default)]
pub struct Tokens {
    /// Digest → tenant, from `LOGPORT_STATIC_TOKENS`.
    by_digest: HashMap<String, String>,
    store: Option<Arc<dyn TokenStore>>,
    /// Digests the store holds (revoked and expired ones too).
    known: Arc<Mutex<HashMap<String, Known>>>,
    /// Digests the store did not hold, and when it said so.
    unknown: Arc<Mutex<HashMap<String, Instant>>>,
    /// Per token id.
    limiter: Arc<Limiter>,
    /// Failed authentications per peer address.
    failures: Arc<Limiter>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("static_digests", &self.by_digest)
            .field("store", &self.store.is_some())
            .field("rate_limit", &self.limiter.limit)
            .field("failure_limit", &self.failures.limit)
            .finish()
    }
}

impl Tokens {
    /// Parses `token@tenant[,token@tenant…]` (the `LOGPORT_STATIC_TOKENS` form).
    pub fn parse_static(spec: &str) -> Result<Tokens, String> {
        let mut t = Tokens::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (token, tenant) = item
                .rsplit_once('@')
                .ok_or_else(|| "each static token must look like token@tenant".to_string())?;
            if token.len() < 8 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("a static token must be at least 8 printable characters".into());
            }
            if !is_valid_tenant(tenant) {
                return Err(format!(
                    "tenant `{tenant}` must match [a-z0-9][a-z0-9_-]* (at most 64 characters)"
                ));
            }
            t.by_digest.insert(digest(token), tenant.to_string());
        }
        Ok(t)
    }

    /// Also accepts the tokens of this store.
    pub fn with_store(mut self, store: Arc<dyn TokenStore>) -> Tokens {
        self.store = Some(store);
        self
    }

    /// Limits every token's request rate.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Tokens {
        self.limiter = Arc::new(Limiter {
            limit,
            buckets: Mutex::default(),
        });
        self
    }

    /// Limits failed authentications per peer address.
    pub fn with_failure_limit(mut self, limit: RateLimit) -> Tokens {
        self.failures = Arc::new(Limiter {
            limit,
            buckets: Mutex::default(),
        });
        self
    }

    /// The tenant of a static token.
    pub fn tenant_of(&self, token: &str) -> Option<&str> {
        self.by_digest.get(&digest(token)).map(String::as_str)
    }

    /// Who a token sent from `peer` is at `now_ms`, or why it is not accepted.
    pub async fn resolve(
        &self,
        token: &str,
        peer: &str,
        now_ms: i64,
    ) -> Result<Identity, AuthFailure> {
        let d = digest(token);
        if let Some(tenant) = self.by_digest.get(&d) {
            return Ok(Identity {
                tenant: tenant.clone(),
                token_id: format!("{STATIC_PREFIX}{}", &d[..12]),
                token_name: "static".into(),
                scopes: vec![Scope::Admin],
                apps: None,
            });
        }
        let invalid = || AuthFailure::Invalid("the token is not valid".into());
        let Some(store) = &self.store else {
            return Err(self.failed(peer, "unknown", invalid()));
        };
        let now = Instant::now();
        let known = lock(&self.known).get(&d).cloned();
        let info = match known {
            Some((at, info)) if now.duration_since(at) < CACHE_TTL => info,
            known => {
                if known.is_none() {
                    // Not a token this server has seen valid: refused cheaply, and
                    // never looked up for a peer that keeps failing.
                    if let Err(wait) = self.failures.check(peer, now) {
                        metrics::counter!("logport_auth_failures_total", "reason" => "throttled")
                            .increment(1);
                        return Err(AuthFailure::Throttled(wait));
                    }
                    if !is_well_formed_secret(token) {
                        return Err(self.failed(peer, "malformed", invalid()));
                    }
                    let remembered = lock(&self.unknown)
                        .get(&d)
                        .is_some_and(|at| now.duration_since(*at) < UNKNOWN_TTL);
                    if remembered {
                        return Err(self.failed(peer, "unknown", invalid()));
                    }
                }
                metrics::counter!("logport_auth_token_lookups_total").increment(1);
                match store.token_by_digest(&d).await {
                    Ok(Some(info)) => {
                        remember(&self.known, d, (Instant::now(), info.clone()), |(at, _)| {
                            at.elapsed() < STALE_MAX
                        });
                        info
                    }
                    Ok(None) => {
                        lock(&self.known).remove(&d);
                        remember(&self.unknown, d, Instant::now(), |at| {
                            at.elapsed() < UNKNOWN_TTL
                        });
                        return Err(self.failed(peer, "unknown", invalid()));
                    }
                    Err(e) => match known {
                        Some((at, info)) if now.duration_since(at) < STALE_MAX => {
                            tracing::warn!(error = %e, token_id = %info.id, "token lookup failed; its last answer stands");
                            info
                        }
                        _ => {
                            tracing::warn!(error = %e, "token lookup failed");
                            return Err(AuthFailure::Unavailable);
                        }
                    },
                }
            }
        };
        if info.revoked_at.is_some() {
            return Err(self.failed(
                peer,
                "revoked",
                AuthFailure::Invalid("the token was revoked".into()),
            ));
        }
        if !info.is_active(now_ms) {
            return Err(self.failed(
                peer,
                "expired",
                AuthFailure::Invalid("the token has expired".into()),
            ));
        }
        Ok(Identity {
            tenant: info.tenant,
            token_id: info.id,
            token_name: info.name,
            scopes: info.scopes,
            apps: info.apps,
        })
    }

    /// Counts a failed authentication against its peer.
    fn failed(&self, peer: &str, reason: &'static str, failure: AuthFailure) -> AuthFailure {
        metrics::counter!("logport_auth_failures_total", "reason" => reason).increment(1);
        let _ = self.failures.take(peer, Instant::now());
        failure
    }

    /// Takes one request from the token's rate limit (static tokens have none).
    pub fn take(&self, token_id: &str) -> Result<(), AuthFailure> {
        if token_id.starts_with(STATIC_PREFIX) {
            return Ok(());
        }
        self.limiter
            .take(token_id, Instant::now())
            .map_err(AuthFailure::RateLimited)
    }

    /// Resolves the token of a request and charges its rate limit: the [`Caller`].
    pub async fn caller(
        &self,
        req: &HttpRequest,
        token: &str,
        now_ms: i64,
    ) -> Result<Caller, AuthFailure> {
        let ip = req.peer_addr().map(|a| a.ip());
        let id = self
            .resolve(token, &ip.map(failure_key).unwrap_or_default(), now_ms)
            .await?;
        self.take(&id.token_id)?;
        Ok(Caller {
            tenant: id.tenant,
            token_id: id.token_id,
            token_name: id.token_name,
            scopes: id.scopes,
            apps: id.apps,
            ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .chars()
                        .take(512)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// Whom failed authentications are counted against: an IPv4 address, or an IPv6
/// address's /64 (one host usually has a whole /64 to pick addresses from).
fn failure_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        other => other.to_canonical().to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Inserts into a bounded cache: when full, entries `keep` refuses go first, and if
/// that frees nothing, everything does.
fn remember<V>(
    cache: &Mutex<HashMap<String, V>>,
    key: String,
    value: V,
    keep: impl Fn(&V) -> bool,
) {
    let mut cache = lock(cache);
    if cache.len() >= CACHE_MAX && !cache.contains_key(&key) {
        cache.retain(|_, v| keep(v));
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
    }
    cache.insert(key, value);
}

/// The token of a request, from `Authorization: Bearer|OAuth <token>`.
pub fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("use Authorization: Bearer <token>".into()))?;
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth")) {
        return Err(ApiError::Unauthorized(
            "use the Bearer (or OAuth) authorization scheme".into(),
        ));
    }
    Ok(token.trim())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await })
    }
}

async fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("app state missing".into()))?;
    let token = bearer(req)?;
    Ok(state
        .tokens
        .caller(req, token, state.clock.now_ms())
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_tokens() {
        let t = Tokens::parse_static("secret-a1@acme, secret-b2@globex").unwrap();
        assert_eq!(t.tenant_of("secret-a1"), Some("acme"));
        assert_eq!(t.tenant_of("secret-b2"), Some("globex"));
        assert_eq!(t.tenant_of("secret-a"), None);
        assert!(Tokens::parse_static("nodelimiter").is_err());
        assert!(Tokens::parse_static("short@acme").is_err());
        assert!(Tokens::parse_static("long-enough@Acme").is_err());
        assert!(Tokens::parse_static("long-enough@../x").is_err());
        assert!(
            !format!("{t:?}").contains("secret-a1"),
            "only digests are kept"
        );
    }

    #[test]
    fn failures_count_against_an_address_or_its_64() {
        let key = |s: &str| failure_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), key("2001:db8:1:2:aaaa::1"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }

    #[test]
    fn token_buckets() {
        let l = Limiter {
            limit: RateLimit {
                per_second: 2.0,
                burst: 3,
            },
            buckets: Mutex::default(),
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take("a", t0), Ok(()));
        }
        assert_eq!(l.take("a", t0), Err(1), "the burst is spent");
        assert_eq!(l.take("b", t0), Ok(()), "every token has its own bucket");
        // Half a second refills one request at 2/s.
        assert_eq!(l.take("a", t0 + Duration::from_millis(500)), Ok(()));
        assert!(l.take("a", t0 + Duration::from_millis(500)).is_err());
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.take("a", later), Ok(()));
        }
        assert!(l.take("a", later).is_err());
        let slow = Limiter {
            limit: RateLimit {
                per_second: 0.1,
                burst: 1,
            },
            buckets: Mutex::default(),
        };
        assert_eq!(slow.take("a", t0), Ok(()));
        assert_eq!(slow.take("a", t0), Err(10), "Retry-After rounds up");
    }

    fn caller(scopes: &[Scope], apps: Option<Vec<u64>>) -> Caller {
        Caller {
            tenant: "acme".into(),
            token_id: "tok_1".into(),
            token_name: "t".into(),
            scopes: scopes.to_vec(),
            apps,
            ip: String::new(),
            user_agent: String::new(),
        }
    }

    #[test]
    fn scopes_apps_and_the_admin_slice() {
        let ingest = caller(&[Scope::Ingest], Some(vec![1, 2]));
        assert!(ingest.require(Scope::Ingest).is_ok());
        assert!(matches!(
            ingest.require(Scope::Export),
            Err(ApiError::Forbidden(_))
        ));
        assert!(ingest.require_app(Some(2), "app_id").is_ok());
        assert!(ingest.require_app(Some(3), "app_id").is_err());
        assert!(ingest.require_app(None, "app_id").is_err());
        assert!(!ingest.may_use_slice("activity"));
        assert!(ingest.may_use_slice("clicks"));
        assert_eq!(ingest.hidden_slices(), ["activity"]);
        let admin = caller(&[Scope::Admin], None);
        for s in Scope::ALL {
            assert!(admin.has(s));
        }
        assert!(admin.require_app(None, "app_id").is_ok());
        assert!(admin.may_use_slice("activity"));
        assert!(admin.hidden_slices().is_empty());
    }
}
