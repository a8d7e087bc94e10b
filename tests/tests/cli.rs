//! The command-line client (`logport export`, `download`, `jobs`, `cancel`): the real
//! binary against a real service, with none of the server's configuration around it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use logport_tests::*;

const DAY: &str = "2026-11-05";

/// Runs `logport ARGS` as a client on a machine with no usable server configuration:
/// a broken `logport.toml` in the working directory and server variables `serve`
/// would refuse. Server and token come from LOGPORT_URL / LOGPORT_TOKEN.
fn client(base: &str, token: &str, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("logport.toml"), "this is = not [valid").unwrap();
    Command::new(logport_bin())
        .args(args)
        .current_dir(cwd.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOGPORT_URL", base)
        .env("LOGPORT_TOKEN", token)
        .env("LOGPORT_WORKERS", "many")
        .env("LOGPORT_CLICKHOUSE_URL", "not-a-url")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[track_caller]
fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Fails with exit status 1 and a message containing every one of `says`.
#[track_caller]
fn fails(o: Output, says: &[&str]) {
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{}\n{err}", stdout(&o));
    for s in says {
        assert!(err.contains(s), "expected `{s}` in:\n{err}");
    }
}

/// 300 clicks: country by i % 3 (US, DE, FR), cost i / 100.
fn clicks() -> Vec<Value> {
    (0..300)
        .map(|i: u32| {
            let country = ["US", "DE", "FR"][i as usize % 3];
            json!({"click_id": format!("c{i:03}"),
                   "event_time": format!("{DAY}T{:02}:{:02}:00Z", i / 60 * 2, i % 60),
                   "country_code": country, "cost": f64::from(i) / 100.0})
        })
        .collect()
}

/// The click ids of `clicks()` that are in US or DE and cost at least 1.
fn expected_ids() -> BTreeSet<String> {
    (0..300usize)
        .filter(|i| i % 3 != 2 && *i >= 100)
        .map(|i| format!("c{i:03}"))
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn export_waits_then_downloads_every_part_verified() {
    let svc = Service::start().await;
    svc.ingest(ACME, "clicks", &clicks()).await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("csv");
    let o = ok(client(
        &svc.base,
        ACME,
        &[
            "export",
            "--slice",
            "clicks",
            "--since",
            DAY,
            "--until",
            DAY,
            "--fields",
            "event_time,click_id,country_code",
            "--filter",
            "country_code in US,DE",
            "--filter",
            "cost gte 1",
            "--compression",
            "gzip",
            "--part-max-rows",
            "50",
            "--wait",
            "--out",
            dir.to_str().unwrap(),
        ],
    ));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    let id = lines[0].clone();
    assert_eq!(id.len(), 32, "{lines:?}");
    let err = stderr(&o);
    let want = expected_ids();
    assert!(
        err.contains(&format!(
            "export {id} succeeded: {} rows in 3 file(s)",
            want.len()
        )),
        "{err}"
    );
    assert!(err.contains("SHA-256 verified"), "{err}");

    let (_, job) = svc.get_json(&format!("/v1/exports/{id}"), ACME).await;
    assert_eq!(
        job["request"]["filters"],
        json!([{"field": "country_code", "op": "in", "values": ["US", "DE"]},
               {"field": "cost", "op": "gte", "value": 1.0}])
    );
    let parts = job["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(
        files_in(&dir),
        [
            "part-00001.csv.gz",
            "part-00002.csv.gz",
            "part-00003.csv.gz"
        ],
        "no partial files left"
    );
    // Standard output lists the saved files, in order.
    let listed: Vec<String> = parts
        .iter()
        .map(|p| dir.join(p["file"].as_str().unwrap()).display().to_string())
        .collect();
    assert_eq!(lines[1..], listed[..]);
    let mut ids = BTreeSet::new();
    for p in parts {
        let bytes = std::fs::read(dir.join(p["file"].as_str().unwrap())).unwrap();
        assert_eq!(sha256_hex(&bytes), p["sha256"]);
        let (header, rows) = parse_csv(&gunzip(&bytes));
        assert_eq!(header, ["event_time", "click_id", "country_code"]);
        for r in rows {
            assert!(r[2] == "US" || r[2] == "DE", "{r:?}");
            assert!(ids.insert(r[1].clone()), "{} twice", r[1]);
        }
    }
    assert_eq!(ids, want);

    // Running it again finds the files complete and fetches nothing.
    let o = ok(client(
        &svc.base,
        ACME,
        &["download", &id, "--out", dir.to_str().unwrap()],
    ));
    assert_eq!(
        stderr(&o).matches(": already downloaded").count(),
        3,
        "{}",
        stderr(&o)
    );

    // Parquet, the example.
    let pq = out.path().join("parquet");
    let o = ok(client(
        &svc.base,
        ACME,
        &[
            "export",
            "--slice",
            "clicks",
            "--since",
            "2026-11-01",
            "--until",
            "2026-11-07",
            "--fields",
            "event_time,click_id",
            "--filter",
            "country_code in US,DE",
            "--format",
            "parquet",
            "--wait",
            "--out",
            pq.to_str().unwrap(),
        ],
    ));
    assert!(
        stderr(&o).contains("succeeded: 200 rows in 1 file(s)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(files_in(&pq), ["part-00001.parquet"]);
    let bytes = std::fs::read(pq.join("part-00001.parquet")).unwrap();
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));

    // A finished export cannot be canceled: the problem, and exit status 1.
    fails(
        client(&svc.base, ACME, &["cancel", &id]),
        &["409 Conflict: export", "is already succeeded"],
    );
}

#[tokio::test]
async fn download_resumes_a_partial_file_and_replaces_a_damaged_one() {
    let svc = Service::start().await;
    svc.ingest(ACME, "clicks", &clicks()).await;
    let (job, parts) = svc
        .export(
            ACME,
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "format": "jsonl"}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let whole = &parts[0];
    assert!(whole.len() > 10_000, "{}", whole.len());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("part-00001.jsonl");
    let partial = dir.path().join("part-00001.jsonl.partial");
    let download = || {
        client(
            &svc.base,
            ACME,
            &["download", id, "--out", dir.path().to_str().unwrap()],
        )
    };

    // An interrupted download left the first 4,000 bytes: a Range request finishes it.
    std::fs::write(&partial, &whole[..4000]).unwrap();
    let o = ok(download());
    let err = stderr(&o);
    assert!(
        err.contains("part-00001.jsonl: resuming at byte 4000"),
        "{err}"
    );
    assert!(!err.contains("again"), "{err}");
    assert_eq!(&std::fs::read(&target).unwrap(), whole);
    assert!(!partial.exists());

    // A damaged partial file: resumed, found wrong by its SHA-256, fetched again whole.
    std::fs::remove_file(&target).unwrap();
    let mut damaged = whole[..4000].to_vec();
    damaged[10] ^= 0x20;
    std::fs::write(&partial, &damaged).unwrap();
    let o = ok(download());
    let err = stderr(&o);
    assert!(err.contains("resuming at byte 4000"), "{err}");
    assert!(
        err.contains("does not match the server's") && err.contains("downloading it again"),
        "{err}"
    );
    assert_eq!(&std::fs::read(&target).unwrap(), whole);
    assert!(!partial.exists());

    // A partial file longer than the part, and a finished file that is wrong.
    std::fs::remove_file(&target).unwrap();
    let mut long = whole.clone();
    long.extend_from_slice(b"garbage");
    std::fs::write(&partial, &long).unwrap();
    ok(download());
    assert_eq!(&std::fs::read(&target).unwrap(), whole);
    std::fs::write(&target, b"not the file").unwrap();
    let o = ok(download());
    assert!(
        stderr(&o).contains("the file there does not match; downloading it again"),
        "{}",
        stderr(&o)
    );
    assert_eq!(&std::fs::read(&target).unwrap(), whole);
    assert_eq!(files_in(dir.path()), ["part-00001.jsonl"]);
}

#[tokio::test]
async fn jobs_lists_and_cancel_stops_an_export() {
    // No workers: exports stay queued until canceled.
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let o = ok(client(
        &svc.base,
        ACME,
        &[
            "export", "--slice", "clicks", "--since", DAY, "--until", DAY,
        ],
    ));
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        stderr(&o).contains(&format!("export {id} is queued")),
        "{}",
        stderr(&o)
    );

    let table = stdout(&ok(client(&svc.base, ACME, &["jobs"])));
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID "), "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&id) && row.contains("queued") && row.contains("clicks"),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&stdout(&ok(client(&svc.base, ACME, &["jobs", "--json"])))).unwrap();
    assert_eq!(json["exports"][0]["id"], id.as_str());
    // Another tenant sees none of it.
    let o = ok(client(&svc.base, GLOBEX, &["jobs"]));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("no exports"));

    let o = ok(client(&svc.base, ACME, &["cancel", &id]));
    assert_eq!(stdout(&o).trim(), format!("export {id} is canceled"));
    let table = stdout(&ok(client(
        &svc.base,
        ACME,
        &["jobs", "--status", "canceled", "--slice", "clicks"],
    )));
    assert!(table.contains(&id), "{table}");
    let o = ok(client(&svc.base, ACME, &["jobs", "--status", "queued"]));
    assert!(!stdout(&o).contains(&id));
    fails(
        client(&svc.base, ACME, &["download", &id, "--out", "files"]),
        &[&format!("export {id} was canceled")],
    );
    fails(
        client(&svc.base, ACME, &["jobs", "--status", "done"]),
        &["400 Malformed request: status must be one of"],
    );
}

