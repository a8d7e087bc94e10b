//! The catalog end to end: `GET /v1/slices`, auth and routing errors, and the `migrate`/`catalog` CLI.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use logport_tests::*;

/// Every slice the catalog must ship.
const SLICES: [&str; 17] = [
    "clicks",
    "conversions",
    "postbacks",
    "api_postbacks",
    "cost_updates",
    "activity",
    "installations",
    "events",
    "sessions_starts",
    "revenue",
    "ad_revenue",
    "ecommerce",
    "deeplinks",
    "push_tokens",
    "crashes",
    "errors",
    "profiles",
];

const COMMON: [&str; 4] = ["app_id", "event_id", "event_time", "received_time"];

async fn ok_json(rb: reqwest::RequestBuilder) -> Value {
    let resp = send(rb).await;
    let ct = header(&resp, "content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    json_answer(resp, 200).await
}

/// `(table, column) → type` of every column of a database.
fn columns_of(svc: &Service, database: &str) -> BTreeMap<(String, String), String> {
    svc.clickhouse(&format!(
        "SELECT table, name, type FROM system.columns WHERE database = '{database}' \
         ORDER BY table, name FORMAT JSONEachRow"
    ))
    .lines()
    .map(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        ((s("table"), s("name")), s("type"))
    })
    .collect()
}

fn tables_of(svc: &Service, database: &str) -> BTreeSet<String> {
    svc.clickhouse(&format!(
        "SELECT name FROM system.tables WHERE database = '{database}' FORMAT TSV"
    ))
    .lines()
    .map(String::from)
    .collect()
}

/// Maps a catalog type to the type the server stores (LowCardinality is plain
/// String before ClickHouse 19.x).
fn stored_type_mapper(svc: &Service) -> impl Fn(&str) -> String {
    let major: u32 = svc
        .clickhouse("SELECT version()")
        .trim()
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    move |api_type: &str| {
        if major < 19 {
            api_type.replace("LowCardinality(String)", "String")
        } else {
            api_type.to_string()
        }
    }
}

/// The repository's `schemas/` directory.
fn schema_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

/// A private, editable copy of `schemas/*.toml`.
fn schema_copy() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("logport-schemas-")
        .tempdir()
        .unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(schema_source()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            n += 1;
        }
    }
    assert_eq!(n, SLICES.len(), "schemas/ holds one file per slice");
    dir
}

fn edit(dir: &Path, file: &str, f: impl FnOnce(String) -> String) -> PathBuf {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let new = f(text.clone());
    assert_ne!(new, text, "the edit of {file} changed nothing");
    std::fs::write(&path, new).unwrap();
    path
}

const PROMO_FIELD: &str = "\n[[fields]]\nname = \"promo_code\"\ntype = \"Nullable(String)\"\n\
description = \"Promo code the visitor arrived with.\"\nfilterable = true\ndefault = false\n";

/// Runs a `logport` command to completion (at most 60 s) and returns its output.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logport");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "logport did not exit within 60 s:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// JSON log lines (`LOGPORT_LOG_FORMAT=json`) with the given message.
fn log_events(out: &Output, message: &str) -> Vec<Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

/// `logport migrate` for the service, with JSON logs and extra environment.
fn migrate(svc: &Service, env: &[(&str, &str)]) -> Output {
    let mut cmd = svc.command(&["migrate"]);
    cmd.env("LOGPORT_LOG_FORMAT", "json");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd)
}

/// Drops a database this test created outside a `Service`.
struct DropDatabase(String, String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let _ = clickhouse_blocking(&self.0, &format!("DROP DATABASE IF EXISTS {}", self.1));
    }
}

// ---------------------------------------------------------------- GET /v1/slices

