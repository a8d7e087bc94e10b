//! What an export selects: every filter op, hostile filter values, tenants kept
//! apart, and evaluate's counts and previews of the same selection.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;

use logport_tests::*;

/// The day most test rows happen on; 2026-11-05T00:00:00Z is Unix 1_793_836_800.
const DAY: &str = "2026-11-05";
const DAY_START: i64 = 1_793_836_800;

// ---------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------

/// SQL-breaking strings; each is stored once, as a campaign id, and must match itself only.
const INJECTIONS: &[&str] = &[
    "' OR 1=1 --",
    "' OR '1'='1",
    "\\'",
    "\\\\'",
    "x\\' OR 1=1 --",
    "'); DROP TABLE clicks; --",
    "nul\u{0}byte",
    "\u{0}",
    "\\",
    "\\N",
    "%' OR ''='",
    "`campaign_id`",
    "{x:String}",
    "$1",
    "\n' OR 1=1 --",
    "\"; SELECT 1; --",
];

#[tokio::test]
async fn every_filter_op_selects_exactly_the_expected_rows() {
    let schemas = typed_schema_dir();
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap())
            .env("LOGPORT_WORKERS", "4")
            .env("LOGPORT_MAX_QUEUED_PER_TENANT", "1000"),
    )
    .await;
    let uuid3 = "0190a0b1-2c3d-7e4f-8a9b-000000000003";
    // (id, app, country, campaign, cost, event_type, is_bot, lp_click_time)
    type Row<'a> = (
        &'a str,
        u64,
        &'a str,
        &'a str,
        f64,
        &'a str,
        u8,
        Option<&'a str>,
    );
    #[rustfmt::skip]
    let data: [Row; 8] = [
        ("k1", 1, "US", "summer",        0.5,   "visit",      0, None),
        ("k2", 1, "DE", "summer-sale",   1.0,   "lp_click",   1, Some("2026-11-05 11:00:00")),
        ("k3", 2, "FR", "winter",        0.0,   "impression", 0, None),
        ("k4", 2, "US", "autumn summer", 2.5,   "visit",      0, Some("2026-11-05T13:00:00Z")),
        ("k5", 1, "",   "Summer",        10.0,  "unknown",    0, None),
        ("k6", 3, "GB", "sum",           -1.0,  "visit",      1, Some("2026-11-06T00:00:00Z")),
        ("k7", 3, "DE", "100%_off",      0.1,   "lp_click",   0, None),
        ("k8", 0, "NL", "1000_off",      1e300, "impression", 0, None),
    ];
    let mut lines = Vec::new();
    for (i, (id, app, country, campaign, cost, et, bot, lp)) in data.iter().enumerate() {
        let mut l = json!({"click_id": id, "app_id": app, "country_code": country,
            "campaign_id": campaign, "cost": cost, "event_type": et, "is_bot": bot,
            "event_time": format!("{DAY}T{:02}:00:00Z", i + 1)});
        if let Some(t) = lp {
            l["lp_click_time"] = json!(t);
        }
        if *id == "k3" {
            l["event_id"] = json!(uuid3);
        }
        lines.push(l);
    }
    // Injection rows, on another day so the op cases above stay small.
    for (i, inj) in INJECTIONS.iter().enumerate() {
        lines.push(json!({"click_id": format!("inj{i:02}"), "campaign_id": inj,
            "country_code": inj, "event_time": "2026-11-07T12:00:00Z"}));
    }
    svc.ingest(ACME, "clicks", &lines).await;
    // Another tenant's identical rows must never show up.
    svc.ingest(GLOBEX, "clicks", &lines).await;

    let req = |filters: Value, app: Option<u64>| {
        let mut r = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
            "fields": ["click_id"], "filters": filters});
        if let Some(a) = app {
            r["app_id"] = json!(a);
        }
        r
    };
    let f =
        |field: &str, op: &str, value: Value| json!([{"field": field, "op": op, "value": value}]);
    let fs = |field: &str, op: &str, values: Value| json!([{"field": field, "op": op, "values": values}]);
    let all = ["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"];
    let c = |name: &str, r: Value, want: &[&'static str]| (name.to_string(), r, want.to_vec());
    #[rustfmt::skip]
    let mut cases: Vec<(String, Value, Vec<&str>)> = vec![
        c("eq", req(f("country_code", "eq", json!("US")), None), &["k1", "k4"]),
        c("eq empty", req(f("country_code", "eq", json!("")), None), &["k5"]),
        c("ne", req(f("country_code", "ne", json!("US")), None), &["k2", "k3", "k5", "k6", "k7", "k8"]),
        c("in", req(fs("country_code", "in", json!(["DE", "FR", "ZZ"])), None), &["k2", "k3", "k7"]),
        c("not_in", req(fs("country_code", "not_in", json!(["US", "DE"])), None), &["k3", "k5", "k6", "k8"]),
        c("lt float", req(f("cost", "lt", json!(1)), None), &["k1", "k3", "k6", "k7"]),
        c("lte float", req(f("cost", "lte", json!(1.0)), None), &["k1", "k2", "k3", "k6", "k7"]),
        c("gt float", req(f("cost", "gt", json!(1)), None), &["k4", "k5", "k8"]),
        c("gte float", req(f("cost", "gte", json!(2.5)), None), &["k4", "k5", "k8"]),
        c("between float inclusive", req(fs("cost", "between", json!([0, 1])), None), &["k1", "k2", "k3", "k7"]),
        c("between float as strings", req(fs("cost", "between", json!(["0.1", "2.5"])), None), &["k1", "k2", "k4", "k7"]),
        c("eq 0.1 exactly", req(f("cost", "eq", json!(0.1)), None), &["k7"]),
        c("gte 1e300", req(f("cost", "gte", json!(1e300)), None), &["k8"]),
        c("lt negative", req(f("cost", "lt", json!(-0.5)), None), &["k6"]),
        c("prefix", req(f("campaign_id", "prefix", json!("summer")), None), &["k1", "k2"]),
        c("contains", req(f("campaign_id", "contains", json!("summer")), None), &["k1", "k2", "k4"]),
        c("prefix with LIKE metacharacters", req(f("campaign_id", "prefix", json!("100%")), None), &["k7"]),
        c("contains %_ literally", req(f("campaign_id", "contains", json!("%_")), None), &["k7"]),
        c("contains _", req(f("campaign_id", "contains", json!("_")), None), &["k7", "k8"]),
        c("prefix _ is not a wildcard", req(f("campaign_id", "prefix", json!("1_")), None), &[]),
        c("text lt (byte order)", req(f("campaign_id", "lt", json!("b")), None), &["k4", "k5", "k7", "k8"]),
        c("text gt", req(f("campaign_id", "gt", json!("summer")), None), &["k2", "k3"]),
        c("text between", req(fs("campaign_id", "between", json!(["sum", "summer"])), None), &["k1", "k6"]),
        c("text gte and lte", req(json!([{"field": "campaign_id", "op": "gte", "value": "summer"},
            {"field": "campaign_id", "op": "lte", "value": "summer-sale"}]), None), &["k1", "k2"]),
        c("is_null", req(json!([{"field": "lp_click_time", "op": "is_null"}]), None), &["k1", "k3", "k5", "k7", "k8"]),
        c("not_null", req(json!([{"field": "lp_click_time", "op": "not_null"}]), None), &["k2", "k4", "k6"]),
        c("nullable datetime gt", req(f("lp_click_time", "gt", json!("2026-11-05T12:00:00Z")), None), &["k4", "k6"]),
        c("nullable datetime lte", req(f("lp_click_time", "lte", json!("2026-11-05 11:00:00")), None), &["k2"]),
        c("datetime between unix seconds", req(fs("lp_click_time", "between",
            json!([DAY_START + 11 * 3600, DAY_START + 13 * 3600])), None), &["k2", "k4"]),
        c("enum eq", req(f("event_type", "eq", json!("visit")), None), &["k1", "k4", "k6"]),
        c("enum ne", req(f("event_type", "ne", json!("visit")), None), &["k2", "k3", "k5", "k7", "k8"]),
        c("enum in", req(fs("event_type", "in", json!(["lp_click", "impression"])), None), &["k2", "k3", "k7", "k8"]),
        c("enum not_in", req(fs("event_type", "not_in", json!(["visit", "unknown"])), None), &["k2", "k3", "k7", "k8"]),
        c("flag eq 1", req(f("is_bot", "eq", json!(1)), None), &["k2", "k6"]),
        c("flag eq true", req(f("is_bot", "eq", json!(true)), None), &["k2", "k6"]),
        c("flag ne 1", req(f("is_bot", "ne", json!(1)), None), &["k1", "k3", "k4", "k5", "k7", "k8"]),
        c("event_time gte", req(f("event_time", "gte", json!("2026-11-05T06:00:00Z")), None), &["k6", "k7", "k8"]),
        c("event_time lt", req(f("event_time", "lt", json!("2026-11-05 03:00:00")), None), &["k1", "k2"]),
        c("uuid eq", req(f("event_id", "eq", json!(uuid3)), None), &["k3"]),
        c("app_id scope", req(json!([]), Some(1)), &["k1", "k2", "k5"]),
        c("app_id scope 0", req(json!([]), Some(0)), &["k8"]),
        c("app_id scope and filter", req(f("country_code", "eq", json!("DE")), Some(3)), &["k7"]),
        c("app_id scope without rows", req(json!([]), Some(99)), &[]),
        c("app_id filter in", req(fs("app_id", "in", json!([2, 3])), None), &["k3", "k4", "k6", "k7"]),
        c("app_id filter gt", req(f("app_id", "gt", json!(1)), None), &["k3", "k4", "k6", "k7"]),
        c("filters are ANDed", req(json!([{"field": "country_code", "op": "in", "values": ["US", "DE"]},
            {"field": "cost", "op": "gt", "value": 0.6}]), None), &["k2", "k4"]),
        c("no filters", req(json!([]), None), &all),
    ];

    // Injection attempts: plain literals matching exactly their own row.
    let inj_ids: Vec<String> = (0..INJECTIONS.len())
        .map(|i| format!("inj{i:02}"))
        .collect();
    let inj_day = |filters: Value| {
        json!({"slice": "clicks", "date_since": "2026-11-07", "date_until": "2026-11-07",
            "fields": ["click_id"], "filters": filters})
    };
    for (i, inj) in INJECTIONS.iter().enumerate() {
        let own = vec![inj_ids[i].as_str()];
        cases.push((
            format!("eq {inj:?}"),
            inj_day(f("campaign_id", "eq", json!(inj))),
            own.clone(),
        ));
        cases.push((
            format!("in {inj:?}"),
            inj_day(fs("country_code", "in", json!([inj]))),
            own,
        ));
        let starts: Vec<&str> = INJECTIONS
            .iter()
            .enumerate()
            .filter(|(_, other)| other.starts_with(inj))
            .map(|(j, _)| inj_ids[j].as_str())
            .collect();
        cases.push((
            format!("prefix {inj:?}"),
            inj_day(f("campaign_id", "prefix", json!(inj))),
            starts,
        ));
        let contains: Vec<&str> = INJECTIONS
            .iter()
            .enumerate()
            .filter(|(_, other)| other.contains(inj))
            .map(|(j, _)| inj_ids[j].as_str())
            .collect();
        cases.push((
            format!("contains {inj:?}"),
            inj_day(f("country_code", "contains", json!(inj))),
            contains,
        ));
        let others: Vec<&str> = inj_ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id.as_str())
            .collect();
        cases.push((
            format!("ne {inj:?}"),
            inj_day(f("campaign_id", "ne", json!(inj))),
            others,
        ));
    }

    // Typed slice: Nullable(String) null vs "", signed and 64-bit extremes, Date, UUID.
    #[rustfmt::skip]
    let typed_lines = [
        json!({"label": "t1", "event_time": format!("{DAY} 01:00:00"), "big": u64::MAX, "delta": i64::MIN,
            "small": -128, "day": "2026-11-04", "kind": "a b"}),
        json!({"label": "t2", "event_time": format!("{DAY} 02:00:00"), "note": "", "big": 0, "delta": -1,
            "small": -1, "maybe_n": -5, "day": DAY, "kind": "x-y"}),
        json!({"label": "t3", "event_time": format!("{DAY} 03:00:00"), "note": "x", "big": 1, "delta": 0,
            "small": 0, "maybe_n": 0, "day": DAY, "uid": uuid3}),
        json!({"label": "t4", "event_time": format!("{DAY} 04:00:00"), "note": "X y", "big": u64::MAX - 1,
            "delta": i64::MAX, "small": 127, "day": "2026-11-06", "maybe_n": null}),
    ];
    svc.ingest(ACME, "typed", &typed_lines).await;
    let treq = |filters: Value| {
        json!({"slice": "typed", "date_since": DAY, "date_until": DAY,
            "fields": ["label"], "filters": filters})
    };
    let is = |field: &str, op: &str| json!([{"field": field, "op": op}]);
    #[rustfmt::skip]
    let typed_cases: Vec<(&str, Value, &[&str])> = vec![
        ("nullable string is_null", treq(is("note", "is_null")), &["t1"]),
        ("nullable string not_null", treq(is("note", "not_null")), &["t2", "t3", "t4"]),
        ("empty string is not null", treq(f("note", "eq", json!(""))), &["t2"]),
        ("nullable string eq", treq(f("note", "eq", json!("x"))), &["t3"]),
        ("nullable string contains", treq(f("note", "contains", json!("y"))), &["t4"]),
        ("Int64 lt", treq(f("delta", "lt", json!(-1))), &["t1"]),
        ("Int64 lte", treq(f("delta", "lte", json!(-1))), &["t1", "t2"]),
        ("Int64 gte", treq(f("delta", "gte", json!(0))), &["t3", "t4"]),
        ("Int64 max", treq(f("delta", "eq", json!(i64::MAX))), &["t4"]),
        ("Int64 min as string", treq(f("delta", "eq", json!(i64::MIN.to_string()))), &["t1"]),
        ("Int64 between", treq(fs("delta", "between", json!([i64::MIN, -1]))), &["t1", "t2"]),
        ("UInt64 max", treq(f("big", "eq", json!(u64::MAX))), &["t1"]),
        ("UInt64 gt max-1", treq(f("big", "gt", json!(u64::MAX - 1))), &["t1"]),
        ("UInt64 gte max-1", treq(f("big", "gte", json!(u64::MAX - 1))), &["t1", "t4"]),
        ("UInt64 in", treq(fs("big", "in", json!([0, u64::MAX]))), &["t1", "t2"]),
        ("UInt64 not_in", treq(fs("big", "not_in", json!([0, u64::MAX]))), &["t3", "t4"]),
        ("Int8 lt", treq(f("small", "lt", json!(0))), &["t1", "t2"]),
        ("Int8 min", treq(f("small", "eq", json!(-128))), &["t1"]),
        ("nullable int is_null", treq(is("maybe_n", "is_null")), &["t1", "t4"]),
        ("nullable int lt", treq(f("maybe_n", "lt", json!(0))), &["t2"]),
        ("nullable int not_null", treq(is("maybe_n", "not_null")), &["t2", "t3"]),
        ("Date gte", treq(f("day", "gte", json!(DAY))), &["t2", "t3", "t4"]),
        ("Date eq", treq(f("day", "eq", json!(DAY))), &["t2", "t3"]),
        ("Date between", treq(fs("day", "between", json!(["2026-11-04", DAY]))), &["t1", "t2", "t3"]),
        ("UUID eq", treq(f("uid", "eq", json!(uuid3))), &["t3"]),
        ("UUID ne", treq(f("uid", "ne", json!(uuid3))), &["t1", "t2", "t4"]),
        ("enum with a space", treq(f("kind", "eq", json!("a b"))), &["t1"]),
        ("enum default", treq(f("kind", "eq", json!("none"))), &["t3", "t4"]),
    ];
    for (name, r, want) in typed_cases {
        cases.push(c(name, r, want));
    }

    let requests: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let done = svc.run_exports(ACME, &requests).await;
    for ((name, req, want), (_, parts)) in cases.iter().zip(&done) {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(csv_first_column(parts), want, "{name}: {req}");
    }

    // evaluate and preview agree with the export, row for row.
    for (name, req, want) in &cases {
        let resp = send(svc.post("/v1/exports/evaluate", ACME).json(req)).await;
        let eval = json_answer(resp, 200).await;
        assert_eq!(
            eval["estimated_rows"],
            want.len(),
            "evaluate {name}: {eval}"
        );
        let slice = req["slice"].as_str().unwrap();
        let mut p = req.clone();
        p["limit"] = json!(1000);
        let resp = send(
            svc.post(&format!("/v1/logs/{slice}/preview"), ACME)
                .json(&p),
        )
        .await;
        let preview = json_answer(resp, 200).await;
        let key = if slice == "typed" {
            "label"
        } else {
            "click_id"
        };
        let mut got: Vec<String> = preview["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().unwrap().to_string())
            .collect();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "preview {name}");
    }

    // Nothing was dropped or altered by the attempts.
    assert_eq!(svc.count("clicks", "acme"), lines.len() as u64);
    assert_eq!(svc.count("clicks", "globex"), lines.len() as u64);
}

