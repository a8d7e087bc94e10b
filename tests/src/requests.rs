//! Request helpers every end-to-end test file shares: sending with a 5xx check,
//! reading JSON and problem answers, and the `/v1` calls tests make again and again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{parse_csv, Service};

/// Sends a request; any 5xx fails the test at once, with the URL and the body.
pub async fn send(rb: reqwest::RequestBuilder) -> reqwest::Response {
    let resp = rb.send().await.expect("request reaches the service");
    if resp.status().is_server_error() {
        let (status, url) = (resp.status(), resp.url().clone());
        let body = resp.text().await.unwrap_or_default();
        panic!("server error {status} for {url}: {body}");
    }
    resp
}

/// The status and the JSON body of an answer, whatever the status.
pub async fn status_and_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("JSON answer");
    (status, body)
}

/// A JSON answer with the expected status.
pub async fn json_answer(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.expect("answer body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A problem+json answer: status, content type and body.
pub async fn problem(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ct = header(&resp, "content-type").unwrap_or_default();
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(ct, "application/problem+json", "{status} {body}");
    for k in ["type", "title", "status", "detail"] {
        assert!(body.get(k).is_some(), "problem lacks {k}: {body}");
    }
    assert_eq!(body["status"], status, "{body}");
    (status, body)
}

/// A problem+json answer with the expected status and `field`.
pub async fn expect_problem(resp: reqwest::Response, status: u16, field: Option<&str>) -> Value {
    let (got, body) = problem(resp).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(
        body.get("field").and_then(Value::as_str),
        field,
        "field of {body}"
    );
    body
}

/// A response header as text, `None` when absent; panics unless it is visible ASCII.
pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_string())
}

/// Asserts a file download's `Content-Type` and the file name its
/// `Content-Disposition: attachment; filename="…"` gives.
pub fn assert_file_headers(resp: &reqwest::Response, content_type: &str, file_name: &str) {
    assert_eq!(
        header(resp, "content-type").as_deref(),
        Some(content_type),
        "{file_name}"
    );
    assert_eq!(
        header(resp, "content-disposition"),
        Some(format!("attachment; filename=\"{file_name}\"")),
    );
}

/// A job's `id`.
pub fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_string()
}

/// The job ids of a `GET /v1/exports` answer, in its order.
pub fn listed_ids(list: &Value) -> Vec<&str> {
    list["exports"]
        .as_array()
        .unwrap_or_else(|| panic!("no exports in {list}"))
        .iter()
        .map(|j| j["id"].as_str().expect("job id"))
        .collect()
}

/// A copy of the JSON object `base` with every key of the object `extra` set (a
/// request, a row), e.g. `merged(&request, json!({"format": "tsv"}))`.
pub fn merged(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    for (k, v) in extra.as_object().expect("extra is a JSON object") {
        out[k] = v.clone();
    }
    out
}

/// Rows as an NDJSON body, one line each.
pub fn ndjson(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

/// The sha256 of `bytes` in lower-case hex, as job views and manifests list it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Seconds since the Unix epoch, by this machine's clock.
pub fn now_secs() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit in i64")
}

impl Service {
    /// POSTs NDJSON lines to `/v1/ingest/{slice}`; panics unless 200.
    pub async fn ingest(&self, token: &str, slice: &str, rows: &[Value]) -> Value {
        let resp = self
            .post(&format!("/v1/ingest/{slice}"), token)
            .header("content-type", "application/x-ndjson")
            .body(ndjson(rows))
            .send()
            .await
            .expect("ingest request");
        let (status, body) = status_and_json(resp).await;
        assert_eq!(status, 200, "ingest failed: {body}");
        body
    }

    /// Creates an export; panics unless 202.
    pub async fn create_export(&self, token: &str, request: &Value) -> Value {
        let (status, body) =
            status_and_json(self.post_json("/v1/exports", token, request).await).await;
        assert_eq!(status, 202, "export not accepted: {body}");
        body
    }