#[tokio::test]
async fn lists_every_slice_with_description_and_retention() {
    let svc = Service::start().await;
    let body = ok_json(svc.get("/v1/slices", ACME)).await;
    let slices = body["slices"].as_array().expect("slices array");
    let names: Vec<&str> = slices.iter().map(|s| s["name"].as_str().unwrap()).collect();
    let got: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), got.len(), "a slice is listed twice: {names:?}");
    assert_eq!(got, SLICES.iter().copied().collect::<BTreeSet<_>>());
    for s in slices {
        let name = s["name"].as_str().unwrap();
        let description = s["description"].as_str().unwrap_or("");
        assert!(
            description.trim().len() >= 10,
            "{name} needs a description: {s}"
        );
        assert!(
            s.get("retention_days").is_some(),
            "{name} lacks retention_days: {s}"
        );
        match name {
            "api_postbacks" | "cost_updates" => assert_eq!(s["retention_days"], 7, "{s}"),
            _ => assert!(
                s["retention_days"].is_null() || s["retention_days"].as_u64().unwrap_or(0) >= 1,
                "{name}: retention_days must be null (kept) or a positive number of days: {s}"
            ),
        }
    }
    // The list and the detail agree.
    let clicks = ok_json(svc.get("/v1/slices/clicks", ACME)).await;
    let listed = slices.iter().find(|s| s["name"] == "clicks").unwrap();
    assert_eq!(clicks["description"], listed["description"]);
    assert_eq!(clicks["retention_days"], listed["retention_days"]);
    // Another tenant sees the same catalog.
    assert_eq!(ok_json(svc.get("/v1/slices", GLOBEX)).await, body);
}

