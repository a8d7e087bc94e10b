//! The S3-compatible test server (moto) and a bucket of one test's own, read with
//! the `object_store` crate.

use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt};

use crate::Options;

/// The S3-compatible server tests use: `LOGPORT_TEST_S3_ENDPOINT`, e.g.
/// `http://127.0.0.1:45123` — moto's standalone server, which `scripts/test.sh`
/// starts. A test that needs it fails without it; it never skips.
pub fn s3_endpoint() -> String {
    match std::env::var("LOGPORT_TEST_S3_ENDPOINT") {
        Ok(u) if !u.is_empty() => u.trim_end_matches('/').to_string(),
        _ => panic!(
            "LOGPORT_TEST_S3_ENDPOINT is not set: run the tests with ./scripts/test.sh, which \
             starts an S3-compatible server (python3 -m moto.server, from PyPI `moto[server]`)"
        ),
    }
}

/// One object of an S3 listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub key: String,
    pub size: u64,
    /// Without quotes; a multipart upload's ETag ends in `-<parts>`.
    pub etag: String,
}

/// The credentials tests give the service and the harness (moto accepts any).
const ACCESS_KEY_ID: &str = "logport-test";
const SECRET_ACCESS_KEY: &str = "logport-test-secret";
const REGION: &str = "us-east-1";

/// A fresh bucket on [`s3_endpoint`]'s server, for one test, read through
/// `object_store`'s S3 client with its own credentials (moto does not check
/// signatures, but answers unsigned requests for private objects with 403, as S3
/// does).
pub struct S3Bucket {
    pub endpoint: String,
    pub name: String,
    store: AmazonS3,
}

impl S3Bucket {
    /// Creates a bucket with a unique name. `object_store` does not create buckets:
    /// this is a signed-looking `PUT /<bucket>`, which is all moto needs.
    pub async fn create() -> S3Bucket {
        let endpoint = s3_endpoint();
        let name = format!("lpt-{}", uuid::Uuid::new_v4().simple());
        let resp = reqwest::Client::new()
            .put(format!("{endpoint}/{name}"))
            .header("authorization", S3_DUMMY_AUTH)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("the S3 server at {endpoint} is not answering ({e}); tests need it")
            });
        assert!(
            resp.status().is_success(),
            "cannot create bucket {name} at {endpoint}: {}",
            resp.status()
        );
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&name)
            .with_region(REGION)
            .with_access_key_id(ACCESS_KEY_ID)
            .with_secret_access_key(SECRET_ACCESS_KEY)
            .with_virtual_hosted_style_request(false)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_secs(120)),
            )
            .build()
            .expect("an S3 client for the test bucket");
        S3Bucket {
            endpoint,
            name,
            store,
        }
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn store_url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.name, prefix.trim_matches('/'))
    }

    /// Options for a service whose export files go to this bucket under `prefix`
    /// (object_store reads the `AWS_*` variables).
    pub fn options(&self, prefix: &str) -> Options {
        Options::default()
            .env("LOGPORT_OBJECT_STORE_URL", &self.store_url(prefix))
            .env("AWS_ENDPOINT", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false")
    }

    /// Every object under the folder `prefix` (`""`: the whole bucket), by key.
    pub async fn list(&self, prefix: &str) -> Vec<S3Object> {
        let folder = (!prefix.is_empty()).then(|| StorePath::from(prefix));
        let mut out: Vec<S3Object> = self
            .store
            .list(folder.as_ref())
            .map_ok(|meta| S3Object {
                key: meta.location.to_string(),
                size: meta.size,
                etag: meta.e_tag.unwrap_or_default().trim_matches('"').to_string(),
            })
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("list {prefix}: {e}"));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// An object's bytes, or `None` when there is no such key.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = StorePath::parse(key).unwrap_or_else(|e| panic!("key {key}: {e}"));
        match self.store.get(&path).await {
            Ok(got) => Some(got.bytes().await.expect("object body").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("get {key}: {e}"),
        }
    }
}

/// What [`S3Bucket::create`] sends as `Authorization` (moto checks the form, not the
/// signature).
const S3_DUMMY_AUTH: &str = "AWS4-HMAC-SHA256 Credential=logport-test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0000";
