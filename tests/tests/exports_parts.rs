//! The files of an export: parts, limits and empty results, compression, the byte
//! order mark, part_max_bytes and Parquet parts.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;

use logport_tests::*;

/// The day most test rows happen on; 2026-11-05T00:00:00Z is Unix 1_793_836_800.
const DAY: &str = "2026-11-05";

// ---------------------------------------------------------------------------------
// Parts, limit, empty results
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn parts_limits_and_empty_results() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "4")).await;
    // Ten rows; some values span lines, so parts must be cut at record boundaries.
    let lines: Vec<Value> = (0..10)
        .map(|i| {
            json!({"click_id": format!("p{i}"), "event_time": format!("{DAY}T{i:02}:00:00Z"),
                "sub1": NASTY[(i * 5) % NASTY.len()], "sub2": "x\ny\r\n\"z\"", "cost": i})
        })
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;
    let all: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let fields = json!(["click_id", "sub1", "sub2", "cost"]);
    let req = |format: &str, extra: Value| {
        merged(
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
                "fields": fields, "format": format}),
            extra,
        )
    };
    let cases: Vec<(Value, Vec<u64>)> = vec![
        (req("csv", json!({"part_max_rows": 3})), vec![3, 3, 3, 1]),
        (req("tsv", json!({"part_max_rows": 3})), vec![3, 3, 3, 1]),
        (req("jsonl", json!({"part_max_rows": 3})), vec![3, 3, 3, 1]),
        (req("json", json!({"part_max_rows": 3})), vec![3, 3, 3, 1]),
        (req("csv", json!({"part_max_rows": 5})), vec![5, 5]),
        (req("json", json!({"part_max_rows": 10})), vec![10]),
        (req("csv", json!({"part_max_rows": 1})), vec![1; 10]),
        (req("csv", json!({"part_max_rows": 1_000_000})), vec![10]),
        (req("jsonl", json!({"limit": 4})), vec![4]),
        (
            req("csv", json!({"limit": 4, "part_max_rows": 3})),
            vec![3, 1],
        ),
        (req("csv", json!({"limit": 100})), vec![10]),
        (
            req("json", json!({"limit": 10, "part_max_rows": 5})),
            vec![5, 5],
        ),
    ];
    let requests: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();
    let done = svc.run_exports(ACME, &requests).await;
    for ((req, sizes), (job, parts)) in cases.iter().zip(&done) {
        let format = req["format"].as_str().unwrap();
        let listed: Vec<u64> = job["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rows"].as_u64().unwrap())
            .collect();
        assert_eq!(&listed, sizes, "{req}");
        let ns: Vec<u64> = job["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (1..=sizes.len() as u64).collect::<Vec<_>>());
        assert_eq!(job["progress"]["parts"], sizes.len(), "{job}");
        let mut ids = Vec::new();
        for (part, want) in parts.iter().zip(sizes) {
            let part_ids: Vec<String> = match format {
                "csv" => {
                    let (h, rows) = parse_csv(part);
                    assert_eq!(h, ["click_id", "sub1", "sub2", "cost"]);
                    rows.into_iter().map(|r| r[0].clone()).collect()
                }
                "tsv" => {
                    let (h, rows) = parse_tsv(part);
                    assert_eq!(h, ["click_id", "sub1", "sub2", "cost"]);
                    rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
                }
                "jsonl" => parse_jsonl(part)
                    .iter()
                    .map(|r| r["click_id"].as_str().unwrap().to_string())
                    .collect(),
                _ => parse_json_doc(part)
                    .iter()
                    .map(|r| r["click_id"].as_str().unwrap().to_string())
                    .collect(),
            };
            assert_eq!(part_ids.len() as u64, *want, "{req}");
            ids.extend(part_ids);
        }
        let total: u64 = sizes.iter().sum();
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len() as u64, total, "no row twice: {req}");
        if total == 10 {
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, all, "{req}");
        } else {
            assert!(ids.iter().all(|i| all.contains(i)));
        }
    }
    // Parts of one export have their own names and checksums.
    let (job, _) = &done[0];
    let id = id_of(job);
    for n in 1..=4 {
        let resp = send(svc.get(&format!("/v1/exports/{id}/parts/{n}"), ACME)).await;
        assert_eq!(
            header(&resp, "content-disposition").as_deref(),
            Some(format!("attachment; filename=\"{id}-part-{n:05}.csv\"").as_str())
        );
    }
    let manifest = svc
        .get_ok_json(&format!("/v1/exports/{id}/manifest"), ACME)
        .await;
    let rows: Vec<u64> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, [3, 3, 3, 1]);
    assert_eq!(manifest["totals"]["rows"], 10);
    assert_eq!(manifest["totals"]["parts"], 4);

    // An empty result is one header-only part with zero rows.
    let empty = |format: &str| {
        json!({"slice": "clicks", "date_since": "2026-11-01", "date_until": "2026-11-02",
            "fields": ["click_id", "cost"], "format": format, "part_max_rows": 3})
    };
    let done = svc
        .run_exports(
            ACME,
            &[empty("csv"), empty("tsv"), empty("jsonl"), empty("json")],
        )
        .await;
    for (format, (job, parts)) in ["csv", "tsv", "jsonl", "json"].iter().zip(&done) {
        assert_eq!(parts.len(), 1, "{format}: {job}");
        assert_eq!(job["parts"][0]["rows"], 0);
        assert_eq!(job["progress"]["rows"], 0);
        let text = String::from_utf8(parts[0].clone()).unwrap();
        match *format {
            "csv" => assert_eq!(text, "click_id,cost\n"),
            "tsv" => assert_eq!(text, "click_id\tcost\n"),
            "jsonl" => assert_eq!(text, ""),
            _ => assert!(parse_json_doc(&parts[0]).is_empty(), "{text:?}"),
        }
    }
}