#[tokio::test]
async fn clicks_describes_its_fields() {
    let svc = Service::start().await;
    let body = ok_json(svc.get("/v1/slices/clicks", ACME)).await;
    assert_eq!(body["name"], "clicks");
    assert!(
        body["retention_days"].is_null(),
        "{}",
        body["retention_days"]
    );
    let fields = body["fields"].as_array().expect("fields array");
    assert!(
        fields.len() >= 34,
        "clicks has only {} fields",
        fields.len()
    );

    let mut names = BTreeSet::new();
    for f in fields {
        let name = f["name"].as_str().unwrap_or_else(|| panic!("name: {f}"));
        assert!(names.insert(name), "field {name} listed twice");
        let ty = f["type"].as_str().unwrap_or_else(|| panic!("type: {f}"));
        assert!(!ty.is_empty(), "{f}");
        assert!(
            f["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty()),
            "{name} needs a description: {f}"
        );
        assert!(f["filterable"].is_boolean(), "{f}");
        assert!(f["default"].is_boolean(), "{f}");
        if f["filterable"] == true {
            let ops = f["ops"].as_array().unwrap_or_else(|| panic!("ops: {f}"));
            assert!(!ops.is_empty(), "{f}");
        }
    }
    for c in COMMON {
        assert!(names.contains(c), "common field {c} missing");
    }
    assert!(!names.contains("tenant_id"), "tenant_id is internal");

    let by_name = |n: &str| fields.iter().find(|f| f["name"] == n).unwrap();
    assert_eq!(by_name("app_id")["type"], "UInt64");
    assert_eq!(by_name("event_id")["type"], "UUID");
    assert_eq!(by_name("event_time")["type"], "DateTime");
    assert_eq!(by_name("received_time")["type"], "DateTime");
    assert_eq!(by_name("click_id")["type"], "String");
    assert_eq!(by_name("cost")["type"], "Float64");
    assert!(
        by_name("event_type")["type"]
            .as_str()
            .unwrap()
            .starts_with("Enum8('unknown' = 0, 'visit' = 1"),
        "{}",
        by_name("event_type")
    );
    assert_eq!(by_name("campaign_name")["type"], "LowCardinality(String)");
    // The fields a client needs without naming any are marked default.
    for d in ["event_time", "click_id", "campaign_id"] {
        assert_eq!(by_name(d)["default"], true, "{d} is a default field");
    }
    assert_eq!(by_name("received_time")["default"], false);
    // Operators fit the type.
    let ops = |n: &str| -> Vec<String> {
        by_name(n)["ops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap().to_string())
            .collect()
    };
    assert!(ops("click_id").contains(&"prefix".to_string()));
    assert!(ops("cost").contains(&"gt".to_string()));
    assert!(!ops("cost").contains(&"contains".to_string()));
}

#[tokio::test]
async fn every_slice_describes_its_table_exactly() {
    let svc = Service::start().await;
    let columns = columns_of(&svc, &svc.database);
    let stored_type = stored_type_mapper(&svc);
    assert_eq!(
        tables_of(&svc, &svc.database),
        SLICES
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    for slice in SLICES {
        let body = ok_json(svc.get(&format!("/v1/slices/{slice}"), ACME)).await;
        assert_eq!(body["name"], slice);
        let fields = body["fields"].as_array().unwrap();
        let api: BTreeMap<String, String> = fields
            .iter()
            .map(|f| {
                let ty = f["type"].as_str().unwrap();
                (f["name"].as_str().unwrap().to_string(), stored_type(ty))
            })
            .collect();
        assert_eq!(api.len(), fields.len(), "{slice}: duplicate field names");
        for c in COMMON {
            assert!(api.contains_key(c), "{slice} lacks {c}");
        }
        assert!(!api.contains_key("tenant_id"), "{slice} exposes tenant_id");
        assert!(
            !api.contains_key("received_ms"),
            "{slice} exposes received_ms"
        );
        // The table has exactly the described fields (plus the internal tenant_id and
        // received_ms), with the described types.
        let table: BTreeMap<String, String> = columns
            .iter()
            .filter(|((t, _), _)| t == slice)
            .map(|((_, n), ty)| (n.clone(), ty.clone()))
            .collect();
        let mut expected = api.clone();
        expected.insert("tenant_id".into(), "String".into());
        expected.insert("received_ms".into(), "UInt16".into());
        assert_eq!(table, expected, "{slice}: API and table disagree");
    }
}

#[tokio::test]
async fn unknown_slice_is_a_404_problem_naming_the_slice() {
    let svc = Service::start().await;
    for name in ["nope", "Clicks", "tenant_id", "clicks_", "system.columns"] {
        let (status, body) =
            problem(send(svc.get(&format!("/v1/slices/{name}"), ACME)).await).await;
        assert_eq!(status, 404, "{name}: {body}");
        assert_eq!(body["field"], "slice", "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains(name),
            "the detail names `{name}`: {body}"
        );
    }
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn a_missing_token_is_a_401_problem_with_a_challenge() {
    let svc = Service::start().await;
    for path in ["/v1/slices", "/v1/slices/clicks", "/v1/slices/nope"] {
        let resp = send(svc.http.get(svc.url(path))).await;
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (status, body) = problem(resp).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            challenge.starts_with("Bearer"),
            "{path}: WWW-Authenticate must offer Bearer, got `{challenge}`"
        );
    }
}

#[tokio::test]
async fn wrong_tokens_and_schemes_are_401() {
    let svc = Service::start().await;
    let cases = [
        "Bearer not-a-real-token".to_string(),
        format!("Bearer {ACME}x"),
        format!("Bearer {}", &ACME[..ACME.len() - 1]),
        "Bearer ".to_string(),
        "Bearer".to_string(),
        ACME.to_string(),
        format!("Basic {ACME}"),
        // base64("acme:test-token-acme"): a Basic credential is not a token.
        "Basic YWNtZTp0ZXN0LXRva2VuLWFjbWU=".to_string(),
        format!("Token {ACME}"),
    ];
    for auth in cases {
        let resp = send(
            svc.http
                .get(svc.url("/v1/slices"))
                .header("authorization", &auth),
        )
        .await;
        assert!(
            resp.headers().contains_key("www-authenticate"),
            "`{auth}`: 401 needs WWW-Authenticate"
        );
        let (status, body) = problem(resp).await;
        assert_eq!(status, 401, "`{auth}` must be refused: {body}");
    }
}

#[tokio::test]
async fn oauth_and_case_insensitive_bearer_are_accepted() {
    let svc = Service::start().await;
    let reference = ok_json(svc.get("/v1/slices/clicks", ACME)).await;
    for auth in [
        format!("OAuth {ACME}"),
        format!("oauth {ACME}"),
        format!("bearer {ACME}"),
        format!("BEARER {ACME}"),
        format!("OAuth {GLOBEX}"),
    ] {
        let body = ok_json(
            svc.http
                .get(svc.url("/v1/slices/clicks"))
                .header("authorization", &auth),
        )
        .await;
        assert_eq!(body, reference, "`{auth}`");
    }
}

// ---------------------------------------------------------------- routing errors

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let svc = Service::start().await;
    // `/` is the web UI (tests/tests/ui.rs).
    for path in [
        "/ui",
        "/v1",
        "/v2/slices",
        "/v1/slice",
        "/v1/slices/clicks/fields",
        "/v1/slices/",
        "/v1/nothing/here",
    ] {
        for token in [Some(ACME), None] {
            let rb = match token {
                Some(t) => svc.get(path, t),
                None => svc.http.get(svc.url(path)),
            };
            let (status, body) = problem(send(rb).await).await;
            assert_eq!(status, 404, "{path}: {body}");
            assert_eq!(body["type"], "/problems/not-found", "{body}");
        }
    }
}

#[tokio::test]
async fn wrong_methods_are_405_problems() {
    let svc = Service::start().await;
    let cases = [
        (reqwest::Method::DELETE, "/v1/slices"),
        (reqwest::Method::POST, "/v1/slices"),
        (reqwest::Method::PUT, "/v1/slices/clicks"),
        (reqwest::Method::PATCH, "/v1/slices/clicks"),
        (reqwest::Method::GET, "/v1/ingest/clicks"),
        (reqwest::Method::DELETE, "/v1/ingest/clicks"),
    ];
    for (method, path) in cases {
        let resp = send(
            svc.http
                .request(method.clone(), svc.url(path))
                .bearer_auth(ACME),
        )
        .await;
        let (status, body) = problem(resp).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(method.as_str()),
            "{body}"
        );
    }
}

/// RFC 9110 §15.5.6: "The origin server MUST generate an Allow header field in a 405
/// response containing a list of the target resource's currently supported methods."
#[tokio::test]
async fn a_405_lists_the_allowed_methods() {
    let svc = Service::start().await;
    for (method, path, allowed) in [
        (reqwest::Method::DELETE, "/v1/slices", "GET"),
        (reqwest::Method::GET, "/v1/ingest/clicks", "POST"),
    ] {
        let resp = send(
            svc.http
                .request(method.clone(), svc.url(path))
                .bearer_auth(ACME),
        )
        .await;
        assert_eq!(resp.status(), 405);
        let allow = resp
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let allow = allow.unwrap_or_else(|| panic!("{method} {path}: 405 without an Allow header"));
        assert!(
            allow.split(',').any(|m| m.trim() == allowed),
            "{method} {path}: Allow `{allow}` lacks {allowed}"
        );
    }
}

/// RFC 9110 §9.1: a server that supports GET on a resource MUST support HEAD on it.
#[tokio::test]
async fn head_works_where_get_does() {
    let svc = Service::start().await;
    for path in ["/v1/slices", "/v1/slices/clicks"] {
        let get = send(svc.get(path, ACME)).await;
        assert_eq!(get.status(), 200);
        let head = send(svc.http.head(svc.url(path)).bearer_auth(ACME)).await;
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type")
        );
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");
    }
}

