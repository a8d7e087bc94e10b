//! `POST /v1/ingest/{slice}` end to end: validation, encodings, limits, tenancy, and what lands in ClickHouse.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{Read as _, Write};
use std::time::Duration;

use logport_tests::*;

// ---------------------------------------------------------------- helpers

/// POSTs a raw body to `/v1/ingest/{path}` (path may carry a query string).
fn post(svc: &Service, path: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    svc.post(&format!("/v1/ingest/{path}"), ACME)
        .header("content-type", "application/x-ndjson")
        .body(body)
}

/// A 200 answer's body, checked for the documented shape.
async fn accepted(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON answer");
    assert_eq!(status, 200, "{body}");
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "accepted",
            "duplicate",
            "errors",
            "received_time",
            "rejected"
        ],
        "{body}"
    );
    assert_eq!(
        body["duplicate"], false,
        "a first delivery is never a repeat: {body}"
    );
    body
}

/// A problem answer with the given status; returns the body.
async fn refused(resp: reqwest::Response, want: u16) -> Value {
    let (status, body) = problem(resp).await;
    assert_eq!(status, want, "{body}");
    body
}

fn click(id: &str) -> Value {
    json!({"click_id": id, "event_time": "2026-11-05T10:00:00Z"})
}

/// Rows of every tenant in a slice's table.
fn total(svc: &Service, slice: &str) -> u64 {
    svc.clickhouse(&format!("SELECT count() FROM {}.{slice}", svc.database))
        .trim()
        .parse()
        .unwrap()
}

/// A SELECT on this service's database, as parsed JSONEachRow lines.
fn select(svc: &Service, sql: &str) -> Vec<Value> {
    svc.clickhouse(&format!("{sql} FORMAT JSONEachRow"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 19).unwrap()
}

/// A chunked (no Content-Length) body sent in pieces.
fn chunked(data: Vec<u8>, piece: usize) -> reqwest::Body {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = data
        .chunks(piece)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// `n` distinct valid click lines, each exactly `len` bytes long (without the newline).
fn lines_of_len(prefix: &str, n: usize, len: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let head =
                format!("{{\"click_id\":\"{prefix}{i}\",\"event_time\":1793872800,\"sub1\":\"");
            let tail = "\"}";
            assert!(head.len() + tail.len() <= len, "line too short for {len}");
            let line = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
            assert_eq!(line.len(), len);
            line
        })
        .collect()
}

// ---------------------------------------------------------------- the happy path

#[tokio::test]
async fn rows_land_in_clickhouse_with_server_fields_set() {
    let svc = Service::start().await;
    let given = "0189abcd-0123-7abc-8def-0123456789ab";
    let rows = [
        json!({"click_id": "c1", "event_time": "2026-11-05T10:00:00Z", "event_id": given,
               "app_id": 42, "campaign_id": "summer", "country_code": "US", "cost": 0.12,
               "is_unique": true, "event_type": "lp_click", "lp_click_time": "2026-11-05T10:00:07Z"}),
        json!({"click_id": "c2", "event_time": "2026-11-05 11:30:00", "app_id": "43", "is_bot": 1}),
        json!({"click_id": "c3", "event_time": 1793872800}),
    ];
    let before = now_secs();
    let body = accepted(send(post(&svc, "clicks", ndjson(&rows))).await).await;
    let after = now_secs();
    assert_eq!(body["accepted"], 3);
    assert_eq!(body["rejected"], 0);
    assert_eq!(body["errors"], json!([]));
    let received = body["received_time"].as_str().unwrap().to_string();
    assert!(
        received.len() == 20 && received.ends_with('Z') && received.as_bytes()[10] == b'T',
        "received_time is RFC 3339 UTC: {received}"
    );

    let stored = select(
        &svc,
        &format!(
            "SELECT tenant_id, click_id, toString(event_id) AS event_id, toString(app_id) AS app_id, \
             toUnixTimestamp(event_time) AS event_time, toUnixTimestamp(received_time) AS rt, \
             toString(received_time, 'UTC') AS rt_text, campaign_id, country_code, cost, \
             is_unique, is_bot, toString(event_type) AS event_type, \
             toUnixTimestamp(lp_click_time) AS lp_click_time, offer_id \
             FROM {}.clicks ORDER BY click_id",
            svc.database
        ),
    );
    assert_eq!(stored.len(), 3, "{stored:?}");
    for r in &stored {
        assert_eq!(
            r["tenant_id"], "acme",
            "the tenant comes from the token: {r}"
        );
        let rt = r["rt"].as_i64().unwrap();
        assert!(
            (before - 1..=after + 1).contains(&rt),
            "received_time {rt} is not now ({before}..{after})"
        );
        assert_eq!(
            r["rt_text"].as_str().unwrap(),
            received.trim_end_matches('Z').replace('T', " "),
            "every row carries the answer's received_time"
        );
    }
    let (c1, c2, c3) = (&stored[0], &stored[1], &stored[2]);
    assert_eq!(c1["event_id"], given, "a given event_id is kept");
    assert_eq!(c1["app_id"], "42");
    assert_eq!(c1["event_time"], 1_793_872_800);
    assert_eq!(c1["campaign_id"], "summer");
    assert_eq!(c1["country_code"], "US");
    assert_eq!(c1["cost"], 0.12);
    assert_eq!(c1["is_unique"], 1);
    assert_eq!(c1["event_type"], "lp_click");
    assert_eq!(c1["lp_click_time"], 1_793_872_807);
    assert_eq!(c2["app_id"], "43", "integers may come as strings");
    assert_eq!(c2["event_time"], 1_793_878_200);
    assert_eq!(c2["is_bot"], 1);
    // Missing fields get their type's default.
    assert_eq!(c3["app_id"], "0");
    assert_eq!(c3["campaign_id"], "");
    assert_eq!(c3["offer_id"], "");
    assert_eq!(c3["cost"], 0.0);
    assert_eq!(c3["event_type"], "unknown");
    assert!(c3["lp_click_time"].is_null(), "{c3}");

    // Generated event ids: distinct, UUID v7, minted now.
    let mut ids = Vec::new();
    for r in [c2, c3] {
        let id = r["event_id"].as_str().unwrap();
        let u = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(u.get_version_num(), 7, "{id} is a UUID v7");
        let ms = u64::from_str_radix(&id.replace('-', "")[..12], 16).unwrap() as i64;
        assert!(
            ((before - 2) * 1000..=(after + 2) * 1000).contains(&ms),
            "{id} was not minted now"
        );
        ids.push(id.to_string());
    }
    assert_ne!(ids[0], ids[1]);
    assert!(!ids.contains(&given.to_string()));
}