/// The number of parts is capped (`LOGPORT_EXPORT_MAX_PARTS`, 10,000 by default): a
/// request whose part limits would pass it is refused at once with a 422 naming the
/// limit (`part_max_rows: 1` over 20,000 rows once wrote 20,000 files), evaluate says
/// why it is not possible, a legitimate multi-part export still works, and an export
/// whose bytes estimate was off fails for good at the cap instead of writing on.
#[tokio::test]
async fn part_limits_that_would_pass_the_part_cap_are_refused() {
    let mut svc = Service::start().await;
    let rows: Vec<Value> = (0..20_000)
        .map(|i| {
            json!({"click_id": format!("c{i:05}"),
                "event_time": format!("{DAY}T{:02}:{:02}:{:02}Z", i / 3600, (i / 60) % 60, i % 60)})
        })
        .collect();
    svc.ingest(ACME, "clicks", &rows).await;
    let req = |extra: Value| {
        merged(
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
                "fields": ["click_id"]}),
            extra,
        )
    };

    let one_per_part = req(json!({"part_max_rows": 1}));
    let resp = send(svc.post("/v1/exports", ACME).json(&one_per_part)).await;
    let body = expect_problem(resp, 422, Some("part_max_rows")).await;
    assert_eq!(body["type"], "/problems/invalid-request");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("20000 parts")
            && detail.contains("at most 10000 parts")
            && detail.contains("at least 2"),
        "{detail}"
    );
    let e = json_answer(
        send(svc.post("/v1/exports/evaluate", ACME).json(&one_per_part)).await,
        200,
    )
    .await;
    assert_eq!(e["possible"], false, "{e}");
    assert_eq!(e["estimated_rows"], 20_000);
    assert_eq!(
        e["reason"], detail,
        "evaluate and create give the same reason"
    );
    // A limit that keeps the parts under the cap needs no count.
    let limited = req(json!({"part_max_rows": 1, "limit": 3}));
    let (job, parts) = svc.export(ACME, &limited).await;
    assert_eq!(parts.len(), 3, "{job}");
    // A legitimate multi-part export.
    let (job, parts) = svc.export(ACME, &req(json!({"part_max_rows": 5000}))).await;
    assert_eq!(parts.len(), 4, "{job}");
    let (_, all) = csv_parts(&parts);
    assert_eq!(all.len(), 20_000);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 20_000);
    let list = svc.get_ok_json("/v1/exports", ACME).await;
    assert_eq!(
        list["exports"].as_array().unwrap().len(),
        2,
        "nothing else queued"
    );

    // A cap of 3 parts.
    svc.restart_with(Options::default().env("LOGPORT_EXPORT_MAX_PARTS", "3"))
        .await;
    // Bytes: 20,000 timestamps are far more than 3 KiB.
    let by_bytes = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
        "fields": ["event_time"], "part_max_bytes": 1024});
    let resp = send(svc.post("/v1/exports", ACME).json(&by_bytes)).await;
    let body = expect_problem(resp, 422, Some("part_max_bytes")).await;
    assert!(
        body["detail"].as_str().unwrap().contains("at most 3 parts"),
        "{body}"
    );
    // 200 rows: the estimate (from ClickHouse's 4-byte DateTime column) fits 3 parts
    // of 1 KiB, but as CSV text each row takes 22 bytes, 4.4 KB in all. The export
    // stops at the cap and fails for good.
    let mut underestimated = by_bytes.clone();
    underestimated["limit"] = json!(200);
    let created = svc.create_export(ACME, &underestimated).await;
    let job = svc.wait_export(ACME, &id_of(&created)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "too_many_parts", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 3 parts"),
        "{job}"
    );
    assert_eq!(job["attempts"], 1, "not retried: {job}");
    assert_eq!(
        job["parts"].as_array().unwrap().len(),
        3,
        "never a 4th: {job}"
    );
    // Within the cap all is as before.
    let (job, parts) = svc
        .export(ACME, &req(json!({"part_max_rows": 10_000})))
        .await;
    assert_eq!(parts.len(), 2, "{job}");
}

