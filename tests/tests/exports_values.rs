//! Exports return every value exactly, in every format: strings that break naive
//! writers, floats to the bit, every scalar type, dates, times and time zones, the
//! 1970 epoch, and rows that look like a server's error text.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use logport_tests::*;

/// The day most test rows happen on; 2026-11-05T00:00:00Z is Unix 1_793_836_800.
const DAY: &str = "2026-11-05";
const DAY_START: i64 = 1_793_836_800;

// ---------------------------------------------------------------------------------
// Round trip: every value exact in every format
// ---------------------------------------------------------------------------------

const FLOATS: &[f64] = &[
    0.1,
    1e300,
    -2.5,
    0.0,
    f64::MAX,
    f64::MIN_POSITIVE,
    123_456.789,
    1e-300,
    0.300_000_000_000_000_04,
    -1e300,
    1.0 / 3.0,
    4_503_599_627_370_497.0,
];

fn s(v: &str) -> Cell {
    Cell::S(v.to_string())
}

#[tokio::test]
async fn values_round_trip_exactly_in_every_format() {
    let schemas = typed_schema_dir();
    let svc = Service::start_with(
        Options::default().env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap()),
    )
    .await;

    // --- clicks: nasty strings, UInt64 extremes, floats, enum, flags, nullable time.
    let n = NASTY.len();
    let app_ids = [u64::MAX, 0, 1, 42, u64::MAX - 1];
    let event_types = ["visit", "lp_click", "impression", "unknown"];
    // (as sent, as exported) — every accepted timestamp form.
    let times: [(Value, &str); 4] = [
        (json!("2026-11-05T10:00:00Z"), "2026-11-05 10:00:00"),
        (json!("2026-11-05T12:30:00+02:00"), "2026-11-05 10:30:00"),
        (json!("2026-11-05 23:59:59"), "2026-11-05 23:59:59"),
        (json!(DAY_START), "2026-11-05 00:00:00"),
    ];
    let long: String = NASTY.concat().repeat(40);
    let mut lines = Vec::new();
    let mut rows = BTreeMap::new();
    for i in 0..n {
        let id = format!("r{i:02}");
        let (t_in, t_out) = &times[i % times.len()];
        let cost = FLOATS[i % FLOATS.len()];
        let app = app_ids[i % app_ids.len()];
        let et = event_types[i % event_types.len()];
        let lp: (Value, Cell) = match i % 3 {
            0 => (Value::Null, Cell::Null),
            1 => (json!("2026-11-05T11:00:00+01:00"), s("2026-11-05 10:00:00")),
            _ => (json!(DAY_START + 86_399), s("2026-11-05 23:59:59")),
        };
        let referrer = if i == 0 {
            long.clone()
        } else {
            NASTY[(i + 11) % n].to_string()
        };
        let event_id = format!("0190a0b1-2c3d-7e4f-8a9b-{i:012x}");
        let mut line = json!({
            "click_id": id,
            "event_time": t_in,
            "event_id": event_id,
            "app_id": app,
            "campaign_name": NASTY[(i + 3) % n],
            "sub1": NASTY[i],
            "sub2": NASTY[(i + 5) % n],
            "user_agent": NASTY[(i + 9) % n],
            "referrer": referrer,
            "cost": cost,
            "event_type": et,
            "lp_click_time": lp.0,
        });
        // UInt8 flags take JSON booleans and numbers.
        line["is_bot"] = if i % 2 == 0 { json!(true) } else { json!(0) };
        lines.push(line);
        rows.insert(
            id.clone(),
            vec![
                s(&id),
                s(t_out),
                Cell::U(app),
                s(&event_id),
                s(NASTY[(i + 3) % n]),
                s(NASTY[i]),
                s(NASTY[(i + 5) % n]),
                s(NASTY[(i + 9) % n]),
                Cell::S(referrer),
                Cell::F(cost),
                Cell::U(u64::from(i % 2 == 0)),
                s(et),
                lp.1,
            ],
        );
    }
    let answer = svc.ingest(ACME, "clicks", &lines).await;
    assert_eq!(answer["accepted"], n);
    let received = answer["received_time"].as_str().unwrap();
    let received_text = utc_text(rfc3339_ms(received) / 1000);
    for r in rows.values_mut() {
        r.push(Cell::S(received_text.clone()));
    }
    let clicks = Expected {
        fields: vec![
            "click_id",
            "event_time",
            "app_id",
            "event_id",
            "campaign_name",
            "sub1",
            "sub2",
            "user_agent",
            "referrer",
            "cost",
            "is_bot",
            "event_type",
            "lp_click_time",
            "received_time",
        ],
        rows,
    };

    // --- typed: signed extremes, Nullable(String) null vs "", Date, UUID, enum.
    let notes: [Option<&str>; 4] = [None, Some(""), Some("x"), Some("\\N")];
    let bigs = [u64::MAX, 0, 1, u64::MAX - 1];
    let deltas = [i64::MIN, -1, 0, i64::MAX];
    let smalls = [-128i64, -1, 0, 127];
    let maybes: [Option<i64>; 4] = [None, Some(-5), Some(i64::from(i32::MIN)), Some(0)];
    let days = ["1970-01-02", "2026-11-05", "2105-12-31", "2000-02-29"];
    let kinds = ["none", "a b", "x-y", "a b"];
    let mut typed_lines = Vec::new();
    let mut typed_rows = BTreeMap::new();
    for i in 0..4 {
        let label = format!("t{i}{}", NASTY[i + 1]);
        let uid = format!("67e55044-10b1-426f-9247-bb680e5fe0c{i}");
        let ratio = FLOATS[(i * 3) % FLOATS.len()];
        let mut line = json!({
            "label": label, "event_time": format!("{DAY} 12:00:0{i}"),
            "big": bigs[i], "delta": deltas[i], "small": smalls[i], "ratio": ratio,
            "day": days[i], "uid": uid, "kind": kinds[i], "lc": NASTY[i + 5],
        });
        // An explicit null (note) and an absent member (maybe_n) both mean null.
        line["note"] = json!(notes[i]);
        if let Some(m) = maybes[i] {
            line["maybe_n"] = json!(m);
        }
        // Integers may come as strings.
        if i == 1 {
            line["delta"] = json!("-1");
        }
        typed_lines.push(line);
        typed_rows.insert(
            label.clone(),
            vec![
                Cell::S(label),
                notes[i].map(s).unwrap_or(Cell::Null),
                Cell::U(bigs[i]),
                Cell::I(deltas[i]),
                Cell::I(smalls[i]),
                Cell::F(ratio),
                maybes[i].map(Cell::I).unwrap_or(Cell::Null),
                s(days[i]),
                Cell::S(uid),
                s(kinds[i]),
                s(NASTY[i + 5]),
            ],
        );
    }
    let answer = svc.ingest(ACME, "typed", &typed_lines).await;
    assert_eq!(answer["accepted"], 4);
    let typed = Expected {
        fields: vec![
            "label", "note", "big", "delta", "small", "ratio", "maybe_n", "day", "uid", "kind",
            "lc",
        ],
        rows: typed_rows,
    };

    let formats = ["csv", "tsv", "jsonl", "json"];
    let mut requests = Vec::new();
    for f in formats {
        requests.push(
            json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
            "fields": clicks.fields, "format": f}),
        );
    }
    for f in formats {
        requests.push(
            json!({"slice": "typed", "date_since": DAY, "date_until": DAY,
            "fields": typed.fields, "format": f}),
        );
    }
    // NULL and "" side by side, to read the raw CSV text.
    requests.push(
        json!({"slice": "typed", "date_since": DAY, "date_until": DAY,
        "fields": ["big", "note"], "format": "csv"}),
    );
    let done = svc.run_exports(ACME, &requests).await;
    for (i, (job, parts)) in done.iter().take(8).enumerate() {
        let format = formats[i % 4];
        let expected = if i < 4 { &clicks } else { &typed };
        assert_eq!(parts.len(), 1, "{job}");
        assert_eq!(job["progress"]["rows"], expected.rows.len(), "{job}");
        assert_eq!(job["request"]["format"], format);
        expected.check(format, parts);
    }

    // The exact text of a few cells, beyond what a lenient reader would accept.
    let csv = String::from_utf8(done[0].1[0].clone()).unwrap();
    assert!(csv.starts_with(&format!("{}\n", clicks.fields.join(","))));
    assert!(
        csv.contains(",\"say \"\"hi\"\"\","),
        "RFC 4180 quote doubling"
    );
    assert!(
        csv.contains(",18446744073709551615,"),
        "UInt64 max unquoted"
    );
    let tsv = String::from_utf8(done[1].1[0].clone()).unwrap();
    assert!(tsv.contains("\tline1\\nline2\t"), "TSV escapes newlines");
    assert!(tsv.contains("\ttab\\there\t"), "TSV escapes tabs");
    assert!(
        tsv.contains("\tback\\\\slash\\\\\t"),
        "TSV escapes backslashes"
    );
    let typed_tsv = String::from_utf8(done[5].1[0].clone()).unwrap();
    assert!(typed_tsv.contains("\t-9223372036854775808\t"));
    assert!(
        typed_tsv.contains("\t\\\\N\t"),
        "the string \\N is escaped, unlike NULL"
    );
    assert!(typed_tsv.contains("\t\\N\t"), "NULL is \\N in TSV");
    let typed_jsonl = String::from_utf8(done[6].1[0].clone()).unwrap();
    assert!(typed_jsonl.contains("\"note\":null"));
    assert!(typed_jsonl.contains("\"note\":\"\""));
    let mut raw: Vec<&str> = std::str::from_utf8(&done[8].1[0])
        .unwrap()
        .lines()
        .collect();
    raw.sort_unstable();
    assert_eq!(
        raw,
        [
            "0,\"\"",
            "1,\"x\"",
            "18446744073709551614,\"\\N\"",
            "18446744073709551615,",
            "big,note"
        ],
        "CSV: NULL is an empty field, the empty string is \"\""
    );
}