#[tokio::test]
async fn each_request_gets_its_own_received_time_and_event_ids() {
    let svc = Service::start().await;
    let a = svc.ingest(ACME, "clicks", &[click("a")]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = svc.ingest(ACME, "clicks", &[click("b")]).await;
    assert_ne!(a["received_time"], b["received_time"]);
    let rows = select(
        &svc,
        &format!(
            "SELECT click_id, toString(received_time, 'UTC') AS rt, toString(event_id) AS id \
             FROM {}.clicks ORDER BY click_id",
            svc.database
        ),
    );
    assert!(rows[0]["rt"].as_str() < rows[1]["rt"].as_str(), "{rows:?}");
    assert_ne!(rows[0]["id"], rows[1]["id"]);
    // A batch resent with the same event_ids (a client retry) is stored once. Without
    // an Idempotency-Key there is no earlier answer to replay: it is accepted again.
    let id = "0189abcd-0123-7abc-8def-000000000001";
    let line = json!({"click_id": "d", "event_time": 1, "event_id": id});
    svc.ingest(ACME, "clicks", std::slice::from_ref(&line))
        .await;
    let (_, again) = status_and_json(
        svc.ingest_body(ACME, "clicks", format!("{line}\n"), None)
            .await,
    )
    .await;
    assert_eq!(again["accepted"], 1, "{again}");
    assert_eq!(again["duplicate"], false, "{again}");
    assert_eq!(
        svc.clickhouse(&format!(
            "SELECT count() FROM {}.clicks WHERE event_id = toUUID('{id}')",
            svc.database
        ))
        .trim(),
        "1"
    );
}

#[tokio::test]
async fn strings_round_trip_byte_for_byte() {
    let svc = Service::start().await;
    let long: String = "0123456789абвгд🎉".repeat(700);
    let values: Vec<String> = vec![
        "plain".into(),
        String::new(),
        "comma, separated, values,".into(),
        "say \"hello\" and 'bye'".into(),
        "line1\nline2\r\nline3\r".into(),
        "tab\there\t".into(),
        "back\\slash \\n is not a newline \\\\ \\".into(),
        "\\N".into(),
        "NULL".into(),
        "null".into(),
        "ünïcödé ß 日本語 עברית العربية 🎉👨‍👩‍👧 e\u{301}".into(),
        "zero\u{200b}width\u{feff}bom \u{2028}ls \u{2029}ps".into(),
        "nul:\u{0}:after".into(),
        "ctl:\u{1}\u{8}\u{c}\u{1b}\u{1f}\u{7f}".into(),
        "  padded  ".into(),
        "'); DROP TABLE clicks; --".into(),
        "{\"json\":[1,2,{\"x\":null}]}".into(),
        "</script><b>&amp;</b>".into(),
        long,
    ];
    let rows: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"click_id": format!("s{i:02}"), "event_time": 1, "sub1": v,
                   "campaign_name": v, "user_agent": format!("UA {v}")})
        })
        .collect();
    let body = svc.ingest(ACME, "clicks", &rows).await;
    assert_eq!(body["accepted"], values.len());

    let stored = select(
        &svc,
        &format!(
            "SELECT click_id, sub1, campaign_name, user_agent, hex(sub1) AS sub1_hex \
             FROM {}.clicks ORDER BY click_id",
            svc.database
        ),
    );
    assert_eq!(stored.len(), values.len());
    for (i, v) in values.iter().enumerate() {
        let r = &stored[i];
        assert_eq!(r["click_id"], format!("s{i:02}"));
        assert_eq!(r["sub1"].as_str().unwrap(), v, "sub1 of s{i:02}");
        assert_eq!(r["campaign_name"].as_str().unwrap(), v, "campaign_name");
        assert_eq!(r["user_agent"].as_str().unwrap(), format!("UA {v}"));
        // The bytes themselves, independently of ClickHouse's JSON writer.
        let hex: String = v.bytes().map(|b| format!("{b:02X}")).collect();
        assert_eq!(r["sub1_hex"].as_str().unwrap(), hex, "bytes of s{i:02}");
    }
    // `\N` stayed a two-character string, not a NULL or an empty string.
    assert_eq!(
        svc.clickhouse(&format!(
            "SELECT length(sub1) FROM {}.clicks WHERE click_id = 's07'",
            svc.database
        ))
        .trim(),
        "2"
    );
}

#[tokio::test]
async fn numbers_round_trip_exactly() {
    let svc = Service::start().await;
    let rows = [
        json!({"click_id": "n1", "event_time": 1, "app_id": u64::MAX, "cost": 0.1, "is_unique": 255}),
        json!({"click_id": "n2", "event_time": 1, "app_id": 0, "cost": 1e-300, "is_unique": false}),
        json!({"click_id": "n3", "event_time": 1, "app_id": "18446744073709551615",
               "cost": "123456789.123456789", "is_unique": true}),
        json!({"click_id": "n4", "event_time": 1, "app_id": 9_007_199_254_740_993u64,
               "cost": -2.5e10, "is_unique": " 7 "}),
        json!({"click_id": "n5", "event_time": 1, "cost": f64::MAX, "is_unique": "0"}),
    ];
    svc.ingest(ACME, "clicks", &rows).await;
    // Floats compared by their bits, so no decimal printing or parsing is involved.
    let stored = select(
        &svc,
        &format!(
            "SELECT click_id, toString(app_id) AS app_id, hex(reinterpretAsString(cost)) AS cost, \
             is_unique FROM {}.clicks ORDER BY click_id",
            svc.database
        ),
    );
    let got: Vec<(String, String, u64)> = stored
        .iter()
        .map(|r| {
            (
                r["app_id"].as_str().unwrap().to_string(),
                r["cost"].as_str().unwrap().to_string(),
                r["is_unique"].as_u64().unwrap(),
            )
        })
        .collect();
    let bits = |f: f64| -> String { f.to_le_bytes().iter().map(|b| format!("{b:02X}")).collect() };
    let max = u64::MAX.to_string();
    assert_eq!(
        got,
        [
            (max.clone(), bits(0.1), 255),
            ("0".to_string(), bits(1e-300), 0),
            (max, bits("123456789.123456789".parse().unwrap()), 1),
            ("9007199254740993".to_string(), bits(-2.5e10), 7),
            ("0".to_string(), bits(f64::MAX), 0),
        ]
    );
}

#[tokio::test]
async fn every_timestamp_form_is_read_as_utc() {
    let svc = Service::start().await;
    // 2026-11-05 10:30:00 UTC
    const T: i64 = 1_793_874_600;
    let forms: Vec<(Value, i64)> = vec![
        (json!("2026-11-05T10:30:00Z"), T),
        (json!("2026-11-05T10:30:00+00:00"), T),
        (json!("2026-11-05T12:30:00+02:00"), T),
        (json!("2026-11-05T05:30:00-05:00"), T),
        (json!("2026-11-05T16:00:00+05:30"), T),
        (json!("2026-11-06T00:30:00+14:00"), T), // the next day locally
        (json!("2026-11-04T23:30:00-11:00"), T), // the previous day locally
        (json!("2026-11-05 10:30:00"), T),
        (json!("2026-11-05T10:30:00"), T),
        (json!(T), T),
        (json!(T.to_string()), T),
        (json!(0), 0),
        (json!("2105-12-31T23:59:59Z"), 4_291_747_199),
        (json!("2024-02-29 23:59:59"), 1_709_251_199),
    ];
    let rows: Vec<Value> = forms
        .iter()
        .enumerate()
        .map(|(i, (t, _))| {
            json!({"click_id": format!("t{i:02}"), "event_time": t, "lp_click_time": t})
        })
        .collect();
    svc.ingest(ACME, "clicks", &rows).await;
    let stored = select(
        &svc,
        &format!(
            "SELECT click_id, toUnixTimestamp(event_time) AS e, toUnixTimestamp(lp_click_time) AS l, \
             toString(event_time, 'UTC') AS text FROM {}.clicks ORDER BY click_id",
            svc.database
        ),
    );
    assert_eq!(stored.len(), forms.len());
    for (i, (form, want)) in forms.iter().enumerate() {
        assert_eq!(stored[i]["e"], *want, "event_time {form}");
        assert_eq!(stored[i]["l"], *want, "lp_click_time {form}");
    }
    assert_eq!(stored[2]["text"], "2026-11-05 10:30:00");
    assert_eq!(stored[5]["text"], "2026-11-05 10:30:00");
}

