//! The export job: its view, part downloads and manifest, the list, idempotency
//! keys, and jobs that survive a crash, keep their watermark or are canceled.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use logport_tests::*;

/// The day most test rows happen on; 2026-11-05T00:00:00Z is Unix 1_793_836_800.
const DAY: &str = "2026-11-05";

// ---------------------------------------------------------------------------------
// The job view, part downloads and the manifest
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn job_view_downloads_and_manifest() {
    let svc = Service::start().await;
    let lines: Vec<Value> = (0..5)
        .map(|i| json!({"click_id": format!("v{i}"), "event_time": format!("{DAY}T0{i}:00:00Z"), "cost": i}))
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;

    // What a default request becomes: defaults filled in the stored request.
    let slice = svc.get_ok_json("/v1/slices/clicks", ACME).await;
    let defaults: Vec<Value> = slice["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["default"] == true)
        .map(|f| f["name"].clone())
        .collect();
    assert!(defaults.len() > 3);
    let request = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY});
    let resp = send(svc.post("/v1/exports", ACME).json(&request)).await;
    assert_eq!(resp.status(), 202);
    let id_loc = header(&resp, "location").unwrap().to_string();
    let created = json_answer(resp, 202).await;
    let id = id_of(&created);
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(id_loc, format!("/v1/exports/{id}"));
    assert_eq!(created["status"], "queued");
    assert_eq!(created["slice"], "clicks");
    assert_eq!(
        created["request"],
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
            "date_dimension": "event", "timezone": "UTC", "fields": defaults,
            "filters": [], "format": "csv", "compression": "none"})
    );
    for k in [
        "started_at",
        "finished_at",
        "expires_at",
        "error",
        "manifest_url",
    ] {
        assert!(created.get(k).is_some_and(Value::is_null), "{k}: {created}");
    }
    assert_eq!(created["attempts"], 0);
    assert_eq!(
        created["progress"],
        json!({"rows": 0, "bytes": 0, "parts": 0})
    );
    assert_eq!(created["parts"], json!([]));
    let created_ms = rfc3339_ms(created["created_at"].as_str().unwrap());
    let watermark_ms = rfc3339_ms(created["watermark"].as_str().unwrap());
    assert!(watermark_ms <= created_ms && created_ms - watermark_ms < 1000);

    let job = svc.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["request"], created["request"]);
    assert_eq!(job["created_at"], created["created_at"]);
    assert_eq!(job["watermark"], created["watermark"]);
    let started = rfc3339_ms(job["started_at"].as_str().unwrap());
    let finished = rfc3339_ms(job["finished_at"].as_str().unwrap());
    let expires = rfc3339_ms(job["expires_at"].as_str().unwrap());
    assert!(created_ms <= started && started <= finished, "{job}");
    // The default TTL is 7 days.
    assert!((expires - finished - 7 * 86_400_000).abs() < 2_000, "{job}");
    assert_eq!(job["attempts"], 1);
    assert!(job["error"].is_null());
    let parts = job["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    let part = &parts[0];
    let sha = part["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    assert_eq!(part["n"], 1);
    assert_eq!(part["rows"], 5);
    assert_eq!(part["url"], format!("/v1/exports/{id}/parts/1"));
    assert_eq!(
        job["progress"],
        json!({"rows": 5, "bytes": part["bytes"], "parts": 1})
    );
    assert_eq!(job["manifest_url"], format!("/v1/exports/{id}/manifest"));

    // The part: type, disposition, length, ETag = sha256 of the body.
    let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
    assert_eq!(resp.status(), 200);
    assert_file_headers(
        &resp,
        "text/csv; charset=utf-8",
        &format!("{id}-part-00001.csv"),
    );
    let etag = format!("\"{sha}\"");
    assert_eq!(header(&resp, "etag").as_deref(), Some(etag.as_str()));
    let length: u64 = header(&resp, "content-length").unwrap().parse().unwrap();
    let body = resp.bytes().await.unwrap();
    assert_eq!(length, body.len() as u64);
    assert_eq!(length, part["bytes"].as_u64().unwrap());
    assert_eq!(sha256_hex(&body), sha);
    let (header_row, rows) = parse_csv(&body);
    let default_names: Vec<&str> = defaults.iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(header_row, default_names);
    assert_eq!(rows.len(), 5);

    // Conditional GETs.
    for inm in [etag.clone(), "*".to_string(), format!("\"nope\", {etag}")] {
        let resp = send(
            svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)
                .header("If-None-Match", &inm),
        )
        .await;
        assert_eq!(resp.status(), 304, "If-None-Match: {inm}");
        assert_eq!(header(&resp, "etag").as_deref(), Some(etag.as_str()));
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let resp = send(
        svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)
            .header("If-None-Match", "\"0000\""),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), body);

    // The manifest: parts, rows, sha256, watermark, the request.
    let resp = send(svc.get(&format!("/v1/exports/{id}/manifest"), ACME)).await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type")
        .as_deref()
        .unwrap()
        .starts_with("application/json"));
    let manifest: Value = resp.json().await.unwrap();
    assert_eq!(manifest["job_id"], id.as_str());
    assert_eq!(manifest["slice"], "clicks");
    assert_eq!(manifest["format"], "csv");
    assert_eq!(manifest["fields"], json!(defaults));
    assert_eq!(manifest["request"], job["request"]);
    assert_eq!(
        rfc3339_ms(manifest["watermark"].as_str().unwrap()),
        watermark_ms
    );
    assert_eq!(
        manifest["parts"],
        json!([{"n": 1, "file": "part-00001.csv", "rows": 5, "bytes": length, "sha256": sha}])
    );
    assert_eq!(manifest["totals"], job["progress"]);

    // Every format: its content type, file extension and ETag.
    for (format, ct, ext) in [
        ("tsv", "text/tab-separated-values; charset=utf-8", "tsv"),
        ("jsonl", "application/x-ndjson", "jsonl"),
        ("json", "application/json", "json"),
    ] {
        let (job, parts) = svc
            .export(
                ACME,
                &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
                    "fields": ["click_id", "cost"], "format": format}),
            )
            .await;
        let id = id_of(&job);
        let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
        assert_file_headers(&resp, ct, &format!("{id}-part-00001.{ext}"));
        let sha = job["parts"][0]["sha256"].as_str().unwrap();
        assert_eq!(
            header(&resp, "etag").as_deref(),
            Some(format!("\"{sha}\"").as_str())
        );
        assert_eq!(sha256_hex(&parts[0]), sha);
        let manifest = svc
            .get_ok_json(&format!("/v1/exports/{id}/manifest"), ACME)
            .await;
        assert_eq!(manifest["format"], format);
        assert_eq!(manifest["parts"][0]["file"], format!("part-00001.{ext}"));
    }
}

