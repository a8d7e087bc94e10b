//! Object storage for export files, chosen by URL, and the key layout.
//!
//! Keys: `exports/{tenant}/{job}/{attempt}/part-00001.csv` and `.../manifest.json`.
//! Each attempt writes under its own prefix, so a retry never overwrites what an
//! earlier attempt wrote, and only the attempt whose manifest the job store
//! published is ever served. Uploads become visible only when complete (local disk:
//! a rename of a finished temporary file; S3: completing a multipart upload).

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

use crate::metered::Metered;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("unsupported object store URL `{0}`: use file:///absolute/dir or s3://bucket/prefix")]
    BadUrl(String),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl FilesError {
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            FilesError::Store(object_store::Error::NotFound { .. })
        )
    }
}

/// The export file store.
#[derive(Clone, Debug)]
pub struct Files {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// S3 only: presigns downloads. Keys are under `prefix` there.
    signer: Option<Arc<dyn Signer>>,
    prefix: String,
    /// `file://` only: the root directory, to remove what listing does not show.
    local_root: Option<std::path::PathBuf>,
}

impl Files {
    pub fn from_url(url: &str) -> Result<Files, FilesError> {
        let parsed = url::Url::parse(url).map_err(|_| FilesError::BadUrl(url.into()))?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| FilesError::BadUrl(url.into()))?;
                std::fs::create_dir_all(&dir).map_err(|source| FilesError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
                let fs = LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true);
                Ok(Files {
                    store: Arc::new(Metered::new(Arc::new(fs))),
                    url: url.into(),
                    signer: None,
                    prefix: String::new(),
                    local_root: Some(dir),
                })
            }
            "s3" => {
                // Credentials, region and endpoint come from the AWS_* environment, as
                // object_store reads them (AWS_ENDPOINT, AWS_ALLOW_HTTP, ...).
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| FilesError::BadUrl(url.into()))?;
                let s3 = Arc::new(
                    AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .build()?,
                );
                let prefix = parsed.path().trim_matches('/').to_string();
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    s3.clone()
                } else {
                    Arc::new(PrefixStore::new(Arc::clone(&s3), prefix.as_str()))
                };
                Ok(Files {
                    store: Arc::new(Metered::new(store)),
                    url: url.into(),
                    signer: Some(s3),
                    prefix,
                    local_root: None,
                })
            }
            _ => Err(FilesError::BadUrl(url.into())),
        }
    }

    /// Whether uploads may carry attributes (Content-Type, Content-Disposition); the
    /// local file system keeps none.
    pub fn supports_attributes(&self) -> bool {
        !self.url.starts_with("file:")
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// Size and byte stream of a finished file.
    pub async fn open(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, FilesError>>), FilesError> {
        let got = self.store.get(&Path::from(key)).await?;
        let size = got.meta.size;
        Ok((size, got.into_stream().map_err(FilesError::from).boxed()))
    }

    /// A byte range `[start, end)` of a finished file.
    pub async fn open_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, FilesError>>, FilesError> {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let got = self.store.get_opts(&Path::from(key), opts).await?;
        Ok(got.into_stream().map_err(FilesError::from).boxed())
    }

    /// A presigned GET URL for a file, when the store can sign (S3); the response
    /// carries the given file name and content type.
    pub async fn presign(
        &self,
        key: &str,
        expires_in: std::time::Duration,
        filename: &str,
        content_type: &str,
    ) -> Result<Option<url::Url>, FilesError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        let opts = SignedUrlOptions::new().with_query([
            (
                "response-content-disposition",
                format!("attachment; filename=\"{filename}\""),
            ),
            ("response-content-type", content_type.to_string()),
        ]);
        let url = signer
            .signed_url_opts(Method::GET, &Path::from(full), expires_in, &opts)
            .await?;
        Ok(Some(url))
    }

    /// Every key under a prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, FilesError> {
        let keys: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await?;
        Ok(keys)
    }

    pub async fn read(&self, key: &str) -> Result<Bytes, FilesError> {
        Ok(self.store.get(&Path::from(key)).await?.bytes().await?)
    }

    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), FilesError> {
        self.store
            .put(&Path::from(key), PutPayload::from_bytes(body))
            .await?;
        Ok(())
    }

    /// Deletes every file under a prefix; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, FilesError> {
        let prefix = Path::from(prefix);
        let keys: Vec<_> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        let mut n = 0;
        for key in keys {
            match self.store.delete(&key).await {
                Ok(()) => n += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A local upload is staged as `name#N` until it completes, and listing hides
        // such files: one left by a crashed process would stay forever. Remove the
        // prefix's directory with whatever is left in it.
        if let Some(root) = &self.local_root {
            let dir = root.join(prefix.as_ref());
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(FilesError::Io {
                        path: dir.display().to_string(),
                        source,
                    })
                }
            }
        }
        Ok(n)
    }

    /// Is the store reachable?
    pub async fn ping(&self) -> Result<(), FilesError> {
        self.store
            .list_with_delimiter(Some(&Path::from("exports")))
            .await?;
        Ok(())
    }
}

/// `exports/{tenant}/{job}/{attempt}`
pub fn attempt_prefix(tenant: &str, job: &str, attempt: u32) -> String {
    format!("exports/{tenant}/{job}/{attempt}")
}

/// `exports/{tenant}/{job}`
pub fn job_prefix(tenant: &str, job: &str) -> String {
    format!("exports/{tenant}/{job}")
}

/// `part-00001.csv`: zero-padded so names sort in part order.
pub fn part_name(n: u32, ext: &str) -> String {
    format!("part-{n:05}.{ext}")
}

/// The Content-Type a file is served with, from its name.
pub fn content_type(key: &str) -> &'static str {
    let name = key.rsplit('/').next().unwrap_or(key);
    let base = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(name);
    if name.ends_with(".gz") {
        return "application/gzip";
    }
    if name.ends_with(".zst") {
        return "application/zstd";
    }
    match base.rsplit('.').next() {
        Some("csv") => "text/csv; charset=utf-8",
        Some("tsv") => "text/tab-separated-values; charset=utf-8",
        Some("jsonl") => "application/x-ndjson",
        Some("json") => "application/json",
        Some("parquet") => "application/vnd.apache.parquet",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types() {
        assert_eq!(part_name(1, "csv"), "part-00001.csv");
        assert_eq!(attempt_prefix("acme", "j1", 2), "exports/acme/j1/2");
        assert_eq!(
            content_type("exports/a/b/1/part-00001.csv"),
            "text/csv; charset=utf-8"
        );
        assert_eq!(content_type("part-00001.jsonl"), "application/x-ndjson");
        assert_eq!(content_type("part-00001.csv.gz"), "application/gzip");
    }

    #[tokio::test]
    async fn local_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::from_url(&format!("file://{}/x", dir.path().display())).unwrap();
        files
            .put("exports/t/j/1/a.txt", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(
            &files.read("exports/t/j/1/a.txt").await.unwrap()[..],
            b"hello"
        );
        assert_eq!(files.delete_prefix("exports/t/j").await.unwrap(), 1);
        assert!(files
            .read("exports/t/j/1/a.txt")
            .await
            .unwrap_err()
            .is_not_found());
        files.ping().await.unwrap();
        assert!(Files::from_url("ftp://x").is_err());
    }
}