// ---------------------------------------------------------------------------------
// Date ranges
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn date_ranges_are_whole_days_timestamps_and_time_zones() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "4")).await;
    // Rows just before and after UTC, +03:00, -05:00 and Berlin (+01:00) midnights.
    let points: [(&str, &str); 10] = [
        ("d01", "2026-11-04T20:59:59Z"),
        ("d02", "2026-11-04T21:00:00Z"), // 2026-11-05 00:00 at +03:00
        ("d03", "2026-11-04T22:59:59Z"),
        ("d04", "2026-11-04T23:59:59Z"),
        ("d05", "2026-11-05T00:00:00Z"),
        ("d06", "2026-11-05T12:00:00Z"),
        ("d07", "2026-11-05T20:59:59Z"),
        ("d08", "2026-11-05T21:00:00Z"),
        ("d09", "2026-11-05T23:59:59Z"),
        ("d10", "2026-11-06T00:00:00Z"),
    ];
    let lines: Vec<Value> = points
        .iter()
        .map(|(id, t)| json!({"click_id": id, "event_time": t}))
        .collect();
    let batch = svc.ingest(ACME, "clicks", &lines).await;
    let batch_received = rfc3339_ms(batch["received_time"].as_str().unwrap()) / 1000;
    // Received long after the events (today), so the received dimension differs.
    let late = svc
        .ingest(
            ACME,
            "clicks",
            &[json!({"click_id": "late", "event_time": "2020-01-01T00:00:00Z"})],
        )
        .await;
    let received = rfc3339_ms(late["received_time"].as_str().unwrap()) / 1000;
    let received_day = &utc_text(received)[..10];

    let range = |since: &str, until: &str, extra: Value| {
        merged(
            &json!({"slice": "clicks", "date_since": since, "date_until": until,
                "fields": ["click_id"]}),
            extra,
        )
    };
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "one UTC day, both ends inclusive",
            range(DAY, DAY, json!({})),
            vec!["d05", "d06", "d07", "d08", "d09"],
        ),
        (
            "two UTC days",
            range("2026-11-04", DAY, json!({})),
            vec![
                "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d08", "d09",
            ],
        ),
        (
            "explicit UTC",
            range(DAY, DAY, json!({"timezone": "UTC"})),
            vec!["d05", "d06", "d07", "d08", "d09"],
        ),
        (
            "+03:00 day is [11-04 21:00Z, 11-05 21:00Z)",
            range(DAY, DAY, json!({"timezone": "+03:00"})),
            vec!["d02", "d03", "d04", "d05", "d06", "d07"],
        ),
        (
            "-05:00 day is [11-05 05:00Z, 11-06 05:00Z)",
            range(DAY, DAY, json!({"timezone": "-05:00"})),
            vec!["d06", "d07", "d08", "d09", "d10"],
        ),
        (
            "Europe/Berlin in November is +01:00",
            range(DAY, DAY, json!({"timezone": "Europe/Berlin"})),
            vec!["d04", "d05", "d06", "d07", "d08"],
        ),
        (
            "RFC 3339 bounds; until includes its second",
            range("2026-11-05T00:00:00Z", "2026-11-05T12:00:00Z", json!({})),
            vec!["d05", "d06"],
        ),
        (
            "RFC 3339 with offsets",
            range(
                "2026-11-05T02:00:00+03:00",
                "2026-11-05T03:00:00+03:00",
                json!({"timezone": "-05:00"}),
            ),
            vec!["d04", "d05"],
        ),
        (
            "one-second range",
            range("2026-11-05T12:00:00Z", "2026-11-05T12:00:00Z", json!({})),
            vec!["d06"],
        ),
        (
            "timestamps without offset are read in the request's zone",
            range(
                "2026-11-05 00:00:00",
                "2026-11-05 23:59:59",
                json!({"timezone": "+03:00"}),
            ),
            vec!["d02", "d03", "d04", "d05", "d06", "d07"],
        ),
        (
            "received dimension: today's receipt, not the 2020 event",
            range(
                received_day,
                received_day,
                json!({"date_dimension": "received"}),
            ),
            vec![
                "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d08", "d09", "d10", "late",
            ],
        ),
        (
            "received dimension excludes the event day",
            range(DAY, DAY, json!({"date_dimension": "received"})),
            vec![],
        ),
        (
            "event dimension finds the 2020 row by its event day",
            range(
                "2020-01-01",
                "2020-01-01",
                json!({"date_dimension": "event"}),
            ),
            vec!["late"],
        ),
    ];
    let requests: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let done = svc.run_exports(ACME, &requests).await;
    for ((name, req, want), (job, parts)) in cases.iter().zip(&done) {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(csv_first_column(parts), want, "{name}: {req}");
        assert_eq!(job["progress"]["rows"], want.len(), "{name}");
    }
    // The request is kept as sent, with defaults filled.
    assert_eq!(done[0].0["request"]["timezone"], "UTC");
    assert_eq!(done[0].0["request"]["date_dimension"], "event");
    assert_eq!(done[3].0["request"]["timezone"], "+03:00");
    assert_eq!(done[10].0["request"]["date_dimension"], "received");

    // Received-time bounds to the second: the second batch only.
    sleep_past_second(received).await;
    let later = svc
        .ingest(
            ACME,
            "clicks",
            &[json!({"click_id": "later", "event_time": "2020-01-01T00:00:00Z"})],
        )
        .await;
    let later_t = later["received_time"].as_str().unwrap();
    assert!(rfc3339_ms(later_t) / 1000 > received);
    let (_, parts) = svc
        .export(
            ACME,
            &range(later_t, later_t, json!({"date_dimension": "received"})),
        )
        .await;
    assert_eq!(csv_first_column(&parts), ["later"]);
    let (_, parts) = svc
        .export(
            ACME,
            &range(
                late["received_time"].as_str().unwrap(),
                late["received_time"].as_str().unwrap(),
                json!({"date_dimension": "received"}),
            ),
        )
        .await;
    // The first batch may share the second of `late`.
    let mut want: Vec<String> = vec!["late".into()];
    if batch_received == received {
        want.extend(points.iter().map(|(id, _)| id.to_string()));
    }
    want.sort();
    assert_eq!(csv_first_column(&parts), want);
}

