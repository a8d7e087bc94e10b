//! Export files on a real S3-compatible server (moto's standalone server on loopback,
//! `LOGPORT_TEST_S3_ENDPOINT`): multipart uploads of big parts, the key layout under the
//! URL's prefix, downloads through the API, DELETE, presigned redirects a plain HTTP
//! client can follow, and readiness.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use logport_tests::*;

const PREFIX: &str = "some/prefix";

/// A user agent of about 230 bytes, different per row.
fn user_agent(i: usize) -> String {
    format!(
        "Mozilla/5.0 (Linux; Android 14; Pixel {i}) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/131.0.{}.{} Mobile Safari/537.36 [FBAN/FBIOS;FBAV/{i};FBBV/{};FBDV/iPhone15,3;FBMD/iPhone]",
        i % 7919,
        i % 104_729,
        i * 31
    )
}

/// A part over 10 MB goes up as a multipart upload (object_store's writer switches at
/// 8 MiB), lands at `<prefix>/exports/<tenant>/<job>/<attempt>/` next to its
/// manifest, downloads through the API byte for byte (whole and ranged), and DELETE
/// removes every object.
#[tokio::test]
async fn a_big_part_is_a_multipart_upload_that_downloads_exactly() {
    let bucket = S3Bucket::create().await;
    let svc = Service::start_with(bucket.options(PREFIX)).await;
    let (status, body) = svc.ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["object_store"]["ok"], true, "{body}");

    const ROWS: usize = 60_000;
    for batch in 0..6 {
        let rows: Vec<Value> = (batch * 10_000..(batch + 1) * 10_000)
            .map(|i| {
                json!({"click_id": format!("big-{i:06}"),
                    "event_time": format!("2026-11-05 {:02}:{:02}:{:02}", i / 3600 % 24, i / 60 % 60, i % 60),
                    "user_agent": user_agent(i), "country_code": "US",
                    "referrer": format!("https://news.example.com/article/{i}?utm_source=feed&utm_medium=rss")})
            })
            .collect();
        svc.ingest(ACME, "clicks", &rows).await;
    }
    let request = json!({"slice": "clicks", "date_since": "2026-11-05", "date_until": "2026-11-05",
        "fields": ["click_id", "event_time", "user_agent", "referrer", "country_code"], "format": "csv"});
    let created = svc.create_export(ACME, &request).await;
    let id = id_of(&created);
    let job = svc.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", svc.logs());
    assert_eq!(job["progress"]["rows"], ROWS);
    let parts = job["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{job}");
    let size = parts[0]["bytes"].as_u64().unwrap();
    assert!(size > 10_000_000, "the part has only {size} bytes");
    let sha = parts[0]["sha256"].as_str().unwrap().to_string();

    // Through the API.
    let resp = svc
        .get(parts[0]["url"].as_str().unwrap(), ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), Some(size.to_string()));
    assert_eq!(header(&resp, "etag"), Some(format!("\"{sha}\"")));
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len() as u64, size);
    assert_eq!(sha256_hex(&body), sha);
    assert_eq!(
        body.iter().filter(|b| **b == b'\n').count(),
        ROWS + 1,
        "header and one line per row"
    );
    // A range, read from S3 with a ranged GET.
    let from = size - 1_000_000;
    let resp = svc
        .get(parts[0]["url"].as_str().unwrap(), ACME)
        .header("range", format!("bytes={from}-{}", from + 99))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        header(&resp, "content-range"),
        Some(format!("bytes {from}-{}/{size}", from + 99))
    );
    assert_eq!(
        resp.bytes().await.unwrap(),
        body[from as usize..from as usize + 100]
    );

    // In the bucket: exactly the part and the manifest, under the prefix.
    let dir = format!("{PREFIX}/exports/acme/{id}/1");
    let objects = bucket.list("").await;
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("{dir}/manifest.json"),
            format!("{dir}/part-00001.csv")
        ],
        "{objects:?}"
    );
    let part = &objects[1];
    assert_eq!(part.size, size);
    let pieces: u32 = part
        .etag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a multipart upload: ETag {}", part.etag));
    assert!(pieces >= 2, "ETag {}", part.etag);
    let stored = bucket.get(&part.key).await.unwrap();
    assert_eq!(sha256_hex(&stored), sha);
    let manifest: Value =
        serde_json::from_slice(&bucket.get(&objects[0].key).await.unwrap()).unwrap();
    assert_eq!(manifest["parts"][0]["sha256"], sha.as_str(), "{manifest}");
    assert_eq!(manifest["parts"][0]["bytes"], size);
    assert_eq!(manifest["parts"][0]["file"], "part-00001.csv");
    let (_, api_manifest) = svc
        .get_json(&format!("/v1/exports/{id}/manifest"), ACME)
        .await;
    assert_eq!(api_manifest, manifest);

    // DELETE removes the objects; the job is expired.
    let resp = svc
        .delete(&format!("/v1/exports/{id}"), ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(bucket.list(PREFIX).await, []);
    assert!(bucket.get(&part.key).await.is_none());
    let (_, job) = svc.get_json(&format!("/v1/exports/{id}"), ACME).await;
    assert_eq!(job["status"], "expired");
    let (status, _) = problem(
        svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 410);
}

