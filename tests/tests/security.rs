//! Security: tenant and app walls, scopes, SQL injection, path traversal, hostile
//! bodies and headers, limits, and the OpenAPI document — against the real binary.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use futures::StreamExt;
use logport_tests::*;

const DAY: &str = "2026-11-05";

fn click(id: &str, app: u64) -> Value {
    json!({"click_id": id, "app_id": app, "event_time": "2026-11-05T10:00:00Z",
           "country_code": "US", "cost": 0.5})
}

fn request(extra: Value) -> Value {
    merged(
        &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"]}),
        extra,
    )
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The click ids a preview returns.
async fn preview_ids(
    svc: &Service,
    token: &str,
    extra: Value,
) -> Result<Vec<String>, (u16, Value)> {
    let resp = svc
        .post_json("/v1/logs/clicks/preview", token, &request(extra))
        .await;
    let (status, body) = json_of(resp).await;
    if status != 200 {
        return Err((status, body));
    }
    let mut ids: Vec<String> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["click_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    Ok(ids)
}

// ---------------------------------------------------------------------------------
// Tenant walls
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn another_tenants_jobs_parts_manifests_and_rows_answer_like_missing_ones() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[click("secret-1", 1), click("secret-2", 1)],
    )
    .await;
    let (job, parts) = svc.export(ACME, &request(json!({}))).await;
    let id = id_of(&job);
    assert_eq!(parse_csv(&parts[0]).1.len(), 2);
    // Ids are random (UUID v4: 122 random bits), not counters one could walk.
    let other = id_of(&svc.create_export(ACME, &request(json!({}))).await);
    for i in [&id, &other] {
        assert!(i.len() == 32 && &i[12..13] == "4", "{i}");
    }
    let differing = id
        .bytes()
        .zip(other.bytes())
        .filter(|(a, b)| a != b)
        .count();
    assert!(differing > 16, "{id} and {other} look related");
    let missing = "0123456789abcdef0123456789abcdef";

    for (method, path) in [
        ("GET", format!("/v1/exports/{id}")),
        ("GET", format!("/v1/exports/{id}/manifest")),
        ("GET", format!("/v1/exports/{id}/parts/1")),
        ("POST", format!("/v1/exports/{id}/cancel")),
        ("DELETE", format!("/v1/exports/{id}")),
    ] {
        let send = |p: String| {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            svc.http.request(m, svc.url(&p)).bearer_auth(GLOBEX).send()
        };
        let (status, theirs) = problem(send(path.clone()).await.unwrap()).await;
        let (missing_status, nothing) =
            problem(send(path.replace(&id, missing)).await.unwrap()).await;
        assert_eq!(status, 404, "{method} {path}: {theirs}");
        assert_eq!(missing_status, 404);
        // Exactly the answer of an id that does not exist: nothing tells them apart.
        assert_eq!(theirs["type"], nothing["type"]);
        assert_eq!(
            theirs["detail"].as_str().unwrap().replace(&id, missing),
            nothing["detail"].as_str().unwrap(),
            "{method} {path}"
        );
    }
    // Their list, previews, estimates and exports hold none of it.
    let (_, list) = json_of(svc.get("/v1/exports", GLOBEX).send().await.unwrap()).await;
    assert!(!list.to_string().contains(&id), "{list}");
    assert_eq!(
        preview_ids(&svc, GLOBEX, json!({})).await.unwrap(),
        Vec::<String>::new()
    );
    let (status, estimate) = json_of(
        svc.post("/v1/exports/evaluate", GLOBEX)
            .json(&request(json!({})))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &estimate["estimated_rows"]), (200, &json!(0)));
    let (_, theirs) = svc.export(GLOBEX, &request(json!({}))).await;
    assert!(parse_csv(&theirs[0]).1.is_empty());
    // Metrica numbers are per tenant: their request 1 is not ours.
    let metrica = svc
        .post("/management/v1/counter/1/logrequests?date1=2026-11-01&date2=2026-11-02&source=clicks&fields=click_id", ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(metrica.status(), 200);
    for path in [
        "/management/v1/counter/1/logrequest/1",
        "/management/v1/counter/1/logrequest/1/part/0/download",
    ] {
        let resp = svc.get(path, GLOBEX).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    // And ours is untouched by all of that.
    let (_, again) = json_of(
        svc.get(&format!("/v1/exports/{id}"), ACME)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again["status"], "succeeded");
    let part = svc
        .get(&format!("/v1/exports/{id}/parts/1"), ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(part.bytes().await.unwrap().to_vec(), parts[0]);
}

#[tokio::test]
async fn presigned_downloads_are_signed_only_for_the_owner() {
    let bucket = S3Bucket::create().await;
    let svc = Service::start_with(
        bucket
            .options("sec")
            .env("LOGPORT_PRESIGNED_DOWNLOADS", "true"),
    )
    .await;
    svc.ingest(ACME, "clicks", &[click("p1", 1)]).await;
    let created = svc.create_export(ACME, &request(json!({}))).await;
    let id = id_of(&created);
    let job = svc.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "succeeded");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let part = svc.url(&format!("/v1/exports/{id}/parts/1"));
    let ours = no_redirects
        .get(&part)
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(ours.status(), 302);
    assert!(ours.headers().get("location").is_some());
    let theirs = no_redirects
        .get(&part)
        .bearer_auth(GLOBEX)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    assert!(theirs.headers().get("location").is_none());
}

// ---------------------------------------------------------------------------------
// Scopes and app lists
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn scopes_are_enforced_on_every_route() {
    let svc = Service::start().await;
    let ingest = svc.create_token("acme", "ingest", &[]);
    let export = svc.create_token("acme", "export", &[]);
    let admin = svc.create_token("acme", "admin", &[]);

    // The catalog: any scope.
    for t in [&ingest, &export, &admin] {
        assert_eq!(
            svc.get("/v1/slices/clicks", &t.secret)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    // Writing: ingest (and admin).
    svc.ingest(&ingest.secret, "clicks", &[click("i", 1)]).await;
    svc.ingest(&admin.secret, "clicks", &[click("a", 1)]).await;
    let resp = svc
        .post("/v1/ingest/clicks", &export.secret)
        .body(ndjson(&[click("e", 1)]))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!(status, 403);
    assert!(
        body["detail"].as_str().unwrap().contains("ingest"),
        "{body}"
    );
    assert_eq!(svc.count("clicks", "acme"), 2);

    // Reading: export (and admin); an ingest token reads nothing.
    let id = id_of(&svc.create_export(&export.secret, &request(json!({}))).await);
    for (method, path, body) in [
        ("POST", "/v1/exports".to_string(), Some(request(json!({})))),
        ("GET", "/v1/exports".to_string(), None),
        (
            "POST",
            "/v1/exports/evaluate".to_string(),
            Some(request(json!({}))),
        ),
        (
            "POST",
            "/v1/logs/clicks/preview".to_string(),
            Some(request(json!({}))),
        ),
        ("GET", format!("/v1/exports/{id}"), None),
        ("GET", format!("/v1/exports/{id}/manifest"), None),
        ("GET", format!("/v1/exports/{id}/parts/1"), None),
        ("POST", format!("/v1/exports/{id}/cancel"), None),
        ("DELETE", format!("/v1/exports/{id}"), None),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = svc
            .http
            .request(m, svc.url(&path))
            .bearer_auth(&ingest.secret);
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        let (status, p) = problem(rb.send().await.unwrap()).await;
        assert_eq!(status, 403, "{method} {path}: {p}");
    }
    let appmetrica = svc
        .get(
            "/logs/v1/export/clicks.csv?application_id=1&date_since=2026-11-05&date_until=2026-11-05&fields=click_id",
            &ingest.secret,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(appmetrica.status(), 403);
    assert!(appmetrica.text().await.unwrap().contains("export"));
    let (status, metrica) = json_of(
        svc.get("/management/v1/counter/1/logrequests", &ingest.secret)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(metrica["errors"][0]["error_type"], "access_denied");

    // The audit log: admin only, to read or to write, and the jobs made from it too.
    let activity = json!({"slice": "activity", "date_since": DAY, "date_until": DAY});
    for path in [
        "/v1/exports",
        "/v1/exports/evaluate",
        "/v1/logs/activity/preview",
    ] {
        let resp = svc
            .post(path, &export.secret)
            .json(&activity)
            .send()
            .await
            .unwrap();
        assert_eq!(problem(resp).await.0, 403, "{path}");
    }
    let resp = svc
        .post("/v1/ingest/activity", &ingest.secret)
        .body(r#"{"action":"created","actor_name":"forged"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, 403, "audit rows cannot be forged");
    let audit_job = id_of(&svc.create_export(&admin.secret, &activity).await);
    let resp = svc
        .get(&format!("/v1/exports/{audit_job}"), &export.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, 404);
    let (_, list) = json_of(svc.get("/v1/exports", &export.secret).send().await.unwrap()).await;
    assert!(!list.to_string().contains(&audit_job));
    let (_, list) = json_of(svc.get("/v1/exports", &admin.secret).send().await.unwrap()).await;
    assert!(list.to_string().contains(&audit_job));
}

#[tokio::test]
async fn tokens_limited_to_apps_read_and_write_only_those_apps() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    svc.ingest(ACME, "clicks", &[click("one", 1), click("two", 2)])
        .await;
    let app1 = id_of(
        &svc.create_export(ACME, &request(json!({"app_id": 1})))
            .await,
    );
    let app2 = id_of(
        &svc.create_export(ACME, &request(json!({"app_id": 2})))
            .await,
    );
    let every = id_of(&svc.create_export(ACME, &request(json!({}))).await);
    let t = svc.create_token("acme", "ingest,export", &["--apps", "1,3"]);

    // Jobs: only app 1's exist for it.
    let (_, list) = json_of(svc.get("/v1/exports", &t.secret).send().await.unwrap()).await;
    let listed = listed_ids(&list);
    assert_eq!(listed, [app1.as_str()]);
    assert_eq!(
        svc.get(&format!("/v1/exports/{app1}"), &t.secret)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for other in [&app2, &every] {
        let resp = svc
            .get(&format!("/v1/exports/{other}"), &t.secret)
            .send()
            .await
            .unwrap();
        assert_eq!(problem(resp).await.0, 404);
        let resp = svc
            .post(&format!("/v1/exports/{other}/cancel"), &t.secret)
            .send()
            .await
            .unwrap();
        assert_eq!(problem(resp).await.0, 404);
    }
    // Reading needs one of its apps, named.
    for extra in [json!({}), json!({"app_id": 2})] {
        for path in [
            "/v1/exports",
            "/v1/exports/evaluate",
            "/v1/logs/clicks/preview",
        ] {
            let resp = svc
                .post(path, &t.secret)
                .json(&request(extra.clone()))
                .send()
                .await
                .unwrap();
            let (status, body) = problem(resp).await;
            assert_eq!(status, 403, "{path} {extra}: {body}");
        }
    }
    assert_eq!(
        preview_ids(&svc, &t.secret, json!({"app_id": 1}))
            .await
            .unwrap(),
        ["one"]
    );
    let resp = svc
        .post("/v1/exports", &t.secret)
        .json(&request(json!({"app_id": 1})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    // Writing: every row's app must be one of its apps, whatever on_error says.
    svc.ingest(&t.secret, "clicks", &[click("three", 3)]).await;
    for (query, rows) in [
        ("", vec![click("x", 1), click("y", 2)]),
        ("?on_error=skip", vec![click("x", 1), click("y", 2)]),
        ("", vec![json!({"click_id": "no app", "event_time": 1})]),
    ] {
        let resp = svc
            .post(&format!("/v1/ingest/clicks{query}"), &t.secret)
            .body(ndjson(&rows))
            .send()
            .await
            .unwrap();
        let (status, body) = problem(resp).await;
        assert_eq!(status, 403, "{query}: {body}");
    }
    assert_eq!(
        svc.count("clicks", "acme"),
        3,
        "nothing of a refused batch was stored"
    );

    // The protocols: application_id and counter_id are app ids.
    let appmetrica = |app: u64| {
        svc.get(
            &format!("/logs/v1/export/clicks.csv?application_id={app}&date_since=2026-11-05&date_until=2026-11-05&fields=click_id"),
            &t.secret,
        )
        .send()
    };
    assert_eq!(appmetrica(2).await.unwrap().status(), 403);
    assert_eq!(appmetrica(1).await.unwrap().status(), 202);
    let (status, body) = json_of(
        svc.get("/management/v1/counter/2/logrequests", &t.secret)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["errors"][0]["error_type"], "access_denied");
    assert_eq!(
        svc.get("/management/v1/counter/1/logrequests", &t.secret)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

// ---------------------------------------------------------------------------------
// SQL injection
// ---------------------------------------------------------------------------------

const PAYLOADS: [&str; 10] = [
    "' OR 1=1 --",
    "x' OR '1'='1",
    "\\' OR 1=1 --",
    "\\\\'; DROP TABLE clicks; --",
    "') UNION ALL SELECT * FROM system.tables --",
    "\" OR \"\"=\"",
    "`; SELECT 1; --",
    "a\0b\nc\rd\te",
    "%27 OR 1=1",
    "\u{2019}\u{ff07} ü 😀",
];

#[tokio::test]
async fn sql_injection_in_every_filter_op_value_type_and_field_name_is_inert() {
    let svc = Service::start().await;
    let mut rows: Vec<Value> = PAYLOADS.iter().map(|p| click(p, 1)).collect();
    rows.push(click("plain", 1));
    rows.push(click("zzz", 1));
    svc.ingest(ACME, "clicks", &rows).await;
    svc.ingest(GLOBEX, "clicks", &[click("globex-only", 1)])
        .await;
    let all: Vec<String> = rows
        .iter()
        .map(|r| r["click_id"].as_str().unwrap().to_string())
        .collect();
    let expect = |pred: &dyn Fn(&str) -> bool| {
        let mut v: Vec<String> = all.iter().filter(|s| pred(s)).cloned().collect();
        v.sort();
        v
    };

    // Every text operator takes every payload as data, and selects exactly what a
    // byte-wise comparison in Rust selects (ClickHouse compares strings as bytes).
    for p in PAYLOADS {
        let cases: Vec<(Value, Vec<String>)> = vec![
            (json!({"op": "eq", "value": p}), expect(&|s| s == p)),
            (json!({"op": "ne", "value": p}), expect(&|s| s != p)),
            (
                json!({"op": "in", "values": [p, "plain"]}),
                expect(&|s| s == p || s == "plain"),
            ),
            (json!({"op": "not_in", "values": [p]}), expect(&|s| s != p)),
            (json!({"op": "lt", "value": p}), expect(&|s| s < p)),
            (json!({"op": "lte", "value": p}), expect(&|s| s <= p)),
            (json!({"op": "gt", "value": p}), expect(&|s| s > p)),
            (json!({"op": "gte", "value": p}), expect(&|s| s >= p)),
            (
                json!({"op": "between", "values": [p, "zzz"]}),
                expect(&|s| s >= p && s <= "zzz"),
            ),
            (
                json!({"op": "prefix", "value": p}),
                expect(&|s| s.starts_with(p)),
            ),
            (
                json!({"op": "contains", "value": p}),
                expect(&|s| s.contains(p)),
            ),
        ];
        for (mut filter, want) in cases {
            filter["field"] = json!("click_id");
            let got = preview_ids(
                &svc,
                ACME,
                json!({"filters": [filter.clone()], "limit": 1000}),
            )
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e:?}"));
            assert_eq!(got, want, "{filter}");
        }
    }

    // Typed fields: a payload is not a value of the type, for every operator.
    for (field, ops) in [
        (
            "cost",
            vec![
                "eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "between",
            ],
        ),
        ("app_id", vec!["eq", "ne", "lt", "gt", "in", "between"]),
        ("event_time", vec!["eq", "lt", "gte", "in", "between"]),
        ("event_id", vec!["eq", "ne", "in", "not_in"]),
        ("event_type", vec!["eq", "ne", "in", "not_in"]),
    ] {
        for op in ops {
            for p in ["1 OR 1=1", "0); DROP TABLE clicks; --", "' OR ''='"] {
                let filter = if matches!(op, "in" | "not_in" | "between") {
                    json!({"field": field, "op": op, "values": [p, p]})
                } else {
                    json!({"field": field, "op": op, "value": p})
                };
                let err = preview_ids(&svc, ACME, json!({"filters": [filter]}))
                    .await
                    .unwrap_err();
                assert_eq!(err.0, 422, "{field} {op} {p}: {:?}", err.1);
                assert!(
                    err.1["field"]
                        .as_str()
                        .unwrap()
                        .starts_with("filters[0].value"),
                    "{field} {op}: {}",
                    err.1
                );
            }
        }
    }
    // Names: fields, filter fields, slices, and every other member that names
    // something are looked up in the catalog, never written into SQL.
    for p in PAYLOADS
        .iter()
        .chain(&["click_id`", "click_id) OR (1", "tenant_id"])
    {
        for (extra, field) in [
            (json!({"fields": [p]}), "fields[0]"),
            (
                json!({"filters": [{"field": p, "op": "eq", "value": "x"}]}),
                "filters[0].field",
            ),
            (
                json!({"filters": [{"field": "click_id", "op": p, "value": "x"}]}),
                "filters[0].op",
            ),
            (json!({"date_dimension": p}), "date_dimension"),
            (json!({"timezone": p}), "timezone"),
            (json!({"format": p}), "format"),
        ] {
            let err = preview_ids(&svc, ACME, extra.clone()).await.unwrap_err();
            assert_eq!(err.0, 422, "{extra}: {:?}", err.1);
            assert_eq!(err.1["field"], field, "{extra}");
        }
        let resp = svc
            .post_json(
                "/v1/exports",
                ACME,
                &json!({"slice": p, "date_since": DAY, "date_until": DAY}),
            )
            .await;
        assert_eq!(problem(resp).await.0, 404);
    }
    // The protocols' filters and fields.
    let q = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let appmetrica = svc
        .get(
            &format!(
                "/logs/v1/export/clicks.csv?application_id=1&date_since=2026-11-05&date_until=2026-11-05&fields=click_id&click_id={}",
                q(PAYLOADS[0])
            ),
            ACME,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(appmetrica.status(), 202);
    let bad_fields = svc
        .get(
            &format!(
                "/logs/v1/export/clicks.csv?application_id=1&date_since=2026-11-05&date_until=2026-11-05&fields={}",
                q("click_id) FROM system.tables --")
            ),
            ACME,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad_fields.status(), 400);
    let metrica = svc
        .post(
            &format!(
                "/management/v1/counter/1/logrequests?date1=2026-11-01&date2=2026-11-02&source={}&fields=click_id",
                q("clicks; DROP TABLE clicks")
            ),
            ACME,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(metrica.status(), 400);

    // Nothing was dropped, and tenants are still apart.
    assert_eq!(svc.count("clicks", "acme"), rows.len() as u64);
    assert_eq!(svc.count("clicks", "globex"), 1);
    let (_, slices) = json_of(svc.get("/v1/slices", ACME).send().await.unwrap()).await;
    let tables = svc.clickhouse(&format!(
        "SELECT count() FROM system.tables WHERE database = '{}'",
        svc.database
    ));
    assert_eq!(
        tables.trim(),
        slices["slices"].as_array().unwrap().len().to_string(),
        "every table is still there"
    );
    assert!(
        !svc.logs().contains("internal error"),
        "an injection attempt reached ClickHouse as SQL"
    );
}

// ---------------------------------------------------------------------------------
// Path traversal and header injection
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn path_traversal_in_slice_names_part_numbers_and_files_finds_nothing() {
    let svc = Service::start().await;
    svc.ingest(ACME, "clicks", &[click("t", 1)]).await;
    let (job, _) = svc.export(ACME, &request(json!({}))).await;
    let id = id_of(&job);
    let manifest = svc
        .get(&format!("/v1/exports/{id}/manifest"), ACME)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let paths: Vec<String> = vec![
        "/v1/slices/../../../../etc/passwd".into(),
        "/v1/slices/..%2F..%2F..%2F..%2Fetc%2Fpasswd".into(),
        "/v1/slices/%2e%2e%2f%2e%2e%2fetc%2fpasswd".into(),
        "/v1/slices/clicks%00".into(),
        "/v1/slices/clicks%2F..%2Fconversions".into(),
        "/v1/slices/%FF%FE".into(),
        format!("/v1/exports/{id}/parts/..%2Fmanifest.json"),
        format!("/v1/exports/{id}/parts/..%2F..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("/v1/exports/{id}/parts/1%2F..%2F..%2Fmanifest.json"),
        format!("/v1/exports/{id}/parts/-1"),
        format!("/v1/exports/{id}/parts/0"),
        format!("/v1/exports/{id}/parts/4294967296"),
        format!("/v1/exports/{id}/parts/1.0"),
        format!("/v1/exports/..%2F{id}"),
        format!("/v1/exports/{id}%2F..%2F..%2Facme"),
        "/logs/v1/export/..%2F..%2Fclicks.csv".into(),
        "/logs/v1/export/..%2Fmanifest.json".into(),
        "/ui/..%2F..%2FCargo.toml".into(),
        "/ui/%2e%2e%2fapp.js".into(),
        "/ui/../../../etc/passwd".into(),
    ];
    for path in &paths {
        let (status, head, body) = svc.raw_get(path.as_bytes(), ACME);
        let text = String::from_utf8_lossy(&body);
        assert!(
            matches!(status, 400 | 404),
            "{path}: {status}\n{head}\n{text}"
        );
        assert!(!text.contains("root:"), "{path}: {text}");
        assert!(
            !text.contains("\"sha256\""),
            "{path} served the manifest: {text}"
        );
        assert!(
            !text.contains("[workspace]") && !text.contains("[package]"),
            "{path}"
        );
        assert!(text.len() < 2048 || text != manifest, "{path}");
    }
    // Ingest and previews name slices by path too.
    for slice in ["..%2Fclicks", "clicks%2F..%2Factivity", "%2e%2e"] {
        let mut req = format!("POST /v1/ingest/{slice} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n").into_bytes();
        req.extend_from_slice(b"{}");
        let (status, _, _) = svc.raw_http(&req);
        assert_eq!(status, 404, "{slice}");
    }
}

#[tokio::test]
async fn hostile_input_never_becomes_a_response_header() {
    let svc = Service::start().await;
    svc.ingest(ACME, "clicks", &[click("h", 1)]).await;
    // Download names come from the job id and the part's own name, for every format.
    for (format, compression) in [
        ("csv", "none"),
        ("tsv", "gzip"),
        ("jsonl", "zstd"),
        ("json", "none"),
        ("parquet", "none"),
    ] {
        let (job, _) = svc
            .export(
                ACME,
                &request(json!({"format": format, "compression": compression})),
            )
            .await;
        let id = id_of(&job);
        let resp = svc
            .get(&format!("/v1/exports/{id}/parts/1"), ACME)
            .send()
            .await
            .unwrap();
        let cd = resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        let name = cd
            .strip_prefix("attachment; filename=\"")
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{cd}"));
        assert!(
            name.starts_with(&format!("{id}-part-"))
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
            "{cd}"
        );
    }
    // CR/LF smuggled through paths, queries and header values.
    let injected = [
        "/v1/slices/x%0D%0ASet-Cookie:%20pwned=1".to_string(),
        "/v1/exports?status=x%0D%0ASet-Cookie:%20pwned=1".to_string(),
        "/logs/v1/export/x%0D%0ASet-Cookie:%20pwned=1.csv?application_id=1&fields=a".to_string(),
        "/management/v1/counter/1%0D%0ASet-Cookie:%20pwned=1/logrequests".to_string(),
    ];
    for path in &injected {
        let (status, head, _) = svc.raw_get(path.as_bytes(), ACME);
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(
            !head.to_ascii_lowercase().contains("set-cookie"),
            "{path}: {head}"
        );
        assert!(!head.contains("pwned"), "{path}: {head}");
    }
    let (status, head, _) = svc.raw_http(
        format!(
            "POST /v1/exports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\nIdempotency-Key: a\x7fb\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert_eq!(status, 400, "{head}");
    assert!(!head.contains("a\x7fb"));
}

// ---------------------------------------------------------------------------------
// Hostile bodies, headers and limits
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_deeply_nested_and_invalid_utf8_bodies_are_4xx() {
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_JSON_MAX_BYTES", "65536")
            .env("LOGPORT_INGEST_MAX_BYTES", "65536")
            .env("LOGPORT_INGEST_MAX_INFLIGHT_BYTES", "1048576")
            .env("LOGPORT_MAX_HEADER_BYTES", "4096"),
    )
    .await;
    let big = format!(
        r#"{{"slice":"clicks","date_since":"{DAY}","date_until":"{DAY}","fields":["click_id"],"filters":[{{"field":"click_id","op":"eq","value":"{}"}}]}}"#,
        "x".repeat(70_000)
    );
    for path in [
        "/v1/exports",
        "/v1/exports/evaluate",
        "/v1/logs/clicks/preview",
    ] {
        let resp = svc.post(path, ACME).body(big.clone()).send().await.unwrap();
        assert_eq!(problem(resp).await.0, 413, "{path}");
    }
    let resp = svc
        .post("/v1/ingest/clicks", ACME)
        .body(ndjson(&[click(&"y".repeat(70_000), 1)]))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, 413);

    // Deep nesting: refused by the parser's depth limit, not by a crash.
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for depth in [200, 20_000] {
        let body = format!(
            r#"{{"slice":"clicks","date_since":"{DAY}","date_until":"{DAY}","filters":{}}}"#,
            deep(depth)
        );
        for path in [
            "/v1/exports",
            "/v1/exports/evaluate",
            "/v1/logs/clicks/preview",
        ] {
            let resp = svc
                .post(path, ACME)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let (status, p) = problem(resp).await;
            assert!(matches!(status, 400 | 413 | 422), "{path} {depth}: {p}");
        }
        let line = format!(
            r#"{{"click_id":{},"event_time":1}}"#,
            deep(depth.min(10_000))
        );
        let resp = svc
            .post("/v1/ingest/clicks", ACME)
            .body(line)
            .send()
            .await
            .unwrap();
        let (status, p) = problem(resp).await;
        assert!(matches!(status, 413 | 422), "ingest {depth}: {p}");
    }

    // Invalid UTF-8: in a JSON body, an NDJSON line, a CSV record, a query string.
    let mut body = br#"{"slice":"clicks","date_since":"2026-11-05","date_until":"2026-11-05","fields":["click_id"],"filters":[{"field":"click_id","op":"eq","value":""#.to_vec();
    body.extend_from_slice(b"\xff\xfe\x80");
    body.extend_from_slice(br#""}]}"#);
    for path in [
        "/v1/exports",
        "/v1/exports/evaluate",
        "/v1/logs/clicks/preview",
    ] {
        let resp = svc
            .post(path, ACME)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(problem(resp).await.0, 400, "{path}");
    }
    let mut line = br#"{"click_id":""#.to_vec();
    line.extend_from_slice(b"\xc3\x28");
    line.extend_from_slice(br#"","event_time":1}"#);
    line.push(b'\n');
    let resp = svc
        .post("/v1/ingest/clicks", ACME)
        .body(line)
        .send()
        .await
        .unwrap();
    let (status, p) = problem(resp).await;
    assert_eq!(status, 422);
    assert_eq!(p["errors"][0]["line"], 1, "{p}");
    let mut csv = b"click_id,event_time\n".to_vec();
    csv.extend_from_slice(b"ok,1\nbad\xff,1\n");
    let resp = svc
        .post("/v1/ingest/clicks?on_error=skip", ACME)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].clone(), body["rejected"].clone()),
        (json!(1), json!(1))
    );
    let (status, _, _) = svc.raw_get(b"/v1/exports?status=%FF%FE", ACME);
    assert_eq!(status, 400);
    let (status, _, _) = svc.raw_http(
        b"GET /v1/slices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401);

    // Headers: past LOGPORT_MAX_HEADER_BYTES, 431; past what HTTP/1 takes, refused.
    let resp = svc
        .get("/v1/slices", ACME)
        .header("x-padding", "p".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, 431);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _, _) = svc.raw_http(
        format!("GET /v1/slices HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    );
    assert!(status == 0 || (400..500).contains(&status), "{status}");

    // The service is still up and answering after all of it.
    assert_eq!(
        svc.get("/v1/slices", ACME).send().await.unwrap().status(),
        200
    );
    assert!(!svc.logs().contains("panicked"), "{}", svc.logs());
}

#[tokio::test]
async fn each_token_has_a_rate_limit_answered_with_429_and_retry_after() {
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_RATE_LIMIT_PER_SECOND", "1")
            .env("LOGPORT_RATE_LIMIT_BURST", "3"),
    )
    .await;
    let a = svc.create_token("acme", "export", &[]);
    let b = svc.create_token("acme", "export", &[]);
    for _ in 0..3 {
        assert_eq!(
            svc.get("/v1/slices", &a.secret)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let resp = svc.get("/v1/slices", &a.secret).send().await.unwrap();
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let (status, body) = problem(resp).await;
    assert_eq!(status, 429);
    assert_eq!(body["limit"], "rate_limit");
    // Every token has its own bucket (static ones, the operator's, have none); the
    // protocols answer in their own words.
    assert_eq!(
        svc.get("/v1/slices", &b.secret)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for _ in 0..10 {
        assert_eq!(
            svc.get("/v1/slices", ACME).send().await.unwrap().status(),
            200
        );
    }
    let appmetrica = svc
        .get(
            "/logs/v1/export/clicks.csv?application_id=1&fields=click_id",
            &a.secret,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(appmetrica.status(), 429);
    assert!(appmetrica.headers().get("retry-after").is_some());
    assert!(appmetrica.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    // After Retry-After, the bucket has room again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        svc.get("/v1/slices", &a.secret)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A token shaped like a generated secret (`lp_` and 64 hex digits) that no store holds.
fn guess() -> String {
    format!(
        "lp_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `GET /v1/slices` with a token: the status, and `Retry-After` when sent.
async fn try_token(svc: &Service, token: &str) -> (u16, Option<u32>, Value) {
    let resp = svc.get("/v1/slices", token).send().await.unwrap();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let (status, body) = json_of(resp).await;
    (status, retry, body)
}

#[tokio::test]
async fn failed_authentication_is_limited_per_address_and_guesses_do_not_reach_the_store() {
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_AUTH_FAILURE_BURST", "5")
            .env("LOGPORT_AUTH_FAILURES_PER_MINUTE", "6"),
    )
    .await;
    let valid = svc.create_token("acme", "export", &[]);
    assert_eq!(try_token(&svc, &valid.secret).await.0, 200);
    let lookups = svc.metric("logport_auth_token_lookups_total").await;

    // Forty guesses from one address, half shaped like secrets: the first five are
    // refused as invalid, the rest with 429 before any lookup.
    let mut statuses = Vec::new();
    for i in 0..40 {
        let token = if i % 2 == 0 {
            guess()
        } else {
            format!("guess-{i}")
        };
        let (status, retry, body) = try_token(&svc, &token).await;
        if status == 429 {
            assert_eq!(body["limit"], "auth_failures", "{body}");
            assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // The same address still gets in with a token the server knows, stored or static.
    assert_eq!(try_token(&svc, &valid.secret).await.0, 200);
    assert_eq!(try_token(&svc, ACME).await.0, 200);
    // Only well-formed guesses made before the limit were looked up (three), plus at
    // most the valid token's own refresh: not one lookup per request.
    let looked_up = svc.metric("logport_auth_token_lookups_total").await - lookups;
    assert!(
        looked_up <= 4.0,
        "{looked_up} job store lookups for 40 guesses"
    );
    assert_eq!(
        svc.metric("logport_auth_failures_total{reason=\"throttled\"}")
            .await,
        35.0
    );
    // The compatibility protocols answer the limit in their own words.
    let metrica = svc
        .http
        .get(svc.url(&format!(
            "/management/v1/counter/1/logrequests?oauth_token={}",
            guess()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(metrica.status(), 429);
    assert!(metrica.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn random_tokens_never_displace_a_valid_one_or_reach_the_store_twice() {
    let pg = PgDatabase::create();
    let svc = Service::start_with(
        Options::default()
            .job_store_url(&pg.url)
            // No per-address limit: every guess gets as far as it can.
            .env("LOGPORT_AUTH_FAILURES_PER_MINUTE", "0"),
    )
    .await;
    let valid = svc.create_token("acme", "export", &[]);
    assert_eq!(try_token(&svc, &valid.secret).await.0, 200);

    // More distinct guesses than a cache of every lookup could hold.
    let guesses: Vec<String> = (0..GUESSES).map(|_| guess()).collect();
    let before = svc.metric("logport_auth_token_lookups_total").await;
    let statuses: Vec<u16> = futures::stream::iter(guesses.iter())
        .map(|g| async { try_token(&svc, g).await.0 })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let after = svc.metric("logport_auth_token_lookups_total").await;
    assert_eq!(
        after - before,
        GUESSES as f64,
        "each guess is looked up once"
    );
    // A guess sent again is answered from memory (the latest ones: what is kept of
    // unknown tokens is bounded too).
    for g in guesses.iter().rev().take(50) {
        assert_eq!(try_token(&svc, g).await.0, 401);
    }
    assert_eq!(svc.metric("logport_auth_token_lookups_total").await, after);

    // The job store goes away: the valid token's entry is still there and stands in
    // for the lookup that fails; a new token cannot be checked.
    psql(
        &postgres_url(),
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", pg.name),
    )
    .unwrap();
    psql(
        &postgres_url(),
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            pg.name
        ),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let start = Instant::now();
    assert_eq!(try_token(&svc, &valid.secret).await.0, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(try_token(&svc, &guesses[GUESSES - 1]).await.0, 401);
    let (status, retry, _) = try_token(&svc, &guess()).await;
    assert_eq!((status, retry.is_some()), (503, true));
    psql(
        &postgres_url(),
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", pg.name),
    )
    .unwrap();
}

/// More than the 10,000 lookups the token cache once held before it started over.
const GUESSES: usize = 10_500;

#[tokio::test]
async fn slow_requests_time_out_and_slow_clients_are_cut_off() {
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_REQUEST_TIMEOUT", "2s")
            .env("LOGPORT_REQUEST_HEADER_TIMEOUT", "1s"),
    )
    .await;
    // A body that stalls: the handler waits for it until the request timeout.
    let stalled = futures::stream::unfold(0u8, |n| async move {
        match n {
            0 => Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"click_id\":")),
                1,
            )),
            1 => {
                tokio::time::sleep(Duration::from_secs(6)).await;
                Some((Ok(bytes::Bytes::from_static(b"\"late\"}\n")), 2))
            }
            _ => None,
        }
    });
    let start = Instant::now();
    let resp = svc
        .post("/v1/ingest/clicks", ACME)
        .body(reqwest::Body::wrap_stream(stalled))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(svc.count("clicks", "acme"), 0);
    // A client that never finishes its headers is disconnected.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(svc.base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v1/slices HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let head = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(
        svc.get("/v1/slices", ACME).send().await.unwrap().status(),
        200
    );
}

// ---------------------------------------------------------------------------------
// The OpenAPI document
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_openapi_document_is_valid_complete_and_rendered_without_scripts() {
    let svc = Service::start().await;
    let resp = svc.http.get(svc.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // openapi-spec-validator (PyPI) checks it against the OpenAPI 3.1 schema.
    let file = svc.dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; \
             validate(json.load(open(sys.argv[1]))); print('valid')",
        ])
        .arg(&file)
        .output()
        .expect("python3 with openapi-spec-validator (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every route, with its methods.
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/healthz", &["get"][..]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
        ("/docs", &["get"]),
        ("/", &["get"]),
        ("/ui/{file}", &["get"]),
        ("/v1/slices", &["get"]),
        ("/v1/slices/{slice}", &["get"]),
        ("/v1/ingest/{slice}", &["post"]),
        ("/v1/exports", &["get", "post"]),
        ("/v1/exports/evaluate", &["post"]),
        ("/v1/exports/{id}", &["get", "delete"]),
        ("/v1/exports/{id}/cancel", &["post"]),
        ("/v1/exports/{id}/manifest", &["get"]),
        ("/v1/exports/{id}/parts/{n}", &["get"]),
        ("/v1/logs/{slice}/preview", &["post"]),
        ("/logs/v1/export/{file}", &["get"]),
        ("/management/v1/logsapi/status", &["get"]),
        ("/management/v1/counter/{counter_id}/logrequests/evaluate", &["get"]),
        ("/management/v1/counter/{counter_id}/logrequests", &["get", "post"]),
        ("/management/v1/counter/{counter_id}/logrequest/{request_id}", &["get"]),
        (
            "/management/v1/counter/{counter_id}/logrequest/{request_id}/part/{part_number}/download",
            &["get"],
        ),
        ("/management/v1/counter/{counter_id}/logrequest/{request_id}/clean", &["post"]),
        ("/management/v1/counter/{counter_id}/logrequest/{request_id}/cancel", &["post"]),
    ] {
        let item = paths.get(path).unwrap_or_else(|| panic!("{path} is missing"));
        for m in methods {
            let op = &item[*m];
            assert!(op.is_object(), "{m} {path}");
            assert!(op["operationId"].is_string(), "{m} {path}");
            let responses = op["responses"].as_object().unwrap();
            for code in ["431", "504"] {
                assert!(responses.contains_key(code), "{m} {path} lacks {code}");
            }
            if path.starts_with("/v1/") {
                assert_eq!(op["security"], json!([{"bearer": []}, {"oauth": []}]), "{path}");
                assert!(responses.contains_key("401"), "{m} {path}");
                assert!(responses.contains_key("429"), "{m} {path}");
                assert!(
                    responses["401"]["content"]["application/problem+json"].is_object(),
                    "{path}"
                );
            }
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["oauth"]["in"], "header");
    // The catalog's names are the document's.
    let variants = doc["components"]["schemas"]["ExportRequest"]["anyOf"]
        .as_array()
        .unwrap();
    let (_, slices) = json_of(svc.get("/v1/slices", ACME).send().await.unwrap()).await;
    assert_eq!(variants.len(), slices["slices"].as_array().unwrap().len());
    assert!(variants
        .iter()
        .any(|v| v["properties"]["slice"]["const"] == "clicks"));

    // The docs page: every path, no script, nothing fetched from elsewhere.
    let resp = svc.http.get(svc.url("/docs")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = resp.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "nothing external"
    );
    for path in paths.keys() {
        let shown = path.replace('&', "&amp;").replace('<', "&lt;");
        assert!(html.contains(&shown), "{path} is not on the page");
    }
}

/// The job store URL's password never leaves the configuration: not in the error of a
/// server or a `logport token` command that cannot open the store (PostgreSQL refuses
/// the role), not in a configuration file's parse error (which quotes the line), and
/// not in the logs, `/readyz` (even for an admin) or `/metrics` of a server running on
/// a URL with a password. Messages show `user:***@`.
#[tokio::test]
async fn the_job_store_password_never_appears_in_a_message() {
    const SECRET: &str = "S3cr3t-Pw-4711";
    let pg = PgDatabase::create();
    // The test server trusts local connections: the password is accepted and ignored.
    let with_password = pg.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{SECRET}@"),
        1,
    );
    assert!(with_password.contains(SECRET), "{}", pg.url);
    let svc = Service::start_with(Options::default().job_store_url(&with_password)).await;

    // A role PostgreSQL does not know: `serve` and `token list` stop at once.
    let refused = with_password.replacen("//postgres:", "//logport_nobody:", 1);
    let run = |args: &[&str], url: &str| {
        let out = svc
            .command(args)
            .env("LOGPORT_JOB_STORE_URL", url)
            .env("LOGPORT_LISTEN", "127.0.0.1:0")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    for args in [&["serve"][..], &["token", "list"][..]] {
        let (ok, text) = run(args, &refused);
        assert!(!ok, "{args:?} should fail: {text}");
        assert!(
            !text.contains(SECRET),
            "{args:?} printed the password: {text}"
        );
        assert!(
            text.contains("logport_nobody:***@"),
            "{args:?} names the store without its password: {text}"
        );
    }
    // A password in a `password=` parameter, and an unsupported scheme.
    for url in [
        format!("postgres://logport_nobody@127.0.0.1:5432/postgres?password={SECRET}"),
        format!("mysql://root:{SECRET}@127.0.0.1/jobs"),
    ] {
        let (ok, text) = run(&["token", "list"], &url);
        assert!(!ok, "{url}: {text}");
        assert!(!text.contains(SECRET), "{url}: {text}");
    }
    // A configuration file that does not parse quotes the broken line.
    let config = svc.dir.path().join("broken.toml");
    std::fs::write(
        &config,
        format!("job_store_url = \"postgres://postgres:{SECRET}@127.0.0.1/db\nworkers = 1\n"),
    )
    .unwrap();
    let (ok, text) = run(
        &["--config", config.to_str().unwrap(), "token", "list"],
        &refused,
    );
    assert!(!ok, "{text}");
    assert!(text.contains("configuration error"), "{text}");
    assert!(!text.contains(SECRET), "{text}");

    // The running server: its answers and its log.
    let ready = svc
        .get("/readyz", ACME)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ready.contains("\"ready\""), "{ready}");
    let metrics = svc.metrics_text().await;
    for text in [&ready, &metrics, &svc.logs()] {
        assert!(!text.contains(SECRET), "{text}");
    }
}