#[tokio::test]
async fn client_errors_print_the_problem_and_exit_non_zero() {
    let svc = Service::start().await;
    let export = |token: &str, extra: &[&str]| {
        let mut args = vec![
            "export", "--slice", "clicks", "--since", DAY, "--until", DAY,
        ];
        args.extend_from_slice(extra);
        client(&svc.base, token, &args)
    };
    fails(
        export("wrong-token", &[]),
        &[
            "401 Missing or invalid token",
            "check --token or LOGPORT_TOKEN",
        ],
    );
    fails(
        client(
            &svc.base,
            ACME,
            &["export", "--slice", "nope", "--since", DAY, "--until", DAY],
        ),
        &["404 Unknown slice: unknown slice `nope`"],
    );
    fails(
        export(ACME, &["--filter", "cost prefix 1"]),
        &[
            "--filter 'cost prefix 1': `prefix` does not apply to cost",
            "use one of eq",
        ],
    );
    fails(
        export(ACME, &["--filter", "country in US,DE"]),
        &[
            "--filter 'country in US,DE': clicks has no field `country`",
            "country_code",
        ],
    );
    fails(
        export(ACME, &["--filter", "cost"]),
        &["write FIELD OP VALUES"],
    );
    fails(
        export(
            ACME,
            &["--filter", "country_code eq US", "--filter", "cost gt lots"],
        ),
        &[
            "422 The request is not acceptable: filters[1].value: `lots` is not a number",
            "(in --filter 'cost gt lots')",
        ],
    );
    fails(
        export(ACME, &["--fields", "click_id,nope"]),
        &["422 The request is not acceptable: fields[1]"],
    );
    fails(
        client(
            &svc.base,
            ACME,
            &[
                "export",
                "--slice",
                "clicks",
                "--since",
                "2026-13-01",
                "--until",
                DAY,
            ],
        ),
        &["422", "date_since"],
    );
    fails(
        export(ACME, &["--format", "xlsx"]),
        &["422", "format: `xlsx` is not one of csv"],
    );
    fails(
        client("http://127.0.0.1:9", ACME, &["jobs"]),
        &["cannot reach http://127.0.0.1:9", "LOGPORT_URL"],
    );
    fails(
        client("localhost:8080", ACME, &["jobs"]),
        &["must start with http:// or https://"],
    );
    fails(
        client(&svc.base, ACME, &["cancel", "not-an-id"]),
        &["`not-an-id` is not an export id"],
    );
    fails(
        client(
            &svc.base,
            ACME,
            &["cancel", "0123456789abcdef0123456789abcdef"],
        ),
        &["404 Not found: export"],
    );
    // No token at all: a usage error (clap's), exit status 2.
    let o = Command::new(logport_bin())
        .args(["jobs", "--url", &svc.base])
        .env_remove("LOGPORT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--token"), "{}", stderr(&o));
    // Nothing was queued by any of it.
    let list = svc.list_exports(ACME, "").await;
    assert_eq!(list["exports"], json!([]));
}

#[tokio::test]
async fn wait_shows_a_progress_bar_on_a_terminal() {
    let svc = Service::start().await;
    svc.ingest(ACME, "clicks", &clicks()).await;
    // `script` gives the command a pseudo-terminal, where the bar is drawn.
    let cmd = format!(
        "{} export --slice clicks --since {DAY} --until {DAY} --wait",
        logport_bin().display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("LOGPORT_URL", &svc.base)
        .env("LOGPORT_TOKEN", ACME)
        .output()
        .expect("script (util-linux) runs a command on a pseudo-terminal");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("/300 rows"), "{text}");
    assert!(text.contains("succeeded: 300 rows in 1 file(s)"), "{text}");
}