// ---------------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn tenants_never_see_each_other() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[
            json!({"click_id": "acme-1", "event_time": format!("{DAY}T01:00:00Z"), "country_code": "US"}),
            json!({"click_id": "acme-2", "event_time": format!("{DAY}T02:00:00Z"), "country_code": "US"}),
        ],
    )
    .await;
    svc.ingest(
        GLOBEX,
        "clicks",
        &[json!({"click_id": "globex-1", "event_time": format!("{DAY}T03:00:00Z"), "country_code": "US"})],
    )
    .await;
    let request = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
        "fields": ["click_id", "country_code"]});
    let (acme_job, acme_parts) = svc.export(ACME, &request).await;
    let (globex_job, globex_parts) = svc.export(GLOBEX, &request).await;
    assert_eq!(csv_first_column(&acme_parts), ["acme-1", "acme-2"]);
    assert_eq!(csv_first_column(&globex_parts), ["globex-1"]);
    // Filters cannot widen the scope.
    let (_, parts) = svc
        .export(
            GLOBEX,
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"],
                "filters": [{"field": "click_id", "op": "prefix", "value": "acme"}]}),
        )
        .await;
    assert!(csv_first_column(&parts).is_empty());

    // The other tenant's job, parts, manifest and cancel are all "not found".
    let acme_id = id_of(&acme_job);
    let globex_id = id_of(&globex_job);
    for path in [
        format!("/v1/exports/{acme_id}"),
        format!("/v1/exports/{acme_id}/parts/1"),
        format!("/v1/exports/{acme_id}/manifest"),
    ] {
        let resp = send(svc.get(&path, GLOBEX)).await;
        let body = expect_problem(resp, 404, None).await;
        assert_eq!(body["type"], "/problems/not-found", "{path}");
        assert!(!body.to_string().contains("acme-1"), "{body}");
    }
    let resp = send(svc.post(&format!("/v1/exports/{acme_id}/cancel"), GLOBEX)).await;
    expect_problem(resp, 404, None).await;
    // The owner still sees all of it.
    let resp = send(svc.get(&format!("/v1/exports/{acme_id}/manifest"), ACME)).await;
    assert_eq!(resp.status(), 200);
    let resp = send(svc.get(&format!("/v1/exports/{globex_id}/parts/1"), ACME)).await;
    expect_problem(resp, 404, None).await;

    // Lists are per tenant.
    let list = svc.get_ok_json("/v1/exports", GLOBEX).await;
    let ids: BTreeSet<&str> = listed_ids(&list).into_iter().collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(globex_id.as_str()) && !ids.contains(acme_id.as_str()));
    let list = svc.get_ok_json("/v1/exports", ACME).await;
    let acme_ids = listed_ids(&list);
    assert_eq!(acme_ids, [acme_id.as_str()]);

    // Evaluate and preview are scoped too.
    let resp = send(svc.post("/v1/exports/evaluate", GLOBEX).json(&request)).await;
    assert_eq!(json_answer(resp, 200).await["estimated_rows"], 1);
    let resp = send(svc.post("/v1/logs/clicks/preview", GLOBEX).json(&json!({
        "date_since": DAY, "date_until": DAY, "fields": ["click_id"]})))
    .await;
    let preview = json_answer(resp, 200).await;
    assert_eq!(preview["data"], json!([{"click_id": "globex-1"}]));

    // The tenant column is neither a field nor a filter.
    let mut r = request.clone();
    r["fields"] = json!(["click_id", "tenant_id"]);
    let resp = send(svc.post("/v1/exports", GLOBEX).json(&r)).await;
    expect_problem(resp, 422, Some("fields[1]")).await;
    let mut r = request.clone();
    r["filters"] = json!([{"field": "tenant_id", "op": "eq", "value": "acme"}]);
    let resp = send(svc.post("/v1/exports", GLOBEX).json(&r)).await;
    expect_problem(resp, 422, Some("filters[0].field")).await;

    // Idempotency keys are per tenant: the same key makes two different jobs.
    let key = "shared-key-1";
    let a = send(
        svc.post("/v1/exports", ACME)
            .header("Idempotency-Key", key)
            .json(&request),
    )
    .await;
    let a = json_answer(a, 202).await;
    let g = send(
        svc.post("/v1/exports", GLOBEX)
            .header("Idempotency-Key", key)
            .json(&request),
    )
    .await;
    let g = json_answer(g, 202).await;
    assert_ne!(a["id"], g["id"]);
    let (_, parts) = svc.finish_export(GLOBEX, &id_of(&g)).await;
    assert_eq!(csv_first_column(&parts), ["globex-1"]);
}

