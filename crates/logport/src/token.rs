//! `logport token create|list|revoke`: API tokens in the job store's database.
//!
//! These commands need only `LOGPORT_JOB_STORE_URL` (never ClickHouse): a token and
//! its activity row are written in one transaction of the job store, and a running
//! `logport serve` moves the activity row into the `activity` slice (see
//! `logport_api::activity`). The secret is printed once; only its SHA-256 is kept.

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use logport_api::activity::{self, Actor, Entry};
use logport_catalog::time;
use logport_queue::tokens::is_token_id;
use logport_queue::{AuditRecord, NewToken, Revoked, Scope, TokenInfo, TokenStore};
use serde_json::{json, Value as Json};

use crate::config::Settings;

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: it cannot be shown again).
    Create {
        /// The tenant (account) the token acts for.
        #[arg(long)]
        tenant: String,
        /// What it may do: a comma-separated list of ingest, export, admin.
        #[arg(long)]
        scopes: String,
        /// Only these apps (comma-separated app ids); default: every app.
        #[arg(long, value_delimiter = ',')]
        apps: Option<Vec<u64>>,
        /// When it stops working: YYYY-MM-DD (00:00 UTC that day), an RFC 3339
        /// instant, or a duration from now (90d, 12h); default: never.
        #[arg(long)]
        expires: Option<String>,
        /// A name for lists and the activity log.
        #[arg(long)]
        name: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (tok_…); it stops working within seconds.
    Revoke {
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: TokenArgs, settings: Settings) -> anyhow::Result<()> {
    let url = &settings.raw.job_store_url;
    let tokens = logport_queue::open_stores(url)
        .await
        .with_context(|| {
            format!(
                "cannot open the job store {}",
                logport_queue::redact_urls(url)
            )
        })?
        .tokens;
    let now = logport_queue::now_ms();
    match args.command {
        TokenCommand::Create {
            tenant,
            scopes,
            apps,
            expires,
            name,
            json,
        } => {
            create(
                tokens,
                Create {
                    tenant,
                    scopes,
                    apps,
                    expires,
                    name,
                },
                json,
                now,
            )
            .await
        }
        TokenCommand::List { tenant, json } => list(tokens, tenant, json, now).await,
        TokenCommand::Revoke { id, json } => revoke(tokens, &id, json, now).await,
    }
}

struct Create {
    tenant: String,
    scopes: String,
    apps: Option<Vec<u64>>,
    expires: Option<String>,
    name: Option<String>,
}

/// Who acts from the command line: the host's user, as far as the environment says.
fn cli_actor() -> Actor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    Actor {
        actor_type: "system",
        actor_id: "cli".into(),
        actor_name: format!("logport token ({user})"),
        token_id: String::new(),
        source: "system",
        ip: String::new(),
        user_agent: format!("logport/{}", env!("CARGO_PKG_VERSION")),
    }
}

fn audit(entry: &Entry, now: i64) -> AuditRecord {
    let id = uuid::Uuid::now_v7();
    AuditRecord {
        id: id.to_string(),
        row: activity::row(&cli_actor(), entry, id, now.div_euclid(1000)),
    }
}

/// `YYYY-MM-DD`, an RFC 3339 instant or a duration from now, as Unix milliseconds.
fn parse_expiry(text: &str, now: i64) -> anyhow::Result<i64> {
    let t = text.trim();
    let at = if let Ok(d) = crate::config::parse_duration(t) {
        now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
    } else if t.len() == 10 {
        let date = time::parse_date(t).map_err(anyhow::Error::msg)?;
        time::date_to_days(date) * 86_400_000
    } else {
        time::parse_timestamp(t).map_err(anyhow::Error::msg)? * 1000
    };
    if at <= now {
        bail!("--expires {t} is not in the future");
    }
    Ok(at)
}

async fn create(
    store: Arc<dyn TokenStore>,
    c: Create,
    as_json: bool,
    now: i64,
) -> anyhow::Result<()> {
    if !logport_api::auth::is_valid_tenant(&c.tenant) {
        bail!(
            "--tenant `{}` must match [a-z0-9][a-z0-9_-]* (at most 64 characters)",
            c.tenant
        );
    }
    let scopes = Scope::parse_list(&c.scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
    let apps = match c.apps {
        Some(mut list) => {
            if list.is_empty() {
                bail!("--apps: name at least one app id, or leave it out for every app");
            }
            list.sort_unstable();
            list.dedup();
            Some(list)
        }
        None => None,
    };
    let expires_at = c
        .expires
        .as_deref()
        .map(|e| parse_expiry(e, now))
        .transpose()
        .context("--expires")?;
    let name = c
        .name
        .unwrap_or_else(|| format!("{} token", Scope::join(&scopes)));
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        bail!("--name must be 1 to 100 printable characters");
    }
    let (token, secret) =
        NewToken::generate(&c.tenant, &name, scopes.clone(), apps.clone(), expires_at);
    let entry = Entry {
        action: "created",
        entity_type: "token",
        entity_id: token.id.clone(),
        entity_name: name.clone(),
        app_id: 0,
        changes: json!({
            "scopes": [null, Scope::join(&scopes)],
            "apps": [null, apps],
            "expires_at": [null, expires_at.map(time::format_rfc3339_ms)],
        }),
    };
    let info = store
        .create_token(&token, &audit(&entry, now), now)
        .await
        .context("cannot store the token")?;
    if as_json {
        let mut view = view(&info, now);
        view["token"] = Json::String(secret);
        println!("{view}");
    } else {
        println!("token    {secret}");
        print_info(&info, now);
        eprintln!("Keep the token now: it is stored only as a hash and cannot be shown again.");
    }
    Ok(())
}