// ---------------------------------------------------------------------------------
// The epoch and rows that look like errors
// ---------------------------------------------------------------------------------

/// The epoch is a valid `Date` and `DateTime` (ingest accepts it, and it is what an
/// omitted non-nullable date field defaults to): it must come back as 1970-01-01, the
/// same on every server version, not as ClickHouse 18.x's `0000-00-00`.
#[tokio::test]
async fn epoch_dates_come_back_as_1970_01_01() {
    let schemas = typed_schema_dir();
    let svc = Service::start_with(
        Options::default().env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap()),
    )
    .await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "epoch", "event_time": "1970-01-01T00:00:00Z", "lp_click_time": 0})],
    )
    .await;
    svc.ingest(
        ACME,
        "typed",
        &[
            json!({"label": "explicit", "event_time": "1970-01-01 00:00:00", "day": "1970-01-01"}),
            json!({"label": "omitted", "event_time": 0}),
        ],
    )
    .await;
    let day = "1970-01-01";
    let (_, parts) = svc
        .export(
            ACME,
            &json!({"slice": "clicks", "date_since": day, "date_until": day,
                "fields": ["click_id", "event_time", "lp_click_time"]}),
        )
        .await;
    let (_, rows) = parse_csv(&parts[0]);
    assert_eq!(
        rows,
        [["epoch", "1970-01-01 00:00:00", "1970-01-01 00:00:00"]]
    );
    let (_, parts) = svc
        .export(
            ACME,
            &json!({"slice": "typed", "date_since": day, "date_until": day,
                "fields": ["label", "event_time", "day"], "format": "jsonl"}),
        )
        .await;
    let mut records = parse_jsonl(&parts[0]);
    records.sort_by_key(|r| r["label"].as_str().unwrap().to_string());
    assert_eq!(
        records,
        [
            json!({"label": "explicit", "event_time": "1970-01-01 00:00:00", "day": "1970-01-01"}),
            json!({"label": "omitted", "event_time": "1970-01-01 00:00:00", "day": "1970-01-01"}),
        ]
    );
}