/// A value for a field, as JSON to send and as ClickHouse's `toString` of it.
fn sample(ty: &str, field: &str) -> (Value, String) {
    let inner = ty
        .strip_prefix("Nullable(")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(ty);
    match inner {
        "String" | "LowCardinality(String)" => {
            let s = format!("{field} värde, \"q\"\n\\ 🎉");
            (json!(s), s)
        }
        "UInt8" => (json!(255), "255".into()),
        "UInt16" => (json!(65535), "65535".into()),
        "UInt32" => (json!(4_294_967_295u32), "4294967295".into()),
        "UInt64" => (json!(u64::MAX), u64::MAX.to_string()),
        "Int8" => (json!(-128), "-128".into()),
        "Int16" => (json!(-32768), "-32768".into()),
        "Int32" => (json!(i32::MIN), i32::MIN.to_string()),
        "Int64" => (json!(i64::MIN), i64::MIN.to_string()),
        "Float32" => (json!(1.5), "1.5".into()),
        "Float64" => (json!(1234.5678), "1234.5678".into()),
        // Compared as numbers (days, seconds) so the server's rendering of dates
        // does not matter: 2026-11-05 is day 20762, 10:00:00 that day 1793872800.
        "Date" => (json!("2026-11-05"), "20762".into()),
        "DateTime" => (json!("2026-11-05T12:00:00+02:00"), "1793872800".into()),
        "UUID" => (
            json!("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
            "6f9619ff-8b86-d011-b42d-00c04fc964ff".into(),
        ),
        e if e.starts_with("Enum8(") => {
            // The last variant: never the default.
            let name = e.rsplit("'").nth(1).unwrap().to_string();
            (json!(name), name)
        }
        other => panic!("no sample for type {other}"),
    }
}

/// The `toString` of a missing field's default.
fn default_of(ty: &str) -> Value {
    if ty.starts_with("Nullable(") {
        return Value::Null;
    }
    match ty {
        "String" | "LowCardinality(String)" => json!(""),
        "UUID" => json!("00000000-0000-0000-0000-000000000000"),
        e if e.starts_with("Enum8(") => json!(e.split('\'').nth(1).unwrap()),
        _ => json!("0"),
    }
}

#[tokio::test]
async fn every_slice_stores_every_field_type() {
    let svc = Service::start().await;
    assert_eq!(1_793_836_800 / 86_400, 20762, "2026-11-05 is day 20762");
    let list = send(svc.get("/v1/slices", ACME)).await;
    let list: Value = list.json().await.unwrap();
    let slices = list["slices"].as_array().unwrap();
    assert_eq!(slices.len(), 17);
    for s in slices {
        let slice = s["name"].as_str().unwrap();
        let desc: Value = send(svc.get(&format!("/v1/slices/{slice}"), ACME))
            .await
            .json()
            .await
            .unwrap();
        let fields: Vec<(String, String, bool)> = desc["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_string(),
                    f["type"].as_str().unwrap().to_string(),
                    f["required"] == true,
                )
            })
            .filter(|(n, _, _)| n != "received_time")
            .collect();
        // Row "full": every field set. Row "minimal": only the required ones.
        let mut full = serde_json::Map::new();
        let mut minimal = serde_json::Map::new();
        let mut expected_full = serde_json::Map::new();
        let mut expected_min = serde_json::Map::new();
        for (name, ty, required) in &fields {
            let (v, text) = sample(ty, name);
            full.insert(name.clone(), v.clone());
            expected_full.insert(name.clone(), json!(text));
            if *required {
                minimal.insert(name.clone(), v);
                expected_min.insert(name.clone(), json!(text));
            } else if name != "event_id" {
                expected_min.insert(name.clone(), default_of(ty));
            }
        }
        assert!(minimal.contains_key("event_time"), "{slice}");
        full.insert("app_id".into(), json!(1));
        expected_full.insert("app_id".into(), json!("1"));
        minimal.insert("app_id".into(), json!(2));
        expected_min.insert("app_id".into(), json!("2"));
        let body = accepted(
            send(post(
                &svc,
                slice,
                ndjson(&[Value::Object(full), Value::Object(minimal)]),
            ))
            .await,
        )
        .await;
        assert_eq!(body["accepted"], 2, "{slice}: {body}");

        let exprs: Vec<String> = fields
            .iter()
            .map(|(n, ty, _)| {
                if ty.contains("Date") {
                    format!("toString(toUInt32({n})) AS {n}")
                } else {
                    format!("toString({n}) AS {n}")
                }
            })
            .collect();
        let stored = select(
            &svc,
            &format!(
                "SELECT tenant_id, toUnixTimestamp(received_time) AS rt, {} FROM {}.{slice} ORDER BY app_id",
                exprs.join(", "),
                svc.database
            ),
        );
        assert_eq!(stored.len(), 2, "{slice}");
        for (row, want) in stored.iter().zip([&expected_full, &expected_min]) {
            assert_eq!(row["tenant_id"], "acme");
            assert!(
                (now_secs() - row["rt"].as_i64().unwrap()).abs() < 30,
                "{row}"
            );
            for (k, v) in want {
                assert_eq!(&row[k], v, "{slice}.{k}");
            }
        }
        let generated = stored[1]["event_id"].as_str().unwrap();
        assert_eq!(
            uuid::Uuid::parse_str(generated).unwrap().get_version_num(),
            7,
            "{slice}: a generated event_id"
        );
    }
}

// ---------------------------------------------------------------- strict and skip

#[tokio::test]
async fn one_bad_line_rejects_the_whole_batch() {
    let svc = Service::start().await;
    svc.ingest(ACME, "clicks", &[click("seed")]).await;
    let lines = [
        click("g1"),
        click("g2"),
        json!({"click_id": "b3", "event_time": "not a time"}),
        click("g4"),
        json!({"click_id": "b5", "event_time": 1, "cost": "cheap"}),
        click("g6"),
    ];
    let body = refused(send(post(&svc, "clicks", ndjson(&lines))).await, 422).await;
    assert_eq!(body["type"], "/problems/invalid-request");
    assert_eq!(body["field"], "event_time", "the first bad line's field");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("line 3"), "{detail}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(errors[0]["line"], 3);
    assert_eq!(errors[0]["field"], "event_time");
    assert!(errors[0]["detail"].as_str().unwrap().contains("not a time"));
    assert_eq!(errors[1]["line"], 5);
    assert_eq!(errors[1]["field"], "cost");
    assert!(errors[1]["detail"].as_str().unwrap().contains("cheap"));
    assert_eq!(total(&svc, "clicks"), 1, "nothing of the batch was stored");

    // `on_error=reject` is the same as the default.
    let body = refused(
        send(post(&svc, "clicks?on_error=reject", ndjson(&lines))).await,
        422,
    )
    .await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    assert_eq!(total(&svc, "clicks"), 1);

    // The client fixes the lines and resends: exactly the batch is stored.
    let fixed = [
        click("g1"),
        click("g2"),
        click("b3"),
        click("g4"),
        click("b5"),
        click("g6"),
    ];
    let ok = accepted(send(post(&svc, "clicks", ndjson(&fixed))).await).await;
    assert_eq!(ok["accepted"], 6);
    assert_eq!(total(&svc, "clicks"), 7);
}

