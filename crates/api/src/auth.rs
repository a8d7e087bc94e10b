//! Who is calling: a bearer token mapped to a tenant.
//!
//! Tokens are kept only as SHA-256 digests, so neither memory dumps nor logs hold a
//! usable token. `Authorization: Bearer <t>` and `Authorization: OAuth <t>` (what
//! AppMetrica and Metrica clients send) are both accepted.

use std::collections::HashMap;
use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// The authenticated caller; every handler that touches data takes one.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
}

/// Token digests → tenants.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<String, String>,
}

/// Tenant names appear in object keys and logs: keep them to a safe alphabet.
pub fn is_valid_tenant(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && t.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
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

    pub fn tenant_of(&self, token: &str) -> Option<&str> {
        self.by_digest.get(&digest(token)).map(String::as_str)
    }
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
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("app state missing".into()))?;
    let token = bearer(req)?;
    match state.tokens.tenant_of(token) {
        Some(tenant) => Ok(Caller {
            tenant: tenant.to_string(),
        }),
        None => Err(ApiError::Unauthorized("the token is not valid".into())),
    }
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
}