// ---------------------------------------------------------------------------------
// Evaluate and preview
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn evaluate_counts_exactly_and_preview_shows_newest_own_rows() {
    let svc = Service::start().await;
    let lines: Vec<Value> = (0..12)
        .map(|i| {
            json!({"click_id": format!("e{i:02}"), "event_time": format!("{DAY}T{i:02}:30:00Z"),
                "country_code": if i % 3 == 0 { "US" } else { "DE" }, "cost": f64::from(i) / 4.0,
                "app_id": u64::MAX})
        })
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;
    svc.ingest(
        GLOBEX,
        "clicks",
        &[
            json!({"click_id": "g-newest", "event_time": format!("{DAY}T23:59:59Z"), "country_code": "US"}),
        ],
    )
    .await;
    let base = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY});
    let with = |extra: Value| merged(&base, extra);
    let evaluate = |r: Value| {
        let svc = &svc;
        async move {
            json_answer(
                send(svc.post("/v1/exports/evaluate", ACME).json(&r)).await,
                200,
            )
            .await
        }
    };

    let e = evaluate(base.clone()).await;
    assert_eq!(e["possible"], true, "{e}");
    assert_eq!(e["estimated_rows"], 12);
    assert!(e["estimated_bytes"].as_u64().unwrap() > 0, "{e}");
    assert!(e.get("reason").is_some(), "{e}");
    let e = evaluate(with(
        json!({"filters": [{"field": "country_code", "op": "eq", "value": "US"}]}),
    ))
    .await;
    assert_eq!(e["estimated_rows"], 4);
    let e = evaluate(with(json!({"limit": 5}))).await;
    assert_eq!(e["estimated_rows"], 5);
    let e = evaluate(with(json!({"app_id": 7}))).await;
    assert_eq!(e["estimated_rows"], 0);
    assert_eq!(e["estimated_bytes"], 0);
    let e = evaluate(with(
        json!({"date_since": "2026-10-01", "date_until": "2026-10-31"}),
    ))
    .await;
    assert_eq!(e["estimated_rows"], 0);
    // Evaluate queues nothing.
    let list = svc.get_ok_json("/v1/exports", ACME).await;
    assert_eq!(list["exports"], json!([]));
    // An export of the same request has exactly the estimated rows.
    let (job, _) = svc
        .export(ACME, &with(json!({"fields": ["click_id"]})))
        .await;
    assert_eq!(job["progress"]["rows"], 12);
    let resp = send(svc.post("/v1/exports/evaluate", GLOBEX).json(&base)).await;
    assert_eq!(json_answer(resp, 200).await["estimated_rows"], 1);

    // Preview: newest first, limited, typed values, own rows only.
    let preview = |body: Value, token: &'static str| {
        let svc = &svc;
        async move {
            json_answer(
                send(svc.post("/v1/logs/clicks/preview", token).json(&body)).await,
                200,
            )
            .await
        }
    };
    let p = preview(
        json!({"date_since": DAY, "date_until": DAY, "limit": 5,
            "fields": ["click_id", "event_time", "app_id", "cost", "lp_click_time"]}),
        ACME,
    )
    .await;
    assert_eq!(p["slice"], "clicks");
    assert_eq!(p["rows"], 5);
    assert_eq!(
        p["fields"],
        json!(["click_id", "event_time", "app_id", "cost", "lp_click_time"])
    );
    let ids: Vec<&str> = p["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["click_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e11", "e10", "e09", "e08", "e07"]);
    assert_eq!(
        p["data"][0],
        json!({"click_id": "e11", "event_time": "2026-11-05 11:30:00", "app_id": u64::MAX,
            "cost": 2.75, "lp_click_time": null})
    );
    let p = preview(json!({"date_since": DAY, "date_until": DAY}), ACME).await;
    assert_eq!(p["rows"], 12, "default limit covers all twelve");
    assert!(p["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["click_id"].as_str().unwrap().starts_with('e')));
    let p = preview(
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "limit": 1000,
            "filters": [{"field": "country_code", "op": "eq", "value": "US"}], "fields": ["click_id"]}),
        ACME,
    )
    .await;
    assert_eq!(
        p["data"],
        json!([{"click_id": "e09"}, {"click_id": "e06"}, {"click_id": "e03"}, {"click_id": "e00"}])
    );
    let p = preview(
        json!({"date_since": DAY, "date_until": DAY, "fields": ["click_id"]}),
        GLOBEX,
    )
    .await;
    assert_eq!(p["data"], json!([{"click_id": "g-newest"}]));

    for (body, status, field) in [
        (
            json!({"date_since": DAY, "date_until": DAY, "limit": 1001}),
            422,
            Some("limit"),
        ),
        (
            json!({"date_since": DAY, "date_until": DAY, "limit": 5000}),
            422,
            Some("limit"),
        ),
        (
            json!({"date_since": DAY, "date_until": DAY, "limit": 0}),
            422,
            Some("limit"),
        ),
        (
            json!({"slice": "conversions", "date_since": DAY, "date_until": DAY}),
            422,
            Some("slice"),
        ),
        (
            json!({"date_since": DAY, "date_until": DAY, "fields": ["nope"]}),
            422,
            Some("fields[0]"),
        ),
        (json!([1, 2]), 400, None),
    ] {
        let resp = send(svc.post("/v1/logs/clicks/preview", ACME).json(&body)).await;
        expect_problem(resp, status, field).await;
    }
    let resp = send(
        svc.post("/v1/logs/nope/preview", ACME)
            .json(&json!({"date_since": DAY, "date_until": DAY})),
    )
    .await;
    expect_problem(resp, 404, Some("slice")).await;
    let resp = send(
        svc.http
            .post(svc.url("/v1/logs/clicks/preview"))
            .json(&json!({"date_since": DAY, "date_until": DAY})),
    )
    .await;
    expect_problem(resp, 401, None).await;
}