// ---------------------------------------------------------------------------------
// Compression, byte order mark, part_max_bytes, Parquet
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn compressed_bom_byte_split_and_parquet_parts() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "4")).await;
    let lines: Vec<Value> = (0..10)
        .map(|i| {
            json!({"click_id": format!("c{i}"), "event_time": format!("{DAY}T{i:02}:00:00Z"),
                "sub1": format!("{}{}", NASTY[i], "x".repeat(200)), "cost": f64::from(i as u8) / 8.0,
                "app_id": u64::MAX - i as u64})
        })
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;
    let fields = json!(["click_id", "sub1", "cost", "app_id", "lp_click_time"]);
    let req = |extra: Value| {
        merged(
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": fields}),
            extra,
        )
    };
    let requests = [
        req(json!({})),
        req(json!({"compression": "gzip"})),
        req(json!({"compression": "zstd", "part_max_rows": 4})),
        req(json!({"format": "jsonl", "compression": "gzip"})),
        req(json!({"utf8_bom": true, "part_max_rows": 6})),
        req(json!({"format": "tsv", "utf8_bom": true})),
        req(json!({"part_max_bytes": 1024})),
        req(json!({"format": "parquet"})),
        req(json!({"format": "parquet", "part_max_rows": 4})),
    ];
    let done = svc.run_exports(ACME, &requests).await;
    let (_, plain_parts) = &done[0];
    let (plain_header, mut plain_rows) = csv_parts(plain_parts);
    plain_rows.sort();
    assert_eq!(plain_rows.len(), 10);

    // gzip: one valid gzip stream per part, the same CSV inside.
    let (job, parts) = &done[1];
    let id = id_of(job);
    let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
    assert_file_headers(
        &resp,
        "application/gzip",
        &format!("{id}-part-00001.csv.gz"),
    );
    let (h, mut rows) = parse_csv(&gunzip(&parts[0]));
    rows.sort();
    assert_eq!((h, rows), (plain_header.clone(), plain_rows.clone()));
    let manifest = svc
        .get_ok_json(&format!("/v1/exports/{id}/manifest"), ACME)
        .await;
    assert_eq!(manifest["compression"], "gzip");
    assert_eq!(manifest["parts"][0]["file"], "part-00001.csv.gz");
    // The part's bytes and sha256 are those of the compressed file.
    assert_eq!(job["parts"][0]["bytes"], parts[0].len());

    // zstd, split: each part its own zstd frame with a header row.
    let (job, parts) = &done[2];
    assert_eq!(parts.len(), 3, "{job}");
    let id = id_of(job);
    let resp = send(svc.get(&format!("/v1/exports/{id}/parts/3"), ACME)).await;
    assert_file_headers(
        &resp,
        "application/zstd",
        &format!("{id}-part-00003.csv.zst"),
    );
    let decoded: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| zstd::decode_all(&p[..]).unwrap())
        .collect();
    let (h, mut rows) = csv_parts(&decoded);
    rows.sort();
    assert_eq!((h, rows), (plain_header.clone(), plain_rows.clone()));

    // jsonl.gz
    let (_, parts) = &done[3];
    let records = parse_jsonl(&gunzip(&parts[0]));
    assert_eq!(records.len(), 10);
    assert!(records.iter().all(|r| r["lp_click_time"].is_null()));

    // A UTF-8 BOM starts every CSV/TSV part, then the header.
    let bom = "\u{feff}".as_bytes();
    let (_, parts) = &done[4];
    assert_eq!(parts.len(), 2);
    let mut rows = Vec::new();
    for p in parts {
        assert!(p.starts_with(bom), "BOM in every part");
        let (h, r) = parse_csv(&p[3..]);
        assert_eq!(h, plain_header);
        rows.extend(r);
    }
    rows.sort();
    assert_eq!(rows, plain_rows);
    let (_, parts) = &done[5];
    assert!(parts[0].starts_with(bom));
    let (h, r) = parse_tsv(&parts[0][3..]);
    assert_eq!(h, plain_header);
    assert_eq!(r.len(), 10);

    // part_max_bytes: a part is closed at the first record boundary past the limit.
    let (job, parts) = &done[6];
    assert!(parts.len() > 1, "{job}");
    let header_len = plain_header.join(",").len() + 1;
    let longest = lines
        .iter()
        .map(|l| l.to_string().len() + 64)
        .max()
        .unwrap();
    let mut rows = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            p.len() < 1024 + longest + header_len,
            "part {i}: {}",
            p.len()
        );
        if i + 1 < parts.len() {
            assert!(p.len() >= 1024, "part {i} closed early: {}", p.len());
        }
        let (h, r) = parse_csv(p);
        assert_eq!(h, plain_header);
        assert!(!r.is_empty());
        rows.extend(r);
    }
    rows.sort();
    assert_eq!(rows, plain_rows);

    // Parquet: a real Parquet file per part, counted rows.
    for (i, sizes) in [(7, vec![10]), (8, vec![4, 4, 2])] {
        let (job, parts) = &done[i];
        let listed: Vec<u64> = job["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rows"].as_u64().unwrap())
            .collect();
        assert_eq!(listed, sizes, "{job}");
        for p in parts {
            assert!(
                p.starts_with(b"PAR1") && p.ends_with(b"PAR1"),
                "Parquet magic"
            );
        }
        let id = id_of(job);
        let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
        assert_file_headers(
            &resp,
            "application/vnd.apache.parquet",
            &format!("{id}-part-00001.parquet"),
        );
    }
}