    /// Polls until the export leaves queued/running; returns its final view.
    pub async fn wait_export(&self, token: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, job) = self.get_json(&format!("/v1/exports/{id}"), token).await;
            match job["status"].as_str() {
                Some("queued") | Some("running") => {}
                _ => return job,
            }
            assert!(
                Instant::now() < deadline,
                "export {id} did not finish: {job}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates an export, waits for success, and returns (job, bytes of every part).
    pub async fn export(&self, token: &str, request: &Value) -> (Value, Vec<Vec<u8>>) {
        let created = self.create_export(token, request).await;
        let job = self.wait_export(token, &id_of(&created)).await;
        assert_eq!(
            job["status"],
            "succeeded",
            "export failed: {job}\n{}",
            self.logs()
        );
        let mut parts = Vec::new();
        for p in job["parts"].as_array().expect("parts") {
            let url = p["url"].as_str().expect("part url");
            let resp = self.get(url, token).send().await.expect("download");
            assert_eq!(resp.status(), 200, "download {url}");
            parts.push(resp.bytes().await.expect("part body").to_vec());
        }
        (job, parts)
    }

    /// Waits for a job to succeed and downloads its parts, checking each part's length
    /// and sha256 against the job view.
    pub async fn finish_export(&self, token: &str, id: &str) -> (Value, Vec<Vec<u8>>) {
        let job = self.wait_export(token, id).await;
        assert_eq!(job["status"], "succeeded", "{job}\n{}", self.logs());
        let parts = self.download_parts(token, &job).await;
        let rows: u64 = job["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .map(|p| p["rows"].as_u64().expect("part rows"))
            .sum();
        assert_eq!(job["progress"]["rows"], rows, "{job}");
        (job, parts)
    }

    /// Downloads every part a job lists, each checked against the job view: 200, its
    /// `bytes` and its `sha256`.
    pub async fn download_parts(&self, token: &str, job: &Value) -> Vec<Vec<u8>> {
        let mut parts = Vec::new();
        for p in job["parts"].as_array().expect("parts") {
            let url = p["url"].as_str().expect("part url");
            let resp = send(self.get(url, token)).await;
            assert_eq!(resp.status(), 200, "download {url} from {}", self.base);
            let body = resp.bytes().await.expect("part body").to_vec();
            assert_eq!(Some(body.len() as u64), p["bytes"].as_u64(), "{p}");
            assert_eq!(
                sha256_hex(&body),
                p["sha256"],
                "part {url} does not match its sha256: {p}"
            );
            parts.push(body);
        }
        parts
    }

    /// How often each `event_id` of the tenant's clicks on `day` comes back in a CSV
    /// export (what exactly-once is checked against).
    pub async fn exported_event_ids(&self, token: &str, day: &str) -> BTreeMap<String, u64> {
        let request = json!({"slice": "clicks", "date_since": day, "date_until": day,
                             "fields": ["event_id"], "format": "csv"});
        let (_, parts) = self.export(token, &request).await;
        let (_, rows) = parse_csv(&parts.concat());
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for r in rows {
            *counts.entry(r[0].clone()).or_default() += 1;
        }
        counts
    }

    /// Creates every export first (so workers run them side by side), then finishes each.
    pub async fn run_exports(&self, token: &str, requests: &[Value]) -> Vec<(Value, Vec<Vec<u8>>)> {
        let mut ids = Vec::new();
        for r in requests {
            ids.push(id_of(&self.create_export(token, r).await));
        }
        let mut out = Vec::new();
        for id in ids {
            out.push(self.finish_export(token, &id).await);
        }
        out
    }

    /// `GET path` with a token; panics unless it answers 200 with JSON, which it returns.
    pub async fn get_ok_json(&self, path: &str, token: &str) -> Value {
        json_answer(send(self.get(path, token)).await, 200).await
    }

    /// `GET path` with a token: the status and the JSON body.
    pub async fn get_json(&self, path: &str, token: &str) -> (u16, Value) {
        status_and_json(self.get(path, token).send().await.expect("GET")).await
    }

    /// `POST path` with a token and a JSON body: the response, whatever its status.
    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.post(path, token)
            .json(body)
            .send()
            .await
            .expect("POST reaches the service")
    }

    /// `POST /v1/ingest/{slice}` of a raw body, with an `Idempotency-Key` if given: the
    /// response, whatever its status.
    pub async fn ingest_body(
        &self,
        token: &str,
        slice: &str,
        body: impl Into<reqwest::Body>,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.post(&format!("/v1/ingest/{slice}"), token).body(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await.expect("POST reaches the service")
    }

    /// `GET /v1/exports?{query}` (`""` for none): the list answer, whose `exports` are
    /// the tenant's jobs.
    pub async fn list_exports(&self, token: &str, query: &str) -> Value {
        let path = match query {
            "" => "/v1/exports".to_string(),
            q => format!("/v1/exports?{q}"),
        };
        self.get_json(&path, token).await.1
    }

    /// `GET /readyz` without a token: the status and the JSON body.
    pub async fn ready(&self) -> (u16, Value) {
        status_and_json(
            self.http
                .get(self.url("/readyz"))
                .send()
                .await
                .expect("GET /readyz"),
        )
        .await
    }
}