#[tokio::test]
async fn skip_mode_stores_the_good_lines_and_reports_the_bad() {
    let svc = Service::start().await;
    let body = format!(
        "{}{}\n{}{}\n{}",
        ndjson(&[click("g1")]),
        r#"{"click_id":"b2","event_time":1,"nope":1}"#,
        ndjson(&[click("g3")]),
        "[\"not an object\"]",
        ndjson(&[click("g5"), json!({"event_time": 1})]),
    );
    let ans = accepted(send(post(&svc, "clicks?on_error=skip", body)).await).await;
    assert_eq!(ans["accepted"], 3, "{ans}");
    assert_eq!(ans["rejected"], 3, "{ans}");
    let errors = ans["errors"].as_array().unwrap();
    let got: Vec<(u64, Option<&str>)> = errors
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str()))
        .collect();
    assert_eq!(
        got,
        [(2, Some("nope")), (4, None), (6, Some("click_id"))],
        "{ans}"
    );
    for e in errors {
        assert!(!e["detail"].as_str().unwrap().is_empty(), "{e}");
    }
    let ids: Vec<String> = select(
        &svc,
        &format!(
            "SELECT click_id FROM {}.clicks ORDER BY click_id",
            svc.database
        ),
    )
    .iter()
    .map(|r| r["click_id"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(ids, ["g1", "g3", "g5"]);

    // Every line bad: nothing stored, and the answer says so.
    let ans = accepted(
        send(post(
            &svc,
            "clicks?on_error=skip",
            "{\"click_id\":1,\"event_time\":1}\n{}\n",
        ))
        .await,
    )
    .await;
    assert_eq!(ans["accepted"], 0);
    assert_eq!(ans["rejected"], 2);
    assert_eq!(total(&svc, "clicks"), 3);
}

#[tokio::test]
async fn bad_query_strings_are_400() {
    let svc = Service::start().await;
    let good = ndjson(&[click("x")]);
    for q in [
        "on_error=bogus",
        "on_error=",
        "on_error=SKIP",
        "onerror=skip",
        "on_error=skip&on_error=reject",
    ] {
        let body = refused(
            send(post(&svc, &format!("clicks?{q}"), good.clone())).await,
            400,
        )
        .await;
        assert_eq!(body["type"], "/problems/bad-request", "{q}: {body}");
    }
    let body = refused(
        send(post(&svc, "clicks?on_error=bogus", good.clone())).await,
        400,
    )
    .await;
    assert_eq!(body["field"], "on_error");
    assert!(body["detail"].as_str().unwrap().contains("bogus"));
    assert_eq!(total(&svc, "clicks"), 0);
}

// ---------------------------------------------------------------- refused lines

/// Sends `seed` then one bad line (line 2) and expects a 422 naming `field`.
async fn expect_bad_line(svc: &Service, slice: &str, line: &[u8], field: Option<&str>) -> Value {
    let mut body = format!("{}\n", ndjson_line_for(slice)).into_bytes();
    body.extend_from_slice(line);
    body.push(b'\n');
    let shown = String::from_utf8_lossy(line).to_string();
    let resp = send(
        svc.post(&format!("/v1/ingest/{slice}"), ACME)
            .header("content-type", "application/x-ndjson")
            .body(body),
    )
    .await;
    let (status, p) = problem(resp).await;
    assert_eq!(status, 422, "{shown}: {p}");
    let errors = p["errors"].as_array().unwrap_or_else(|| panic!("{p}"));
    assert_eq!(errors.len(), 1, "{shown}: {p}");
    assert_eq!(errors[0]["line"], 2, "{shown}: {p}");
    assert_eq!(errors[0]["field"].as_str(), field, "{shown}: {p}");
    assert_eq!(p["field"].as_str(), field, "{shown}: {p}");
    assert!(
        p["detail"].as_str().unwrap().contains("line 2"),
        "{shown}: {p}"
    );
    p
}

/// A valid line for a slice (its required fields).
fn ndjson_line_for(slice: &str) -> Value {
    match slice {
        "clicks" => click("ok"),
        "profiles" => json!({"profile_id": "p", "event_time": 1}),
        other => panic!("no valid line for {other}"),
    }
}

#[tokio::test]
async fn unknown_and_server_owned_fields_are_refused() {
    let svc = Service::start().await;
    for (line, field) in [
        (r#"{"click_id":"c","event_time":1,"nope":1}"#, "nope"),
        (
            r#"{"click_id":"c","event_time":1,"Click_ID":"x"}"#,
            "Click_ID",
        ),
        // A field of another slice.
        (r#"{"click_id":"c","event_time":1,"payout":1.5}"#, "payout"),
        (
            r#"{"click_id":"c","event_time":1,"tenant_id":"globex"}"#,
            "tenant_id",
        ),
        (
            r#"{"click_id":"c","event_time":1,"tenant_id":"acme"}"#,
            "tenant_id",
        ),
        (
            r#"{"click_id":"c","event_time":1,"received_time":"2026-11-05T10:00:00Z"}"#,
            "received_time",
        ),
        (
            r#"{"click_id":"c","event_time":1,"received_time":null}"#,
            "received_time",
        ),
    ] {
        let p = expect_bad_line(&svc, "clicks", line.as_bytes(), Some(field)).await;
        assert!(
            p["errors"][0]["detail"].as_str().unwrap().contains(field),
            "the detail names {field}: {p}"
        );
    }
    assert_eq!(total(&svc, "clicks"), 0);
}

#[tokio::test]
async fn missing_required_fields_are_refused() {
    let svc = Service::start().await;
    expect_bad_line(&svc, "clicks", br#"{"click_id":"c"}"#, Some("event_time")).await;
    expect_bad_line(&svc, "clicks", br#"{"event_time":1}"#, Some("click_id")).await;
    expect_bad_line(&svc, "clicks", br#"{}"#, Some("event_time")).await;
    expect_bad_line(
        &svc,
        "clicks",
        br#"{"click_id":null,"event_time":1}"#,
        Some("click_id"),
    )
    .await;
    expect_bad_line(
        &svc,
        "clicks",
        br#"{"click_id":"c","event_time":null}"#,
        Some("event_time"),
    )
    .await;
    expect_bad_line(&svc, "profiles", br#"{"event_time":1}"#, Some("profile_id")).await;
    assert_eq!(total(&svc, "clicks"), 0);
    assert_eq!(total(&svc, "profiles"), 0);
}

#[tokio::test]
async fn values_of_the_wrong_type_are_refused() {
    let svc = Service::start().await;
    let cases: Vec<(Value, &str)> = vec![
        // UInt64 app_id
        (json!({"app_id": "abc"}), "app_id"),
        (json!({"app_id": -1}), "app_id"),
        (json!({"app_id": 1.5}), "app_id"),
        (json!({"app_id": "18446744073709551616"}), "app_id"),
        (json!({"app_id": 1e20}), "app_id"),
        (json!({"app_id": true}), "app_id"),
        (json!({"app_id": [1]}), "app_id"),
        // UInt8 flags
        (json!({"is_unique": 256}), "is_unique"),
        (json!({"is_unique": -1}), "is_unique"),
        (json!({"is_unique": "yes"}), "is_unique"),
        // Float64
        (json!({"cost": "NaN"}), "cost"),
        (json!({"cost": "inf"}), "cost"),
        (json!({"cost": {}}), "cost"),
        (json!({"cost": null}), "cost"),
        // String
        (json!({"campaign_id": 5}), "campaign_id"),
        (json!({"campaign_id": {"a": 1}}), "campaign_id"),
        (json!({"campaign_id": ["a"]}), "campaign_id"),
        (json!({"campaign_id": false}), "campaign_id"),
        (json!({"campaign_id": null}), "campaign_id"),
        // Enum8
        (json!({"event_type": "click"}), "event_type"),
        (json!({"event_type": "VISIT"}), "event_type"),
        (json!({"event_type": 1}), "event_type"),
        (json!({"connection_type": ""}), "connection_type"),
        // UUID
        (json!({"event_id": "not-a-uuid"}), "event_id"),
        (
            json!({"event_id": "0189abcd-0123-7abc-8def-0123456789a"}),
            "event_id",
        ),
        (json!({"event_id": 123}), "event_id"),
        (json!({"event_id": null}), "event_id"),
        // DateTime
        (json!({"event_time": "2026-13-01 00:00:00"}), "event_time"),
        (json!({"event_time": "2026-11-05 25:00:00"}), "event_time"),
        (json!({"event_time": "2026-02-30T00:00:00Z"}), "event_time"),
        (json!({"event_time": "yesterday"}), "event_time"),
        (json!({"event_time": "05.11.2026 10:00"}), "event_time"),
        (json!({"event_time": ""}), "event_time"),
        (json!({"event_time": -1}), "event_time"),
        (json!({"event_time": 1.5}), "event_time"),
        (json!({"event_time": "1969-12-31T23:59:59Z"}), "event_time"),
        (json!({"event_time": "2106-02-07T06:28:16Z"}), "event_time"),
        (json!({"event_time": 4_294_967_296u64}), "event_time"),
        // Unix milliseconds are refused, not misread as a date in the far future.
        (json!({"event_time": 1_793_872_800_000u64}), "event_time"),
        (json!({"event_time": true}), "event_time"),
        (json!({"lp_click_time": "soon"}), "lp_click_time"),
    ];
    for (extra, field) in cases {
        let line = merged(&click("c"), extra);
        let p = expect_bad_line(&svc, "clicks", line.to_string().as_bytes(), Some(field)).await;
        assert!(
            !p["errors"][0]["detail"].as_str().unwrap().is_empty(),
            "{p}"
        );
    }
    // Date fields (profiles).
    for bad in [
        json!("2026-02-30"),
        json!("05.11.2026"),
        json!("2026-11-05T00:00:00Z"),
        json!("2106-01-01"),
        json!(20762),
        json!(""),
    ] {
        let line =
            json!({"profile_id": "p", "event_time": 1, "appmetrica_first_session_date": bad});
        expect_bad_line(
            &svc,
            "profiles",
            line.to_string().as_bytes(),
            Some("appmetrica_first_session_date"),
        )
        .await;
    }
    assert_eq!(total(&svc, "clicks"), 0);
    assert_eq!(total(&svc, "profiles"), 0);
}

#[tokio::test]
async fn malformed_lines_are_refused() {
    let svc = Service::start().await;
    let cases: Vec<&[u8]> = vec![
        br#"{"click_id":"c","event_time":1"#,
        br#"{"click_id":"c","event_time":1}}"#,
        br#"{"click_id":"c","event_time":1} {"click_id":"d","event_time":1}"#,
        br#"{"click_id":"c","event_time":1} trailing"#,
        br#"[{"click_id":"c","event_time":1}]"#,
        b"[]",
        b"42",
        br#""a string""#,
        b"null",
        b"true",
        br#"{'click_id':'c','event_time':1}"#,
        br#"{click_id:"c",event_time:1}"#,
        br#"{"click_id":"c","event_time":1,}"#,
        // Invalid UTF-8, inside a string and outside one.
        b"{\"click_id\":\"\xff\xfe\",\"event_time\":1}",
        b"{\"click_id\":\"\xc3\x28\",\"event_time\":1}",
        b"{\"click_id\":\"\xed\xa0\x80\",\"event_time\":1}",
        b"\xef\xbb\xbf\xff{\"click_id\":\"c\",\"event_time\":1}",
        // A lone surrogate escape is not a Unicode scalar value.
        br#"{"click_id":"\ud800","event_time":1}"#,
        // A raw control character inside a string is not JSON.
        b"{\"click_id\":\"a\tb\",\"event_time\":1}",
    ];
    for line in cases {
        expect_bad_line(&svc, "clicks", line, None).await;
    }
    assert_eq!(total(&svc, "clicks"), 0);
}

#[tokio::test]
async fn an_empty_body_is_422() {
    let svc = Service::start().await;
    for body in ["", "\n", "\n\n\n", "  \r\n\t\n \n"] {
        let p = refused(send(post(&svc, "clicks", body)).await, 422).await;
        assert_eq!(p["type"], "/problems/invalid-request", "{body:?}: {p}");
        let p = refused(send(post(&svc, "clicks?on_error=skip", body)).await, 422).await;
        assert_eq!(p["type"], "/problems/invalid-request", "{body:?}: {p}");
    }
    assert_eq!(total(&svc, "clicks"), 0);
}

#[tokio::test]
async fn blank_lines_crlf_and_a_missing_final_newline_are_fine() {
    let svc = Service::start().await;
    let body = format!(
        "\r\n{}\r\n\r\n   \r\n{}\r\n\n\t\n{}",
        click("a"),
        click("b"),
        click("c")
    );
    let ans = accepted(send(post(&svc, "clicks", body)).await).await;
    assert_eq!(ans["accepted"], 3);
    assert_eq!(ans["rejected"], 0);
    let ids = select(
        &svc,
        &format!(
            "SELECT click_id, hex(click_id) AS h FROM {}.clicks ORDER BY click_id",
            svc.database
        ),
    );
    assert_eq!(
        ids.iter()
            .map(|r| r["h"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["61", "62", "63"],
        "no carriage return was kept"
    );
    // Line numbers count the physical lines, blank ones included, whatever the ending.
    let body = format!(
        "{}\r\n\r\n\r\n{{\"click_id\":\"x\"}}\r\n{}\n\n{{}}",
        click("d"),
        click("e")
    );
    let ans = accepted(send(post(&svc, "clicks?on_error=skip", body)).await).await;
    let lines: Vec<u64> = ans["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 7], "{ans}");
    assert_eq!(ans["accepted"], 2);
    assert_eq!(total(&svc, "clicks"), 5);
}

// ---------------------------------------------------------------- encodings

#[tokio::test]
async fn gzip_and_zstd_bodies_are_accepted() {
    let svc = Service::start().await;
    let rows: Vec<Value> = (0..500)
        .map(|i| json!({"click_id": format!("z{i:03}"), "event_time": 1, "sub1": "é,\"\n"}))
        .collect();
    let plain = ndjson(&rows);
    for (encoding, body) in [
        ("gzip", gzip(plain.as_bytes())),
        ("GZip", gzip(plain.as_bytes())),
        ("zstd", zstd(plain.as_bytes())),
        ("identity", plain.clone().into_bytes()),
    ] {
        assert!(body.len() < plain.len() || encoding == "identity");
        let before = total(&svc, "clicks");
        let ans =
            accepted(send(post(&svc, "clicks", body).header("content-encoding", encoding)).await)
                .await;
        assert_eq!(ans["accepted"], 500, "{encoding}");
        assert_eq!(total(&svc, "clicks"), before + 500, "{encoding}");
    }
    // The decompressed values are intact.
    assert_eq!(
        svc.clickhouse(&format!(
            "SELECT uniqExact(click_id), countIf(sub1 = 'é,\"\\n'), count() FROM {}.clicks FORMAT TSV",
            svc.database
        ))
        .trim(),
        "500\t2000\t2000"
    );
    // Compressed bodies report bad lines like plain ones.
    let bad = format!("{}{{\"click_id\":\"q\"}}\n", ndjson(&[click("p")]));
    let p = refused(
        send(post(&svc, "clicks", zstd(bad.as_bytes())).header("content-encoding", "zstd")).await,
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["line"], 2);
}

/// `x-gzip` is accepted by the encoding check, so it must be decoded as gzip
/// (RFC 9110 §8.4.1.3: "A recipient SHOULD consider x-gzip to be equivalent to gzip").
#[tokio::test]
async fn x_gzip_is_decoded_as_gzip() {
    let svc = Service::start().await;
    let plain = ndjson(&[click("x1"), click("x2")]);
    for query in ["clicks", "clicks?on_error=skip"] {
        let resp =
            send(post(&svc, query, gzip(plain.as_bytes())).header("content-encoding", "x-gzip"))
                .await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["accepted"], 2, "{query}: {body}");
    }
    assert_eq!(total(&svc, "clicks"), 4);
}

/// A gzip body with enough lines that a truncated stream still holds complete ones.
fn big_body(prefix: &str) -> Vec<u8> {
    let mut s = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..5000 {
        // Incompressible-ish content so the compressed stream has many blocks.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!(
            "{{\"click_id\":\"{prefix}{i}\",\"event_time\":1,\"sub1\":\"{x:016x}\"}}\n"
        ));
    }
    s.into_bytes()
}

#[tokio::test]
async fn a_truncated_or_corrupt_gzip_body_is_400_and_stores_nothing() {
    let svc = Service::start().await;
    let good = gzip(&big_body("g"));
    let n = good.len();
    let mut bad_crc = good.clone();
    bad_crc[n - 6] ^= 0xff;
    let mut bad_len = good.clone();
    bad_len[n - 2] ^= 0xff;
    let mut garbage = good.clone();
    garbage[n / 2] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half", good[..n / 2].to_vec()),
        ("no trailer", good[..n - 8].to_vec()),
        ("one byte short", good[..n - 1].to_vec()),
        ("bad crc", bad_crc),
        ("bad length", bad_len),
        ("not gzip", b"this is not gzip at all\n".to_vec()),
        ("header only", good[..10].to_vec()),
    ];
    for (what, body) in cases {
        for query in ["clicks", "clicks?on_error=skip"] {
            let p = refused(
                send(post(&svc, query, body.clone()).header("content-encoding", "gzip")).await,
                400,
            )
            .await;
            assert_eq!(p["type"], "/problems/bad-request", "{what}: {p}");
            assert_eq!(total(&svc, "clicks"), 0, "{what} ({query}) stored rows");
        }
    }
    // The intact body is accepted, so the cases above failed for their damage.
    let ans =
        accepted(send(post(&svc, "clicks", good).header("content-encoding", "gzip")).await).await;
    assert_eq!(ans["accepted"], 5000);
}

#[tokio::test]
async fn a_truncated_or_corrupt_zstd_body_is_400_and_stores_nothing() {
    let svc = Service::start().await;
    let plain = big_body("z");
    // With a content checksum, as the zstd CLI writes by default.
    let good = {
        let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(&plain).unwrap();
        e.finish().unwrap()
    };
    let n = good.len();
    let mut bad_checksum = good.clone();
    bad_checksum[n - 1] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half", good[..n / 2].to_vec()),
        ("no checksum", good[..n - 4].to_vec()),
        ("one byte short", good[..n - 1].to_vec()),
        ("bad checksum", bad_checksum),
        ("not zstd", b"this is not zstd at all\n".to_vec()),
    ];
    for (what, body) in cases {
        for query in ["clicks?on_error=skip", "clicks"] {
            let resp =
                send(post(&svc, query, body.clone()).header("content-encoding", "zstd")).await;
            let status = resp.status();
            let answer = resp.text().await.unwrap();
            assert_eq!(
                total(&svc, "clicks"),
                0,
                "{what} ({query}) stored rows: {status} {answer}"
            );
            assert_eq!(status, 400, "{what} ({query}): {answer}");
        }
    }
    let ans =
        accepted(send(post(&svc, "clicks", good).header("content-encoding", "zstd")).await).await;
    assert_eq!(ans["accepted"], 5000);
}

#[tokio::test]
async fn unsupported_content_encodings_are_415() {
    let svc = Service::start().await;
    let body = ndjson(&[click("x")]);
    for encoding in ["br", "xyz", "compress", "deflate", "gzip, br", "zstd;q=1"] {
        let p = refused(
            send(post(&svc, "clicks", body.clone()).header("content-encoding", encoding)).await,
            415,
        )
        .await;
        assert_eq!(p["type"], "/problems/unsupported-media-type", "{encoding}");
    }
    let p = refused(
        send(post(&svc, "clicks", body.clone()).header("content-encoding", "br")).await,
        415,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("br"), "{p}");
    assert_eq!(total(&svc, "clicks"), 0);
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn a_body_over_the_byte_limit_is_413() {
    let svc = Service::start_with(Options::default().env("LOGPORT_INGEST_MAX_BYTES", "1000")).await;
    // Exactly the limit: 10 lines of 99 bytes + newline = 1000 bytes.
    let exact: String = lines_of_len("e", 10, 99)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(exact.len(), 1000);
    let ans = accepted(send(post(&svc, "clicks", exact.clone())).await).await;
    assert_eq!(ans["accepted"], 10);
    assert_eq!(total(&svc, "clicks"), 10);

    // One byte more, with a Content-Length.
    let over = format!("{exact} ");
    assert_eq!(over.len(), 1001);
    let p = refused(send(post(&svc, "clicks", over.clone())).await, 413).await;
    assert_eq!(p["type"], "/problems/too-large");
    // Far more, with a Content-Length.
    let big: String = lines_of_len("b", 100, 99)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    refused(send(post(&svc, "clicks", big.clone())).await, 413).await;
    refused(
        send(post(&svc, "clicks?on_error=skip", big.clone())).await,
        413,
    )
    .await;

    // Chunked, without a Content-Length: small is fine, large is 413.
    let ans = accepted(
        send(post(
            &svc,
            "clicks",
            chunked(exact.clone().into_bytes(), 64),
        ))
        .await,
    )
    .await;
    assert_eq!(ans["accepted"], 10);
    refused(
        send(post(&svc, "clicks", chunked(over.into_bytes(), 64))).await,
        413,
    )
    .await;
    refused(
        send(post(&svc, "clicks", chunked(big.into_bytes(), 200))).await,
        413,
    )
    .await;
    assert_eq!(total(&svc, "clicks"), 20, "no over-limit body stored a row");
}

#[tokio::test]
async fn a_compressed_body_is_limited_after_decompression() {
    let svc = Service::start_with(Options::default().env("LOGPORT_INGEST_MAX_BYTES", "1000")).await;
    // Small and compressed: fine.
    let small: String = lines_of_len("s", 10, 99)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let ans = accepted(
        send(post(&svc, "clicks", gzip(small.as_bytes())).header("content-encoding", "gzip")).await,
    )
    .await;
    assert_eq!(ans["accepted"], 10);

    // Bombs: a few hundred bytes on the wire, far more than the limit inflated.
    let lines = ndjson(&[click("bomb")]).repeat(4_000);
    assert!(lines.len() > 100_000);
    let gz = gzip(lines.as_bytes());
    let newlines = vec![b'\n'; 20 << 20];
    let zs = zstd(&newlines);
    let zs_lines = zstd(lines.as_bytes());
    for (encoding, body) in [("gzip", gz), ("zstd", zs), ("zstd", zs_lines)] {
        assert!(
            body.len() < 1000,
            "the {encoding} bomb must pass the wire limit ({} bytes)",
            body.len()
        );
        for query in ["clicks", "clicks?on_error=skip"] {
            let p = refused(
                send(post(&svc, query, body.clone()).header("content-encoding", encoding)).await,
                413,
            )
            .await;
            assert_eq!(p["type"], "/problems/too-large", "{encoding}");
        }
        refused(
            send(post(&svc, "clicks", chunked(body, 50)).header("content-encoding", encoding))
                .await,
            413,
        )
        .await;
    }
    assert_eq!(total(&svc, "clicks"), 10);
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_without_inflating_it_in_memory() {
    let svc =
        Service::start_with(Options::default().env("LOGPORT_INGEST_MAX_BYTES", "4000000")).await;
    // 256 MiB of newlines in about 8 KB of zstd.
    let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
    std::io::copy(&mut std::io::repeat(b'\n').take(256 << 20), &mut enc).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let before = svc.peak_rss();
    refused(
        send(post(&svc, "clicks", bomb).header("content-encoding", "zstd")).await,
        413,
    )
    .await;
    let grown = svc.peak_rss().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "refusing a 4 MB-limited body made the service grow by {} MiB: \
         it inflated the bomb before checking the limit",
        grown >> 20
    );
}

#[tokio::test]
async fn a_line_over_the_line_limit_is_422_naming_the_line() {
    let svc =
        Service::start_with(Options::default().env("LOGPORT_INGEST_MAX_LINE_BYTES", "200")).await;
    let exact = lines_of_len("x", 1, 200).remove(0);
    let long = lines_of_len("l", 1, 201).remove(0);
    // Exactly the limit is fine (a CRLF ending does not count).
    let ans = accepted(send(post(&svc, "clicks", format!("{exact}\r\n"))).await).await;
    assert_eq!(ans["accepted"], 1);

    let body = format!("{}\n{}\n{long}\n{}\n", click("a"), click("b"), click("c"));
    let p = refused(send(post(&svc, "clicks", body.clone())).await, 422).await;
    assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["errors"][0]["line"], 3, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("line 3"), "{p}");
    assert!(
        p["errors"][0]["detail"].as_str().unwrap().contains("200"),
        "{p}"
    );
    assert_eq!(total(&svc, "clicks"), 1);

    let ans = accepted(send(post(&svc, "clicks?on_error=skip", body)).await).await;
    assert_eq!(ans["accepted"], 3);
    assert_eq!(ans["rejected"], 1);
    assert_eq!(ans["errors"][0]["line"], 3);
    assert_eq!(total(&svc, "clicks"), 4);
    // The long line was not stored.
    assert_eq!(
        svc.clickhouse(&format!(
            "SELECT count() FROM {}.clicks WHERE click_id = 'l0'",
            svc.database
        ))
        .trim(),
        "0"
    );
}

#[tokio::test]
async fn more_rows_than_the_row_limit_is_413() {
    let svc = Service::start_with(Options::default().env("LOGPORT_INGEST_MAX_ROWS", "5")).await;
    let five: Vec<Value> = (0..5).map(|i| click(&format!("f{i}"))).collect();
    // Exactly the limit, with blank lines in between (they are not events).
    let body = five.iter().map(|r| format!("{r}\n\n")).collect::<String>();
    let ans = accepted(send(post(&svc, "clicks", body)).await).await;
    assert_eq!(ans["accepted"], 5);

    let six: Vec<Value> = (0..6).map(|i| click(&format!("s{i}"))).collect();
    for query in ["clicks", "clicks?on_error=skip"] {
        let p = refused(send(post(&svc, query, ndjson(&six))).await, 413).await;
        assert_eq!(p["type"], "/problems/too-large");
        assert!(p["detail"].as_str().unwrap().contains('5'), "{p}");
    }
    // Bad lines count too: they are events the client sent.
    let mut mixed = five.clone();
    mixed.push(json!({"click_id": "bad"}));
    refused(
        send(post(&svc, "clicks?on_error=skip", ndjson(&mixed))).await,
        413,
    )
    .await;
    // Many more, gzip-compressed.
    let many: Vec<Value> = (0..1000).map(|i| click(&format!("m{i}"))).collect();
    refused(
        send(
            post(&svc, "clicks", gzip(ndjson(&many).as_bytes())).header("content-encoding", "gzip"),
        )
        .await,
        413,
    )
    .await;
    assert_eq!(total(&svc, "clicks"), 5);
}

// ---------------------------------------------------------------- admission

/// What a refused or accepted flood request answered: its status and `Retry-After`.
async fn status_and_retry(rb: reqwest::RequestBuilder) -> (u16, Option<String>) {
    let resp = rb.send().await.expect("request reaches the service");
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let status = resp.status().as_u16();
    if status != 200 {
        let (_, body) = problem(resp).await;
        assert_eq!(body["status"], status, "{body}");
    }
    (status, retry)
}

/// Memory is charged for what a request holds: fifty concurrent gzip bodies of a
/// million tiny valid lines each (41 MB of text, and several times that as column
/// data, from 130 KB on the wire) cannot push the server past its ingest
/// budget, and another tenant's small batch is still stored meanwhile.
#[tokio::test]
async fn a_flood_of_tiny_line_bodies_stays_within_the_ingest_budget() {
    const BUDGET: u64 = 96 << 20;
    // What the server holds besides its ingest budget under this load: 50
    // connections' buffers, the blocking threads the requests run on, the
    // allocator's slack.
    const MARGIN: u64 = 48 << 20;
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_INGEST_MAX_INFLIGHT_BYTES", &BUDGET.to_string())
            .env("LOGPORT_INGEST_MAX_BYTES", &(BUDGET / 2).to_string()),
    )
    .await;
    // A million lines as 100 gzip members of 10,000 lines (one valid gzip stream,
    // whose trailer declares only the last member's size: the text grows step by step).
    let line = "{\"click_id\":\"c\",\"event_time\":1793872800}\n";
    let member = gzip(line.repeat(10_000).as_bytes());
    let body = bytes::Bytes::from(member.repeat(100));
    assert!(body.len() < 200_000, "{}", body.len());
    let small = |i: usize| {
        svc.post("/v1/ingest/clicks", GLOBEX)
            .header("content-type", "application/x-ndjson")
            .body(ndjson(&[click(&format!("small-{i}"))]))
    };
    // Warm: the baseline includes what answering an ingest request costs.
    accepted(send(small(0)).await).await;
    let baseline = svc.peak_rss();

    let flood = futures::future::join_all((0..50).map(|_| {
        status_and_retry(
            svc.post("/v1/ingest/clicks", ACME)
                .header("content-type", "application/x-ndjson")
                .header("content-encoding", "gzip")
                .body(body.clone()),
        )
    }));
    let others = async {
        let mut answers = Vec::new();
        for i in 1..=5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            answers.push(status_and_retry(small(i)).await);
        }
        answers
    };
    let (flood, others) = tokio::join!(flood, others);

    for (status, retry) in &flood {
        match status {
            413 => {}
            503 => assert!(
                retry.as_deref().is_some_and(|r| r.parse::<u32>().is_ok()),
                "503 without Retry-After"
            ),
            other => panic!("a flood request answered {other}: {flood:?}"),
        }
    }
    assert!(
        others.iter().all(|(s, _)| *s == 200),
        "another tenant's small batches: {others:?}"
    );
    let peak = svc.peak_rss();
    eprintln!(
        "peak RSS {} MiB (baseline {} MiB, budget {} MiB); answers {:?}",
        peak >> 20,
        baseline >> 20,
        BUDGET >> 20,
        flood.iter().map(|(s, _)| *s).collect::<Vec<_>>()
    );
    assert!(
        peak < baseline + BUDGET + MARGIN,
        "peak RSS {} MiB is past the baseline {} MiB + the budget {} MiB + {} MiB",
        peak >> 20,
        baseline >> 20,
        BUDGET >> 20,
        MARGIN >> 20
    );
    assert_eq!(svc.count("clicks", "acme"), 0, "nothing partial is stored");
    assert_eq!(svc.count("clicks", "globex"), 6);
    assert_eq!(svc.metric("logport_ingest_held_bytes").await, 0.0);
}

/// An upload over a raw connection that sends one line a second; returns the status
/// the server answered with, when, and the body.
async fn trickle(svc: &Service, token: &str, chunked: bool) -> (u16, Duration, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = svc.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        // Announced, never sent: the budget is not charged for it.
        "Content-Length: 60000000".to_string()
    };
    let head = format!(
        "POST /v1/ingest/clicks HTTP/1.1\r\nHost: logport\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-ndjson\r\n{framing}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let start = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let line = format!("{}\n", click(&format!("trickle-{n}")));
                n += 1;
                let piece = if chunked {
                    format!("{:x}\r\n{line}\r\n", line.len())
                } else {
                    line
                };
                // The server may have answered and closed already.
                let _ = stream.write_all(piece.as_bytes()).await;
            }
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    answer.extend_from_slice(&buf[..k]);
                    let text = String::from_utf8_lossy(&answer);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                            .and_then(|v| v.parse::<usize>().ok());
                        if len.is_some_and(|len| body.len() >= len) {
                            break;
                        }
                    }
                }
            },
            _ = tokio::time::sleep(Duration::from_secs(30)) => panic!("no answer in 30 s"),
        }
    }
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, took, body)
}