// ---------------------------------------------------------------------------------
// An API-only node; jobs survive kill -9; watermark; cancel
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn queued_jobs_survive_a_crash_keep_their_watermark_and_cancel() {
    let mut svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let first: Vec<Value> = (0..4)
        .map(|i| json!({"click_id": format!("w{i}"), "event_time": format!("{DAY}T1{i}:00:00Z"), "sub1": "a,\"b\"\nc"}))
        .collect();
    let answer = svc.ingest(ACME, "clicks", &first).await;
    let first_received = rfc3339_ms(answer["received_time"].as_str().unwrap()) / 1000;
    let fields = json!(["click_id", "sub1"]);
    let csv_req =
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": fields});
    let jsonl_req = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": fields, "format": "jsonl"});
    let a = svc.create_export(ACME, &csv_req).await;
    let b = svc.create_export(ACME, &jsonl_req).await;
    let c = svc.create_export(ACME, &csv_req).await;
    for j in [&a, &b, &c] {
        assert_eq!(j["status"], "queued");
    }
    let (a, b, c) = (id_of(&a), id_of(&b), id_of(&c));

    // Nobody runs them on an API-only node; there is no manifest or part yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let job = svc.get_ok_json(&format!("/v1/exports/{a}"), ACME).await;
    assert_eq!(job["status"], "queued");
    assert_eq!(job["attempts"], 0);
    let resp = send(svc.get(&format!("/v1/exports/{a}/manifest"), ACME)).await;
    expect_problem(resp, 404, None).await;
    let resp = send(svc.get(&format!("/v1/exports/{a}/parts/1"), ACME)).await;
    expect_problem(resp, 404, None).await;

    // Cancel a queued job; canceling again changes nothing.
    let resp = send(svc.post(&format!("/v1/exports/{c}/cancel"), ACME)).await;
    let canceled = json_answer(resp, 200).await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["id"], c.as_str());
    assert!(canceled["finished_at"].is_string(), "{canceled}");
    let resp = send(svc.post(&format!("/v1/exports/{c}/cancel"), ACME)).await;
    assert_eq!(json_answer(resp, 200).await["status"], "canceled");
    let resp = send(svc.get(&format!("/v1/exports/{c}/manifest"), ACME)).await;
    expect_problem(resp, 404, None).await;

    // Rows received after the jobs were created (a later second) are not theirs.
    let watermark = rfc3339_ms(
        svc.get_ok_json(&format!("/v1/exports/{b}"), ACME).await["watermark"]
            .as_str()
            .unwrap(),
    ) / 1000;
    assert!(watermark >= first_received);
    sleep_past_second(watermark).await;
    let late: Vec<Value> = (0..3)
        .map(
            |i| json!({"click_id": format!("late{i}"), "event_time": format!("{DAY}T0{i}:00:00Z")}),
        )
        .collect();
    let answer = svc.ingest(ACME, "clicks", &late).await;
    assert!(rfc3339_ms(answer["received_time"].as_str().unwrap()) / 1000 > watermark);

    // kill -9, then a node with workers: the queued jobs run, the canceled one does not.
    svc.kill();
    svc.restart_with(Options::default()).await;
    let (job_a, parts_a) = svc.finish_export(ACME, &a).await;
    let (job_b, parts_b) = svc.finish_export(ACME, &b).await;
    let expected = Expected {
        fields: vec!["click_id", "sub1"],
        rows: (0..4)
            .map(|i| {
                let id = format!("w{i}");
                (
                    id.clone(),
                    vec![Cell::S(id), Cell::S("a,\"b\"\nc".to_string())],
                )
            })
            .collect(),
    };
    expected.check_csv(&parts_a);
    expected.check_jsonl(&parts_b);
    assert_eq!(job_a["attempts"], 1);
    assert_eq!(job_b["progress"]["rows"], 4);
    // A job created now does see the late rows.
    let (_, parts) = svc.export(ACME, &csv_req).await;
    assert_eq!(csv_first_column(&parts).len(), 7);
    let manifest = svc
        .get_ok_json(&format!("/v1/exports/{a}/manifest"), ACME)
        .await;
    assert_eq!(
        rfc3339_ms(manifest["watermark"].as_str().unwrap()) / 1000,
        rfc3339_ms(job_a["watermark"].as_str().unwrap()) / 1000
    );

    let job_c = svc.get_ok_json(&format!("/v1/exports/{c}"), ACME).await;
    assert_eq!(job_c["status"], "canceled", "{job_c}");
    assert_eq!(job_c["attempts"], 0);
    assert!(job_c["started_at"].is_null());
    assert_eq!(job_c["parts"], json!([]));
    assert!(job_c["manifest_url"].is_null());

    // Cancel: a finished job → 409; unknown ids → 404.
    let resp = send(svc.post(&format!("/v1/exports/{a}/cancel"), ACME)).await;
    expect_problem(resp, 409, None).await;
    let job = svc.get_ok_json(&format!("/v1/exports/{a}"), ACME).await;
    assert_eq!(job["status"], "succeeded");
    for unknown in [
        "0123456789abcdef0123456789abcdef",
        "nope",
        "%27%20OR%201%3D1",
    ] {
        let resp = send(svc.post(&format!("/v1/exports/{unknown}/cancel"), ACME)).await;
        expect_problem(resp, 404, None).await;
    }
}