async fn list(
    store: Arc<dyn TokenStore>,
    tenant: Option<String>,
    as_json: bool,
    now: i64,
) -> anyhow::Result<()> {
    let tokens = store
        .list_tokens(tenant.as_deref())
        .await
        .context("cannot list tokens")?;
    if as_json {
        let all: Vec<Json> = tokens.iter().map(|t| view(t, now)).collect();
        println!("{}", Json::Array(all));
        return Ok(());
    }
    println!(
        "{:<20} {:<16} {:<8} {:<20} {:<14} {:<24} NAME",
        "ID", "TENANT", "STATUS", "SCOPES", "APPS", "EXPIRES"
    );
    for t in &tokens {
        println!(
            "{:<20} {:<16} {:<8} {:<20} {:<14} {:<24} {}",
            t.id,
            t.tenant,
            status(t, now),
            Scope::join(&t.scopes),
            apps_text(t),
            t.expires_at
                .map(time::format_rfc3339_ms)
                .unwrap_or_else(|| "never".into()),
            t.name
        );
    }
    Ok(())
}

async fn revoke(
    store: Arc<dyn TokenStore>,
    id: &str,
    as_json: bool,
    now: i64,
) -> anyhow::Result<()> {
    if !is_token_id(id) {
        bail!("`{id}` is not a token id (tok_ and 16 hex digits; see `logport token list`)");
    }
    // The row names the token; its tenant comes from the token itself.
    let entry = |name: &str| Entry {
        action: "updated",
        entity_type: "token",
        entity_id: id.to_string(),
        entity_name: name.to_string(),
        app_id: 0,
        changes: json!({"status": ["active", "revoked"]}),
    };
    let known = store
        .list_tokens(None)
        .await
        .context("cannot read tokens")?
        .into_iter()
        .find(|t| t.id == id);
    let name = known.as_ref().map(|t| t.name.clone()).unwrap_or_default();
    let outcome = store
        .revoke_token(id, &audit(&entry(&name), now), now)
        .await
        .context("cannot revoke the token")?;
    let (info, already) = match outcome {
        Revoked::NotFound => bail!("no token has the id {id}"),
        Revoked::Now(t) => (t, false),
        Revoked::Already(t) => (t, true),
    };
    if as_json {
        let mut v = view(&info, now);
        v["already_revoked"] = Json::Bool(already);
        println!("{v}");
    } else if already {
        println!("{id} was already revoked");
    } else {
        println!("revoked {id} ({}, tenant {})", info.name, info.tenant);
    }
    Ok(())
}

fn status(t: &TokenInfo, now: i64) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if !t.is_active(now) {
        "expired"
    } else {
        "active"
    }
}

fn apps_text(t: &TokenInfo) -> String {
    match &t.apps {
        None => "all".into(),
        Some(a) => a.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
    }
}

fn view(t: &TokenInfo, now: i64) -> Json {
    json!({
        "id": t.id,
        "tenant": t.tenant,
        "name": t.name,
        "scopes": t.scopes,
        "apps": t.apps,
        "status": status(t, now),
        "created_at": time::format_rfc3339_ms(t.created_at),
        "expires_at": t.expires_at.map(time::format_rfc3339_ms),
        "revoked_at": t.revoked_at.map(time::format_rfc3339_ms),
    })
}

fn print_info(t: &TokenInfo, now: i64) {
    println!("id       {}", t.id);
    println!("tenant   {}", t.tenant);
    println!("name     {}", t.name);
    println!("scopes   {}", Scope::join(&t.scopes));
    println!("apps     {}", apps_text(t));
    println!(
        "expires  {}",
        t.expires_at
            .map(time::format_rfc3339_ms)
            .unwrap_or_else(|| "never".into())
    );
    println!("status   {}", status(t, now));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_expiry("1d", now).unwrap(), now + 86_400_000);
        assert_eq!(parse_expiry("2027-02-01", now).unwrap(), 1_801_440_000_000);
        assert!(
            parse_expiry("2027-01-15", now).is_err(),
            "midnight of today has passed"
        );
        assert_eq!(
            parse_expiry("2027-01-15T12:00:00Z", now).unwrap() % 86_400_000,
            43_200_000
        );
        assert!(parse_expiry("2020-01-01", now).is_err(), "the past");
        assert!(parse_expiry("soon", now).is_err());
    }
}