/// Data that looks like the exception text ClickHouse 18.x appends to a broken stream
/// is still data, in every format and wherever it sits in the result.
#[tokio::test]
async fn rows_that_look_like_server_errors_are_data() {
    let svc = Service::start().await;
    let fake = "Code: 241, e.displayText() = DB::Exception: Memory limit exceeded, e.what() = DB::Exception";
    let lines: Vec<Value> = (0..3)
        .map(|i| json!({"click_id": format!("{fake} #{i}"), "event_time": format!("{DAY}T0{i}:00:00Z"), "sub1": fake}))
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;
    let mut want: Vec<String> = (0..3).map(|i| format!("{fake} #{i}")).collect();
    want.sort();
    let requests: Vec<Value> = ["csv", "tsv", "jsonl", "json"]
        .iter()
        .flat_map(|f| {
            [None, Some(1)].map(|max| {
                let mut r = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
                    "fields": ["click_id", "sub1"], "format": f});
                if let Some(m) = max {
                    r["part_max_rows"] = json!(m);
                }
                r
            })
        })
        .collect();
    let mut ids = Vec::new();
    for r in &requests {
        ids.push(id_of(&svc.create_export(ACME, r).await));
    }
    for (r, id) in requests.iter().zip(ids) {
        let job = svc.wait_export(ACME, &id).await;
        assert_eq!(job["status"], "succeeded", "{r}: {job}");
        let (_, parts) = svc.finish_export(ACME, &id).await;
        let mut got: Vec<String> = match r["format"].as_str().unwrap() {
            "csv" => csv_parts(&parts)
                .1
                .into_iter()
                .map(|row| row[0].clone())
                .collect(),
            "tsv" => tsv_parts(&parts)
                .1
                .into_iter()
                .map(|row| row[0].clone().unwrap())
                .collect(),
            "jsonl" => parts
                .iter()
                .flat_map(|p| parse_jsonl(p))
                .map(|v| v["click_id"].as_str().unwrap().to_string())
                .collect(),
            _ => parts
                .iter()
                .flat_map(|p| parse_json_doc(p))
                .map(|v| v["click_id"].as_str().unwrap().to_string())
                .collect(),
        };
        got.sort();
        assert_eq!(got, want, "{r}");
    }
}