/// The watermark promise at its finest grain: a row ingested after `POST /v1/exports`
/// answered, but within the same wall-clock second, is still "received after the job
/// was created" and must not be in the export (nor appear in a retry only).
#[tokio::test]
async fn rows_received_after_creation_in_the_same_second_are_not_exported() {
    let mut svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "before", "event_time": format!("{DAY}T10:00:00Z")})],
    )
    .await;
    let request =
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"]});
    // Create the job early in a second, then ingest in that same second.
    let mut attempt = 0;
    let (id, late_id) = loop {
        attempt += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        sleep_past_second(now / 1000).await;
        let job = svc.create_export(ACME, &request).await;
        let created_s = rfc3339_ms(job["created_at"].as_str().unwrap()) / 1000;
        let late_id = format!("after-{attempt}");
        let answer = svc
            .ingest(
                ACME,
                "clicks",
                &[json!({"click_id": late_id, "event_time": format!("{DAY}T11:00:00Z")})],
            )
            .await;
        let received_s = rfc3339_ms(answer["received_time"].as_str().unwrap()) / 1000;
        if received_s == created_s {
            break (id_of(&job), late_id);
        }
        assert!(attempt < 5, "could not ingest within the creation second");
    };
    svc.restart_with(Options::default()).await;
    let (_, parts) = svc.finish_export(ACME, &id).await;
    let ids = csv_first_column(&parts);
    assert!(ids.contains(&"before".to_string()), "{ids:?}");
    assert!(
        !ids.contains(&late_id),
        "{late_id} was ingested after the job was created, yet it is in the export: {ids:?}"
    );
}