// ---------------------------------------------------------------- logport migrate

#[tokio::test]
async fn migrate_again_changes_nothing() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "keep", "event_time": "2026-11-05T10:00:00Z"})],
    )
    .await;
    let before = columns_of(&svc, &svc.database);
    assert!(before.len() > 17 * 5, "the service created the tables");

    for round in 0..2 {
        let out = migrate(&svc, &[]);
        assert!(out.status.success(), "round {round}: {}", text(&out));
        assert_eq!(
            log_events(&out, "schema up to date").len(),
            1,
            "round {round} must report no change:\n{}",
            text(&out)
        );
        assert!(
            log_events(&out, "schema migrated").is_empty(),
            "{}",
            text(&out)
        );
        assert_eq!(columns_of(&svc, &svc.database), before, "round {round}");
    }
    assert_eq!(svc.count("clicks", "acme"), 1, "migrate keeps the rows");
}

#[tokio::test]
async fn migrate_creates_every_table_even_when_run_concurrently() {
    let svc = Service::start().await;
    let fresh = format!("{}_fresh", svc.database);
    let _cleanup = DropDatabase(svc.clickhouse.clone(), fresh.clone());
    // Three migrations of an empty database at once: all succeed, one schema results.
    let children: Vec<_> = (0..3)
        .map(|_| {
            let mut cmd = svc.command(&["migrate"]);
            cmd.env("LOGPORT_CLICKHOUSE_DATABASE", &fresh);
            std::thread::spawn(move || run(cmd))
        })
        .collect();
    for c in children {
        let out = c.join().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(
        tables_of(&svc, &fresh),
        SLICES
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    // Same tables, columns and types as the service's own migration.
    assert_eq!(columns_of(&svc, &fresh), columns_of(&svc, &svc.database));
    // And a further run is a no-op.
    let mut cmd = svc.command(&["migrate"]);
    cmd.env("LOGPORT_CLICKHOUSE_DATABASE", &fresh)
        .env("LOGPORT_LOG_FORMAT", "json");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        log_events(&out, "schema up to date").len(),
        1,
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn migrate_adds_a_new_catalog_field_as_a_column() {
    let mut svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "old", "event_time": "2026-11-05T10:00:00Z"})],
    )
    .await;
    let before = columns_of(&svc, &svc.database);
    let schemas = schema_copy();
    edit(schemas.path(), "clicks.toml", |t| {
        format!("{t}{PROMO_FIELD}")
    });
    let dir = schemas.path().to_str().unwrap();

    let out = migrate(&svc, &[("LOGPORT_SCHEMA_DIR", dir)]);
    assert!(out.status.success(), "{}", text(&out));
    let migrated = log_events(&out, "schema migrated");
    assert_eq!(migrated.len(), 1, "{}", text(&out));
    assert!(
        migrated[0]["fields"]["added"]
            .as_str()
            .unwrap_or("")
            .contains("clicks.promo_code"),
        "{}",
        migrated[0]
    );

    let after = columns_of(&svc, &svc.database);
    let added: Vec<_> = after
        .iter()
        .filter(|(k, _)| !before.contains_key(*k))
        .collect();
    assert_eq!(
        added,
        [(
            &("clicks".to_string(), "promo_code".to_string()),
            &"Nullable(String)".to_string()
        )]
    );
    for (k, ty) in &before {
        assert_eq!(after.get(k), Some(ty), "{k:?} changed or vanished");
    }

    // Idempotent with the new catalog too.
    let out = migrate(&svc, &[("LOGPORT_SCHEMA_DIR", dir)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        log_events(&out, "schema up to date").len(),
        1,
        "{}",
        text(&out)
    );
    assert_eq!(columns_of(&svc, &svc.database), after);

    // `logport catalog` sees the extra field.
    let mut cmd = svc.command(&["catalog"]);
    cmd.env("LOGPORT_SCHEMA_DIR", dir);
    let listing = run(cmd);
    assert!(listing.status.success(), "{}", text(&listing));
    let builtin = ok_json(svc.get("/v1/slices/clicks", ACME)).await["fields"]
        .as_array()
        .unwrap()
        .len();
    let line = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find(|l| l.starts_with("clicks "))
        .map(String::from)
        .expect("a clicks line");
    assert!(
        line.contains(&format!(" {} fields", builtin + 1)),
        "{line} (built-in has {builtin})"
    );

    // A service on the new catalog describes, ingests and stores the field.
    svc.restart_with(Options::default().env("LOGPORT_SCHEMA_DIR", dir))
        .await;
    let desc = ok_json(svc.get("/v1/slices/clicks", ACME)).await;
    let promo = desc["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "promo_code")
        .cloned()
        .expect("promo_code is described");
    assert_eq!(promo["type"], "Nullable(String)");
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "new", "event_time": "2026-11-05T11:00:00Z", "promo_code": "BF-50"})],
    )
    .await;
    let rows = svc.clickhouse(&format!(
        "SELECT click_id, ifNull(promo_code, '<null>') FROM {}.clicks ORDER BY click_id FORMAT TSV",
        svc.database
    ));
    assert_eq!(rows, "new\tBF-50\nold\t<null>\n");
}