/// Uploads that trickle (one line a second) hold only what they sent, so another
/// tenant's ingest is answered at once; after the grace they fall below the minimum
/// rate and are answered 408, releasing everything, storing nothing.
#[tokio::test]
async fn trickling_uploads_lose_their_admission_and_lock_nobody_out() {
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_INGEST_BODY_GRACE", "2s")
            .env("LOGPORT_INGEST_MIN_BODY_RATE", "1000"),
    )
    .await;
    let tricklers: Vec<_> = (0..4).map(|i| trickle(&svc, ACME, i % 2 == 0)).collect();
    let other = async {
        // The tricklers are connected and sending.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let start = std::time::Instant::now();
        let resp = svc
            .post("/v1/ingest/clicks", GLOBEX)
            .header("content-type", "application/x-ndjson")
            .body(ndjson(&[click("on-time")]))
            .send()
            .await
            .unwrap();
        let took = start.elapsed();
        (
            resp.status().as_u16(),
            took,
            svc.metric("logport_ingest_held_bytes").await,
        )
    };
    let (tricklers, (status, took, held_meanwhile)) =
        tokio::join!(futures::future::join_all(tricklers), other);
    assert_eq!(status, 200, "another tenant's ingest while acme trickles");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    // Four uploads that sent a few lines hold little.
    assert!(
        held_meanwhile > 0.0 && held_meanwhile < f64::from(4 * (1 << 20)),
        "{held_meanwhile}"
    );
    for (status, took, body) in &tricklers {
        assert_eq!(*status, 408, "{body}");
        assert_eq!(body["type"], "/problems/body-too-slow", "{body}");
        assert!(
            (Duration::from_secs(2)..Duration::from_secs(6)).contains(took),
            "answered after {took:?}"
        );
    }
    assert_eq!(svc.count("clicks", "acme"), 0);
    assert_eq!(svc.count("clicks", "globex"), 1);
    assert_eq!(svc.metric("logport_ingest_held_bytes").await, 0.0);
}