// ---------------------------------------------------------------------------------
// Listing and idempotency
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_list_shows_finished_exports_with_their_parts() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"app_id": 1, "event_time": format!("{DAY} 10:00:00"), "click_id": "listed"})],
    )
    .await;
    let job = svc
        .create_export(
            ACME,
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"]}),
        )
        .await;
    let id = id_of(&job);
    let (done, _) = svc.finish_export(ACME, &id).await;
    let list = svc.get_ok_json("/v1/exports", ACME).await;
    let listed = list["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} is not listed: {list}"));
    assert_eq!(listed["parts"], done["parts"], "{listed}");
    assert_eq!(listed["progress"], done["progress"], "{listed}");
    assert_eq!(
        listed["parts"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

#[tokio::test]
async fn list_pages_newest_first_and_filters() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let mut created = Vec::new();
    for (i, slice) in [
        "clicks",
        "conversions",
        "clicks",
        "clicks",
        "conversions",
        "clicks",
    ]
    .iter()
    .enumerate()
    {
        let job = svc
            .create_export(
                ACME,
                &json!({"slice": slice, "date_since": DAY, "date_until": DAY, "limit": i + 1}),
            )
            .await;
        created.push(id_of(&job));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in [&created[1], &created[2]] {
        let resp = send(svc.post(&format!("/v1/exports/{id}/cancel"), ACME)).await;
        assert_eq!(resp.status(), 200);
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    let list_ids =
        |v: &Value| -> Vec<String> { v["exports"].as_array().unwrap().iter().map(id_of).collect() };

    let all = svc.get_ok_json("/v1/exports", ACME).await;
    assert_eq!(list_ids(&all), newest_first);
    assert!(all["next_cursor"].is_null(), "{all}");
    // Views in the list are full job views.
    let first = &all["exports"][0];
    for k in ["id", "status", "request", "created_at", "progress", "parts"] {
        assert!(first.get(k).is_some(), "{k}: {first}");
    }

    // Paging: every job exactly once, in order, for any page size.
    for limit in [1, 2, 4, 6] {
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v1/exports?limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = svc.get_ok_json(&path, ACME).await;
            let ids = list_ids(&page);
            assert!(ids.len() <= limit, "{page}");
            got.extend(ids);
            pages += 1;
            assert!(pages <= 10, "paging does not end");
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(got, newest_first, "limit {limit}");
    }

    let ids_of = |q: &'static str| {
        let svc = &svc;
        async move { list_ids(&svc.get_ok_json(&format!("/v1/exports?{q}"), ACME).await) }
    };
    assert_eq!(
        ids_of("status=canceled").await,
        [created[2].clone(), created[1].clone()]
    );
    assert_eq!(
        ids_of("status=queued").await,
        [
            created[5].clone(),
            created[4].clone(),
            created[3].clone(),
            created[0].clone()
        ]
    );
    assert_eq!(
        ids_of("slice=conversions").await,
        [created[4].clone(), created[1].clone()]
    );
    assert_eq!(
        ids_of("slice=conversions&status=queued").await,
        [created[4].clone()]
    );
    assert!(ids_of("status=succeeded").await.is_empty());
    assert!(ids_of("slice=installations").await.is_empty());
    let page = ids_of("status=queued&limit=2").await;
    assert_eq!(page, [created[5].clone(), created[4].clone()]);

    for (q, field) in [
        ("status=done", Some("status")),
        ("status=QUEUED", Some("status")),
        ("cursor=abc", Some("cursor")),
        ("cursor=123-xyz", Some("cursor")),
        ("cursor=x-0123456789abcdef0123456789abcdef", Some("cursor")),
        ("limit=0", Some("limit")),
        ("limit=5000", Some("limit")),
    ] {
        let resp = send(svc.get(&format!("/v1/exports?{q}"), ACME)).await;
        expect_problem(resp, 400, field).await;
    }
    for q in ["limit=abc", "limit=-1", "colour=red"] {
        let resp = send(svc.get(&format!("/v1/exports?{q}"), ACME)).await;
        let (status, body) = problem(resp).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
    let resp = send(svc.http.get(svc.url("/v1/exports"))).await;
    expect_problem(resp, 401, None).await;
}

#[tokio::test]
async fn idempotency_keys_replay_or_conflict() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "i1", "event_time": format!("{DAY}T10:00:00Z")})],
    )
    .await;
    let body =
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"]});
    let post = |key: &str, body: &Value| {
        svc.post("/v1/exports", ACME)
            .header("Idempotency-Key", key)
            .json(body)
    };
    let resp = send(post("key-1", &body)).await;
    assert_eq!(resp.status(), 202);
    assert!(header(&resp, "idempotent-replayed").is_none());
    let first = json_answer(resp, 202).await;
    let id = id_of(&first);
    svc.finish_export(ACME, &id).await;

    // Same key, same body: the same job, 200, marked as a replay (even once it ran).
    let resp = send(post("key-1", &body)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&resp, "location").as_deref(),
        Some(format!("/v1/exports/{id}").as_str())
    );
    let replay = json_answer(resp, 200).await;
    assert_eq!(replay["id"], id.as_str());
    assert_eq!(replay["status"], "succeeded");
    // The same request spelled differently (defaults explicit, members reordered).
    let spelled = json!({"format": "csv", "fields": ["click_id"], "date_until": DAY,
        "timezone": "UTC", "date_dimension": "event", "filters": [], "compression": "none",
        "date_since": DAY, "slice": "clicks"});
    let resp = send(post("key-1", &spelled)).await;
    assert_eq!(json_answer(resp, 200).await["id"], id.as_str());

    // Same key, another body: 409, and no new job.
    let mut other = body.clone();
    other["format"] = json!("jsonl");
    let resp = send(post("key-1", &other)).await;
    let problem_body = expect_problem(resp, 409, None).await;
    assert_eq!(problem_body["type"], "/problems/conflict");
    // Another key: a new job.
    let resp = send(post("key-2", &body)).await;
    let second = json_answer(resp, 202).await;
    assert_ne!(second["id"], id.as_str());
    // No key: always a new job.
    let third = svc.create_export(ACME, &body).await;
    assert_ne!(third["id"], id.as_str());
    assert_ne!(third["id"], second["id"]);
    let list = svc.get_ok_json("/v1/exports", ACME).await;
    assert_eq!(list["exports"].as_array().unwrap().len(), 3, "{list}");

    // Keys that are not 1..=255 printable ASCII characters.
    for key in [String::new(), "x".repeat(256), "with space".into()] {
        let resp = send(post(&key, &body)).await;
        expect_problem(resp, 400, Some("Idempotency-Key")).await;
    }
}
