//! `logport gen` and `logport ingest`: synthetic data, loaded through the API.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;
use std::time::Duration;

use logport_tests::*;

fn logport(args: &[&str]) -> std::process::Output {
    Command::new(logport_bin())
        .args(args)
        .env_remove("LOGPORT_TOKEN")
        .env_remove("LOGPORT_URL")
        .output()
        .unwrap()
}

fn gen(dir: &std::path::Path, slice: &str, rows: u64, extra: &[&str]) -> std::path::PathBuf {
    let ext = if extra.contains(&"csv") {
        "csv"
    } else {
        "ndjson"
    };
    let path = dir.join(format!("{slice}.{ext}"));
    let rows = rows.to_string();
    let mut args = vec!["gen", "--slice", slice, "--rows", &rows, "--seed", "5"];
    args.extend_from_slice(extra);
    let p = path.display().to_string();
    args.extend_from_slice(&["--out", &p]);
    let out = logport(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn ingest(svc: &Service, file: &std::path::Path, slice: &str, batch: &str) -> std::process::Output {
    logport(&[
        "ingest",
        &file.display().to_string(),
        "--slice",
        slice,
        "--url",
        &svc.base,
        "--token",
        ACME,
        "--batch-rows",
        batch,
        "--quiet",
    ])
}

#[tokio::test]
async fn generated_data_loads_once_even_when_loaded_twice() {
    let svc = Service::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clicks = gen(dir.path(), "clicks", 5000, &[]);
    let out = ingest(&svc, &clicks, "clicks", "700");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("5000 events stored"));
    assert_eq!(svc.count("clicks", "acme"), 5000);
    // Running the same load again resumes nothing and doubles nothing.
    let again = ingest(&svc, &clicks, "clicks", "700");
    assert!(again.status.success());
    assert_eq!(svc.count("clicks", "acme"), 5000);

    // Conversions generated with the same seed refer to clicks that exist.
    let conversions = gen(dir.path(), "conversions", 300, &["--parent-rows", "5000"]);
    assert!(ingest(&svc, &conversions, "conversions", "100")
        .status
        .success());
    let linked = svc.clickhouse(&format!(
        "SELECT count() FROM {db}.conversions WHERE click_id IN (SELECT click_id FROM {db}.clicks)",
        db = svc.database
    ));
    assert_eq!(
        linked.trim(),
        "300",
        "every conversion names a generated click"
    );
    // The data looks like traffic: many countries, mostly US, some bots.
    let countries = svc.clickhouse(&format!(
        "SELECT uniqExact(country_code), countIf(country_code = 'US') > 1000, \
         countIf(is_bot = 1) BETWEEN 50 AND 600 FROM {}.clicks",
        svc.database
    ));
    let parts: Vec<&str> = countries.split_whitespace().collect();
    assert!(parts[0].parse::<u32>().unwrap() >= 15, "{countries}");
    assert_eq!(&parts[1..], ["1", "1"], "{countries}");
}

#[tokio::test]
async fn every_slice_can_be_generated_and_loaded_as_csv_and_gzip() {
    let svc = Service::start().await;
    let dir = tempfile::tempdir().unwrap();
    for slice in [
        "postbacks",
        "installations",
        "events",
        // (Not `activity`: the service writes its own audit rows there.)
        "sessions_starts",
        "profiles",
    ] {
        let csv = gen(dir.path(), slice, 200, &["--format", "csv"]);
        let out = ingest(&svc, &csv, slice, "64");
        assert!(
            out.status.success(),
            "{slice}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(svc.count(slice, "acme"), 200, "{slice}");
    }
    // A gzip file is recognised by its magic bytes.
    let ndjson = gen(dir.path(), "crashes", 300, &[]);
    let gz = dir.path().join("crashes.ndjson.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &std::fs::read(&ndjson).unwrap()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    assert!(ingest(&svc, &gz, "crashes", "50").status.success());
    assert_eq!(svc.count("crashes", "acme"), 300);
}

#[tokio::test]
async fn a_load_survives_the_service_restarting_under_it() {
    let mut svc = Service::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clicks = gen(dir.path(), "clicks", 20_000, &[]);
    let child = std::process::Command::new(logport_bin())
        .args([
            "ingest",
            &clicks.display().to_string(),
            "--slice",
            "clicks",
            "--url",
            &svc.base,
            "--token",
            ACME,
            "--batch-rows",
            "250",
            "--concurrency",
            "2",
            "--quiet",
        ])
        .spawn()
        .unwrap();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        svc.restart().await;
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        svc.count("clicks", "acme"),
        20_000,
        "nothing lost or doubled"
    );
}

#[tokio::test]
async fn bad_records_stop_the_load_with_the_server_detail() {
    let svc = Service::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.ndjson");
    std::fs::write(
        &file,
        "{\"click_id\":\"a\",\"event_time\":1}\n{\"click_id\":\"b\",\"nope\":1}\n",
    )
    .unwrap();
    let out = ingest(&svc, &file, "clicks", "10");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("422") && err.contains("nope"), "{err}");
    assert_eq!(svc.count("clicks", "acme"), 0);
    let out = logport(&["gen", "--slice", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown slice"));
}
