//! An [`ObjectStore`] wrapper that counts failures, so an operator sees a failing
//! bucket (`logport_object_store_errors_total{op, kind}`) before clients do.
//!
//! Every call is passed through unchanged. `NotFound` is not counted: a download of an
//! expired file or a delete of something already gone is an answer, not a failure.
//! Errors inside streams (listings, downloads) and multipart uploads are counted as
//! they surface.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

/// Counts a failure of `op`, unless it is a `NotFound`.
pub fn count_error(op: &'static str, e: &object_store::Error) {
    let kind = match e {
        object_store::Error::NotFound { .. } => return,
        object_store::Error::AlreadyExists { .. } => "already_exists",
        object_store::Error::Precondition { .. } => "precondition",
        object_store::Error::NotModified { .. } => return,
        object_store::Error::PermissionDenied { .. } => "permission_denied",
        object_store::Error::Unauthenticated { .. } => "unauthenticated",
        _ => "error",
    };
    metrics::counter!("logport_object_store_errors_total", "op" => op, "kind" => kind).increment(1);
}

fn seen<T>(op: &'static str, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        count_error(op, e);
    }
    r
}

fn seen_stream<T: Send + 'static>(
    op: &'static str,
    s: BoxStream<'static, Result<T>>,
) -> BoxStream<'static, Result<T>> {
    s.map(move |r| seen(op, r)).boxed()
}

/// The wrapped store.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn ObjectStore>,
}

impl Metered {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Metered {
        Metered { inner }
    }
}

impl std::fmt::Display for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Metered {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        seen("put", self.inner.put_opts(location, payload, opts).await)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = seen(
            "multipart",
            self.inner.put_multipart_opts(location, opts).await,
        )?;
        Ok(Box::new(MeteredUpload { inner: upload }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let mut got = seen("get", self.inner.get_opts(location, options).await)?;
        if let GetResultPayload::Stream(s) = got.payload {
            got.payload = GetResultPayload::Stream(seen_stream("get", s));
        }
        Ok(got)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        seen("get", self.inner.get_ranges(location, ranges).await)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        seen_stream("delete", self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        seen_stream("list", self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        seen_stream("list", self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        seen("list", self.inner.list_with_delimiter(prefix).await)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        seen("copy", self.inner.copy_opts(from, to, options).await)
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        seen("rename", self.inner.rename_opts(from, to, options).await)
    }
}

#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner
            .put_part(data)
            .map(|r| seen("multipart", r))
            .boxed()
    }

    async fn complete(&mut self) -> Result<PutResult> {
        seen("multipart", self.inner.complete().await)
    }

    async fn abort(&mut self) -> Result<()> {
        seen("multipart", self.inner.abort().await)
    }
}