// ---------------------------------------------------------------- slices, tenants, tokens

#[tokio::test]
async fn an_unknown_slice_is_404() {
    let svc = Service::start().await;
    for slice in ["nope", "Clicks", "system.one", "clicks.bak"] {
        let p = refused(send(post(&svc, slice, ndjson(&[click("x")]))).await, 404).await;
        assert_eq!(p["field"], "slice", "{p}");
        assert!(p["detail"].as_str().unwrap().contains(slice), "{p}");
    }
    // Even a bad body is answered 404 first, and no table appears.
    refused(send(post(&svc, "nope", "garbage")).await, 404).await;
    let tables = svc.clickhouse(&format!(
        "SELECT count() FROM system.tables WHERE database = '{}'",
        svc.database
    ));
    assert_eq!(tables.trim(), "17");
}

#[tokio::test]
async fn rows_belong_to_the_token_s_tenant() {
    let svc = Service::start().await;
    svc.ingest(ACME, "clicks", &[click("a1"), click("a2")])
        .await;
    svc.ingest(GLOBEX, "clicks", &[click("g1"), click("a1"), click("g3")])
        .await;
    // The OAuth scheme writes as the same tenant.
    let resp = send(
        svc.http
            .post(svc.url("/v1/ingest/clicks"))
            .header("authorization", format!("OAuth {GLOBEX}"))
            .body(ndjson(&[click("g4")])),
    )
    .await;
    accepted(resp).await;
    assert_eq!(svc.count("clicks", "acme"), 2);
    assert_eq!(svc.count("clicks", "globex"), 4);
    let rows = select(
        &svc,
        &format!(
            "SELECT tenant_id, groupArray(click_id) AS ids FROM \
             (SELECT tenant_id, click_id FROM {}.clicks ORDER BY click_id) \
             GROUP BY tenant_id ORDER BY tenant_id",
            svc.database
        ),
    );
    assert_eq!(
        rows,
        [
            json!({"tenant_id": "acme", "ids": ["a1", "a2"]}),
            json!({"tenant_id": "globex", "ids": ["a1", "g1", "g3", "g4"]}),
        ]
    );
    // Claiming another tenant in the body is refused, not obeyed.
    let line = json!({"click_id": "evil", "event_time": 1, "tenant_id": "acme"});
    refused(
        send(
            svc.post("/v1/ingest/clicks", GLOBEX)
                .body(ndjson(std::slice::from_ref(&line))),
        )
        .await,
        422,
    )
    .await;
    let ans = accepted(
        send(
            svc.post("/v1/ingest/clicks?on_error=skip", GLOBEX)
                .body(ndjson(&[line, click("fine")])),
        )
        .await,
    )
    .await;
    assert_eq!(ans["accepted"], 1);
    assert_eq!(ans["errors"][0]["field"], "tenant_id", "{ans}");
    assert_eq!(svc.count("clicks", "acme"), 2);
    assert_eq!(svc.count("clicks", "globex"), 5);
}

#[tokio::test]
async fn no_or_bad_token_is_401_and_stores_nothing() {
    let svc = Service::start().await;
    let body = ndjson(&[click("x")]);
    let cases: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong-token-123".into()),
        Some(format!("Basic {ACME}")),
        Some(ACME.into()),
        Some("Bearer ".into()),
    ];
    for auth in cases {
        let mut rb = svc
            .http
            .post(svc.url("/v1/ingest/clicks"))
            .body(body.clone());
        if let Some(a) = &auth {
            rb = rb.header("authorization", a);
        }
        let resp = send(rb).await;
        assert!(resp.headers().contains_key("www-authenticate"), "{auth:?}");
        refused(resp, 401).await;
        // Even for an unknown slice or a bad body: 401 first.
        let mut rb = svc.http.post(svc.url("/v1/ingest/nope")).body("garbage");
        if let Some(a) = &auth {
            rb = rb.header("authorization", a);
        }
        refused(send(rb).await, 401).await;
    }
    assert_eq!(total(&svc, "clicks"), 0);
}