// ---------------------------------------------------------------------------------
// Extreme filter values
// ---------------------------------------------------------------------------------

/// Filter values at the edges of what ClickHouse 18.16 parses: the largest and smallest
/// normal doubles work; subnormal ones (which 18.16 cannot parse) are a 422, never a 5xx.
#[tokio::test]
async fn extreme_filter_values_never_fail_the_server() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[
            json!({"click_id": "zero", "event_time": format!("{DAY}T10:00:00Z"), "cost": 0.0}),
            json!({"click_id": "tiny", "event_time": format!("{DAY}T10:00:00Z"), "cost": f64::MIN_POSITIVE}),
            json!({"click_id": "huge", "event_time": format!("{DAY}T10:00:00Z"), "cost": f64::MAX}),
            json!({"click_id": "neg", "event_time": format!("{DAY}T10:00:00Z"), "cost": -f64::MAX}),
        ],
    )
    .await;
    let req = |filter: Value| {
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"],
            "filters": [filter]})
    };
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"field": "cost", "op": "gt", "value": 0}),
            vec!["huge", "tiny"],
        ),
        (
            json!({"field": "cost", "op": "gte", "value": f64::MAX}),
            vec!["huge"],
        ),
        (
            json!({"field": "cost", "op": "lte", "value": -f64::MAX}),
            vec!["neg"],
        ),
        (
            json!({"field": "cost", "op": "eq", "value": f64::MIN_POSITIVE}),
            vec!["tiny"],
        ),
        (
            json!({"field": "cost", "op": "lt", "value": "2.2250738585072014e-308"}),
            vec!["neg", "zero"],
        ),
        (
            json!({"field": "cost", "op": "in", "values": [f64::MAX, -f64::MAX, 0]}),
            vec!["huge", "neg", "zero"],
        ),
    ];
    for (filter, want) in &cases {
        let r = req(filter.clone());
        let resp = send(svc.post("/v1/exports/evaluate", ACME).json(&r)).await;
        let e = json_answer(resp, 200).await;
        assert_eq!(e["estimated_rows"], want.len(), "{filter}: {e}");
        let resp = send(svc.post("/v1/logs/clicks/preview", ACME).json(&r)).await;
        let p = json_answer(resp, 200).await;
        assert_eq!(p["rows"], want.len(), "{filter}: {p}");
        let (_, parts) = svc.export(ACME, &r).await;
        assert_eq!(&csv_first_column(&parts), want, "{filter}");
    }
    for (filter, field) in [
        (
            json!({"field": "cost", "op": "gt", "value": 5e-324}),
            "filters[0].value",
        ),
        (
            json!({"field": "cost", "op": "lt", "value": "1e-320"}),
            "filters[0].value",
        ),
        (
            json!({"field": "cost", "op": "between", "values": [-1e-310, 1]}),
            "filters[0].values[0]",
        ),
    ] {
        let r = req(filter.clone());
        for path in [
            "/v1/exports",
            "/v1/exports/evaluate",
            "/v1/logs/clicks/preview",
        ] {
            let resp = send(svc.post(path, ACME).json(&r)).await;
            expect_problem(resp, 422, Some(field)).await;
        }
    }
}