#[tokio::test]
async fn migrate_leaves_a_retyped_column_alone() {
    let svc = Service::start().await;
    let before = columns_of(&svc, &svc.database);
    let schemas = schema_copy();
    edit(schemas.path(), "clicks.toml", |t| {
        t.replacen(
            "name = \"cost\"\ntype = \"Float64\"",
            "name = \"cost\"\ntype = \"UInt32\"",
            1,
        )
    });
    let out = migrate(
        &svc,
        &[("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(columns_of(&svc, &svc.database), before);
    assert!(
        text(&out).contains("clicks.cost"),
        "the type difference is reported:\n{}",
        text(&out)
    );
}

/// Finds the index of a field in a schema file's `[[fields]]` list.
fn field_index(text: &str, name: &str) -> usize {
    let at = text
        .find(&format!("name = \"{name}\""))
        .unwrap_or_else(|| panic!("field {name} not in file"));
    text[..at].matches("[[fields]]").count() - 1
}

#[tokio::test]
async fn a_broken_schema_stops_migrate_naming_file_and_key() {
    let svc = Service::start().await;
    let before = columns_of(&svc, &svc.database);
    let schemas = schema_copy();
    // A valid new field in one file must not be applied while another file is broken.
    edit(schemas.path(), "clicks.toml", |t| {
        format!("{t}{PROMO_FIELD}")
    });
    let original = std::fs::read_to_string(schemas.path().join("conversions.toml")).unwrap();
    // Break a field in the middle of the list, not the first one.
    let victim = original
        .match_indices("type = \"String\"")
        .nth(3)
        .map(|(i, _)| i)
        .unwrap();
    let victim_name = original[..victim]
        .rsplit("name = \"")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let n = field_index(&original, &victim_name);
    assert!(n > 0, "victim {victim_name} is not the first field");
    let broken = format!(
        "{}type = \"Strin\"{}",
        &original[..victim],
        &original[victim + "type = \"String\"".len()..]
    );
    let path = schemas.path().join("conversions.toml");
    std::fs::write(&path, broken).unwrap();

    let out = migrate(
        &svc,
        &[("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "migrate must fail:\n{}", text(&out));
    assert!(
        stderr.contains(&path.display().to_string()),
        "stderr names the file {}:\n{stderr}",
        path.display()
    );
    assert!(
        stderr.contains(&format!("fields[{n}].type")),
        "stderr names the key fields[{n}].type ({victim_name}):\n{stderr}"
    );
    assert!(
        stderr.contains("Strin"),
        "stderr names the bad value:\n{stderr}"
    );
    assert_eq!(
        columns_of(&svc, &svc.database),
        before,
        "a failed migrate changes nothing"
    );

    // `logport catalog` refuses the same directory.
    let mut cmd = svc.command(&["catalog"]);
    cmd.env("LOGPORT_SCHEMA_DIR", schemas.path());
    let out = run(cmd);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("fields[{n}].type")),
        "{}",
        text(&out)
    );
}

/// A change to a schema file's text.
type Edit = fn(String) -> String;

#[tokio::test]
async fn other_schema_mistakes_are_named_too() {
    let svc = Service::start().await;
    let clicks = std::fs::read_to_string(schema_source().join("clicks.toml")).unwrap();
    let visitor = format!("fields[{}].name", field_index(&clicks, "visitor_id"));
    // (file, change, key in the message, a word the message must hold)
    let cases: [(&str, Edit, &str, &str); 5] = [
        (
            "clicks.toml",
            |t| t.replacen("name = \"visitor_id\"", "name = \"Visitor-Id\"", 1),
            &visitor,
            "Visitor-Id",
        ),
        (
            "clicks.toml",
            |t| t.replacen("name = \"visitor_id\"", "name = \"event_time\"", 1),
            &visitor,
            "common field",
        ),
        (
            "clicks.toml",
            |t| t.replacen("name = \"visitor_id\"", "name = \"click_id\"", 1),
            &visitor,
            "twice",
        ),
        (
            "clicks.toml",
            |t| t.replacen("name = \"clicks\"", "name = \"taps\"", 1),
            "name",
            "taps.toml",
        ),
        (
            "events.toml",
            |t| t.replacen("[[fields]]", "colour = \"red\"\n[[fields]]", 1),
            "line ",
            "colour",
        ),
    ];
    for (file, change, key, word) in cases {
        let schemas = schema_copy();
        let path = edit(schemas.path(), file, change);
        let out = migrate(
            &svc,
            &[("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap())],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{file} / {key}: {}", text(&out));
        let located = format!("{}: {key}", path.display());
        assert!(
            stderr.contains(&located) && stderr.contains(word),
            "stderr must say `{located}` and `{word}`:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn a_broken_schema_stops_serve() {
    let svc = Service::start().await;
    let schemas = schema_copy();
    let path = edit(schemas.path(), "clicks.toml", |t| {
        t.replacen("type = \"Float64\"", "type = \"Float65\"", 1)
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = svc.command(&["serve"]);
    cmd.env("LOGPORT_SCHEMA_DIR", schemas.path())
        .env("LOGPORT_LISTEN", format!("127.0.0.1:{port}"));
    let out = run(cmd);
    assert!(!out.status.success(), "serve must refuse:\n{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains(&path.display().to_string()) && all.contains("Float65"),
        "{all}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on {port}"
    );
    // The running service is unaffected.
    ok_json(svc.get("/v1/slices", ACME)).await;
}

#[tokio::test]
async fn logport_catalog_prints_every_slice() {
    let svc = Service::start().await;
    let out = run(svc.command(&["catalog"]));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), SLICES.len(), "{stdout}");
    let listed: BTreeSet<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(listed, SLICES.iter().copied().collect::<BTreeSet<_>>());
    // Each line's field count matches the API's.
    for slice in SLICES {
        let n = ok_json(svc.get(&format!("/v1/slices/{slice}"), ACME)).await["fields"]
            .as_array()
            .unwrap()
            .len();
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(slice))
            .unwrap();
        assert!(
            line.contains(&format!(" {n} fields")),
            "{line}: API says {n}"
        );
    }
    // It validates without ClickHouse.
    let mut cmd = svc.command(&["catalog"]);
    cmd.env("LOGPORT_CLICKHOUSE_URL", "http://127.0.0.1:1");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out));
}
