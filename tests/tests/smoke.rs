//! The backbone end to end: ingest → ClickHouse → export → download.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use logport_tests::*;

#[tokio::test]
async fn ingest_export_download() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "c1", "event_time": "2026-11-05T10:00:00Z", "country_code": "US"})],
    )
    .await;
    let (job, parts) = svc
        .export(
            ACME,
            &json!({"slice": "clicks", "date_since": "2026-11-05", "date_until": "2026-11-05",
                    "fields": ["event_time", "click_id", "country_code"]}),
        )
        .await;
    assert_eq!(job["progress"]["rows"], 1);
    let (header, rows) = parse_csv(&parts[0]);
    assert_eq!(header, ["event_time", "click_id", "country_code"]);
    assert_eq!(rows, [["2026-11-05 10:00:00", "c1", "US"]]);
}