/// With LOGPORT_PRESIGNED_DOWNLOADS=true a part download is a 302 to a presigned S3
/// URL; a plain HTTP GET of it (no Authorization) returns the file with the API's file
/// name and content type. Other tenants still get a 404, not a URL.
#[tokio::test]
async fn presigned_downloads_redirect_to_a_url_any_client_can_fetch() {
    let bucket = S3Bucket::create().await;
    let svc = Service::start_with(
        bucket
            .options(PREFIX)
            .env("LOGPORT_PRESIGNED_DOWNLOADS", "true"),
    )
    .await;
    let rows: Vec<Value> = (0..50)
        .map(|i| json!({"click_id": format!("c{i}"), "event_time": "2026-11-05 10:00:00", "user_agent": user_agent(i)}))
        .collect();
    svc.ingest(ACME, "clicks", &rows).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // A browser: no token, follows nothing it was not given.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    for (format, compression, file, content_type) in [
        ("csv", "gzip", "part-00001.csv.gz", "application/gzip"),
        ("jsonl", "none", "part-00001.jsonl", "application/x-ndjson"),
        (
            "parquet",
            "none",
            "part-00001.parquet",
            "application/vnd.apache.parquet",
        ),
    ] {
        let created = svc
            .create_export(
                ACME,
                &json!({"slice": "clicks", "date_since": "2026-11-05", "date_until": "2026-11-05",
                    "fields": ["click_id", "event_time", "user_agent"], "format": format, "compression": compression}),
            )
            .await;
        let id = id_of(&created);
        let job = svc.wait_export(ACME, &id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let part = &job["parts"][0];
        let url = part["url"].as_str().unwrap();
        // The part through the API, without following its redirect.
        let api_get = |token: &str| no_redirects.get(svc.url(url)).bearer_auth(token);

        let resp = api_get(ACME).send().await.unwrap();
        assert_eq!(resp.status(), 302, "{format}");
        assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
        let location = header(&resp, "location").unwrap();
        let key = format!("{PREFIX}/exports/acme/{id}/1/{file}");
        assert!(
            location.starts_with(&format!("{}/{}/{key}?", bucket.endpoint, bucket.name)),
            "{location}"
        );
        for q in [
            "X-Amz-Signature=",
            "X-Amz-Credential=",
            "X-Amz-Expires=900",
            "response-content-disposition=",
        ] {
            assert!(location.contains(q), "{q} missing from {location}");
        }

        let resp = plain.get(&location).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{location}");
        assert_file_headers(&resp, content_type, &format!("{id}-{file}"));
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.len() as u64, part["bytes"].as_u64().unwrap());
        assert_eq!(sha256_hex(&body), part["sha256"].as_str().unwrap());

        // Conditionals are still answered by the API itself.
        let resp = api_get(ACME)
            .header(
                "if-none-match",
                format!("\"{}\"", part["sha256"].as_str().unwrap()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 304);
        // Not another tenant's.
        let resp = api_get(GLOBEX).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(header(&resp, "location"), None);

        // Deleted files are gone, not redirected to.
        let resp = svc
            .delete(&format!("/v1/exports/{id}"), ACME)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(
            bucket.list(&format!("{PREFIX}/exports/acme/{id}/")).await,
            []
        );
        let resp = api_get(ACME).send().await.unwrap();
        assert_eq!(resp.status(), 410);
        assert_eq!(header(&resp, "location"), None);
    }
}

/// readyz checks the bucket: ready when it exists, 503 naming the object store when it
/// does not (the API keeps answering health checks).
#[tokio::test]
async fn readiness_reflects_the_bucket() {
    let bucket = S3Bucket::create().await;
    let svc = Service::start_with(bucket.options(PREFIX)).await;
    let (status, body) = svc.ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for check in ["clickhouse", "job_store", "object_store"] {
        assert_eq!(body["checks"][check]["ok"], true, "{body}");
    }

    let mut missing = bucket.options(PREFIX);
    missing.env.retain(|(k, _)| k != "LOGPORT_OBJECT_STORE_URL");
    let missing = missing.env(
        "LOGPORT_OBJECT_STORE_URL",
        &format!("s3://{}-missing/{PREFIX}", bucket.name),
    );
    let svc = Service::start_with(missing).await;
    let (status, body) = svc.ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    // Anonymous callers learn which check failed, not why.
    assert_eq!(
        body["checks"]["object_store"],
        json!({"ok": false}),
        "{body}"
    );
    let resp = svc.get("/readyz", ACME).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["checks"]["object_store"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "an admin token sees why: {body}"
    );
    assert_eq!(body["checks"]["clickhouse"]["ok"], true, "{body}");
    let health = svc.http.get(svc.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
