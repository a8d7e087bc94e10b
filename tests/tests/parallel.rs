//! Large exports read by several ClickHouse queries at once, one part each.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;

use logport_tests::*;

/// 600 clicks over 6 hours of one day, 100 an hour.
fn clicks() -> Vec<Value> {
    (0..600)
        .map(|i| {
            json!({
                "click_id": format!("c{i:04}"),
                "event_time": 1_793_491_200 + (i / 100) * 3600 + (i % 100),
                "country_code": if i % 3 == 0 { "US" } else { "DE" },
                "cost": i as f64 / 8.0,
                "lp_click_time": if i % 5 == 0 { Value::Null } else { json!(1_793_491_200 + i) },
            })
        })
        .collect()
}

async fn start() -> Service {
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_EXPORT_PARALLELISM", "3")
            .env("LOGPORT_EXPORT_PARALLEL_MIN_ROWS", "100"),
    )
    .await;
    svc.ingest(ACME, "clicks", &clicks()).await;
    svc.ingest(GLOBEX, "clicks", &clicks()[..50]).await;
    svc
}

fn request(extra: Value) -> Value {
    merged(
        &json!({"slice": "clicks", "date_since": "2026-11-01", "date_until": "2026-11-01",
            "fields": ["click_id", "event_time", "country_code", "cost", "lp_click_time"]}),
        extra,
    )
}

#[tokio::test]
async fn a_large_export_is_read_in_parallel_into_disjoint_parts() {
    let svc = start().await;
    for format in ["csv", "jsonl", "tsv", "json"] {
        let (job, parts) = svc.export(ACME, &request(json!({"format": format}))).await;
        assert_eq!(parts.len(), 3, "{format}: one part per reader: {job}");
        assert_eq!(job["progress"]["rows"], 600, "{format}");
        let mut ids = Vec::new();
        for (i, body) in parts.iter().enumerate() {
            assert_eq!(job["parts"][i]["n"], i + 1);
            let rows: Vec<String> = match format {
                "csv" => parse_csv(body)
                    .1
                    .into_iter()
                    .map(|r| r[0].clone())
                    .collect(),
                "jsonl" => parse_jsonl(body)
                    .iter()
                    .map(|v| v["click_id"].as_str().unwrap().to_string())
                    .collect(),
                "json" => serde_json::from_slice::<Value>(body).unwrap()["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["click_id"].as_str().unwrap().to_string())
                    .collect(),
                _ => std::str::from_utf8(body)
                    .unwrap()
                    .lines()
                    .skip(1)
                    .map(|l| l.split('\t').next().unwrap().to_string())
                    .collect(),
            };
            assert_eq!(rows.len() as u64, job["parts"][i]["rows"].as_u64().unwrap());
            ids.extend(rows);
        }
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), 600, "{format}: every row once");
        assert_eq!(unique.len(), 600, "{format}: no row twice");
    }
}

#[tokio::test]
async fn parquet_is_read_in_parallel_too() {
    let svc = start().await;
    let (job, parts) = svc
        .export(ACME, &request(json!({"format": "parquet"})))
        .await;
    assert_eq!(parts.len(), 3, "{job}");
    let rows: u64 = job["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 600);
    for p in &parts {
        assert_eq!(&p[..4], b"PAR1");
        assert_eq!(&p[p.len() - 4..], b"PAR1");
    }
}

#[tokio::test]
async fn limits_and_single_file_keep_one_reader() {
    let svc = start().await;
    let (job, parts) = svc
        .export(ACME, &request(json!({"single_file": true})))
        .await;
    assert_eq!(parts.len(), 1, "{job}");
    assert_eq!(parse_csv(&parts[0]).1.len(), 600);
    let (job, parts) = svc
        .export(ACME, &request(json!({"part_max_rows": 250})))
        .await;
    assert_eq!(
        job["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rows"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [250, 250, 100],
        "{job}"
    );
    assert_eq!(parts.len(), 3);
    let (_, parts) = svc.export(ACME, &request(json!({"limit": 420}))).await;
    assert_eq!(parts.len(), 1);
    assert_eq!(parse_csv(&parts[0]).1.len(), 420);
    // A small result is one part whatever the settings.
    let (job, parts) = svc.export(GLOBEX, &request(json!({"format": "csv"}))).await;
    assert_eq!(parts.len(), 1, "{job}");
    assert_eq!(parse_csv(&parts[0]).1.len(), 50);
}
