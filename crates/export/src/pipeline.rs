//! One attempt of one export: ClickHouse's stream, cut into parts, each part uploaded
//! with its sha256, then the manifest.
//!
//! Nothing here holds more than a chunk of the result (Parquet: one row group): bytes
//! flow from the HTTP response of ClickHouse through a small buffer into a multipart
//! upload. CSV, TSV and JSON lines are the store's text encodings
//! ([`logport_store::Encoding`]), passed through untouched except where a format needs
//! it (`json` wraps records in `{"data":[…]}`). Parquet is written from the store's
//! Arrow batches ([`crate::encoder`]). Parts are cut at record boundaries by
//! `part_max_rows` and `part_max_bytes` (uncompressed size).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use logport_catalog::{time, Catalog, Compression, ExportSpec, Format};
use logport_queue::{Job, JobStore, Lease, Part, Progress};
use logport_store::{BatchStream, Bounds, ByteStream, Encoding, Selection, Store};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{Attribute, Attributes};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::encoder;
use crate::files::{self, Files};
use crate::scan::Scanner;
use crate::ExportError;

/// Live counters of a running attempt, read by the heartbeat.
#[derive(Debug, Default)]
pub struct Counters {
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    pub parts: AtomicU64,
}

impl Counters {
    pub fn progress(&self) -> Progress {
        Progress {
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            parts: self.parts.load(Ordering::Relaxed) as u32,
        }
    }
}

/// Everything an attempt needs besides the exporter.
pub struct Attempt<'a> {
    pub job: &'a Job,
    pub lease: &'a Lease,
    pub jobs: &'a dyn JobStore,
    pub cancel: &'a CancellationToken,
    pub counters: &'a Counters,
}

/// What a finished attempt published.
#[derive(Debug, Clone)]
pub struct Published {
    pub manifest_key: String,
    pub progress: Progress,
}

/// The manifest written last, next to the parts.
#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    pub job_id: &'a str,
    pub attempt: u32,
    pub slice: &'a str,
    pub format: &'a str,
    pub compression: &'a str,
    pub fields: &'a [String],
    pub request: &'a logport_catalog::ExportRequest,
    /// Rows received after this instant are not in the export.
    pub watermark: String,
    pub created_at: String,
    pub finished_at: String,
    pub parts: Vec<ManifestPart>,
    pub totals: Progress,
}

#[derive(Debug, Serialize)]
pub struct ManifestPart {
    pub n: u32,
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// How a text format is produced from the store's encoding.
struct TextPlan {
    encoding: Encoding,
    /// Written at the start of every part (BOM, header row, `{"data":[`).
    head: Vec<u8>,
    /// Wrap records as `{"data":[r1,\nr2]}`.
    json_array: bool,
}

/// Bytes buffered before handing them to the object store writer.
const BUF: usize = 1 << 20;
/// Bytes the object store writer buffers before it starts a multipart upload (also
/// the size of each uploaded chunk; S3 wants at least 5 MiB).
const UPLOAD_BUFFER: usize = 8 << 20;

/// Runs export attempts.
pub struct Exporter {
    pub store: Store,
    pub files: Files,
    pub catalog: Arc<Catalog>,
    /// Parallel reads of a large export (one part each); 1 reads sequentially.
    pub parallelism: usize,
    /// Fewest rows worth reading in parallel.
    pub parallel_min_rows: u64,
    /// Most parts one export may write (`LOGPORT_EXPORT_MAX_PARTS`). The API refuses a
    /// request whose estimate passes it; an attempt that passes it anyway (the
    /// estimate was off) fails for good rather than writing without end.
    pub max_parts: u32,
}

/// Where parts go and how they are recorded.
struct PartSink<'a, 'b> {
    exporter: &'a Exporter,
    attempt: &'a Attempt<'b>,
    prefix: String,
    ext: String,
    content_type: &'static str,
    /// Number of this sink's first part (parallel readers each own one number).
    first_n: u32,
    parts: Vec<Part>,
}

impl PartSink<'_, '_> {
    fn next_key(&self) -> (u32, String) {
        let n = self.first_n + self.parts.len() as u32;
        (
            n,
            format!("{}/{}", self.prefix, files::part_name(n, &self.ext)),
        )
    }

    /// The next part's number, key and upload; none past the export's part cap.
    fn open_part(&self) -> Result<(u32, String, PartUpload), ExportError> {
        let (n, key) = self.next_key();
        if n > self.exporter.max_parts {
            return Err(ExportError::TooManyParts {
                max: self.exporter.max_parts,
            });
        }
        let upload = self.upload(&key);
        Ok((n, key, upload))
    }

    fn upload(&self, key: &str) -> PartUpload {
        let mut writer =
            BufWriter::with_capacity(self.exporter.files.store(), Path::from(key), UPLOAD_BUFFER);
        if self.exporter.files.supports_attributes() {
            // S3 serves presigned downloads with these headers.
            let name = format!(
                "{}-{}",
                self.attempt.job.id,
                key.rsplit('/').next().unwrap_or(key)
            );
            let mut attrs = Attributes::new();
            attrs.insert(Attribute::ContentType, self.content_type.into());
            attrs.insert(
                Attribute::ContentDisposition,
                format!("attachment; filename=\"{name}\"").into(),
            );
            writer = writer.with_attributes(attrs);
        }
        PartUpload {
            writer,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Records a finished part in the job store (fenced by the lease).
    async fn record(&mut self, part: Part) -> Result<(), ExportError> {
        if !self
            .attempt
            .jobs
            .add_part(self.attempt.lease, &part, logport_queue::now_ms())
            .await?
        {
            return Err(ExportError::LeaseLost);
        }
        self.attempt.counters.parts.fetch_add(1, Ordering::Relaxed);
        self.parts.push(part);
        Ok(())
    }
}

impl Exporter {
    /// Validates a stored request again against today's catalog.
    pub fn spec_of(&self, job: &Job) -> Result<ExportSpec, ExportError> {
        job.request
            .validate(&self.catalog)
            .map_err(|e| ExportError::InvalidRequest(e.to_string()))
    }

    /// One attempt: the parts, then the manifest that publishes them.
    pub async fn run(&self, a: Attempt<'_>) -> Result<Published, ExportError> {
        let job = a.job;
        let spec = self.spec_of(job)?;
        let slice = self
            .catalog
            .slice(&spec.slice)
            .ok_or_else(|| ExportError::InvalidRequest(format!("unknown slice {}", spec.slice)))?;
        let selection = self
            .store
            .select(slice, &job.tenant, &spec)
            .with_watermark(job.created_at);
        // Every query of this attempt has an id with this prefix, so a cancel can
        // kill them all.
        let query_prefix = format!("logport-{}-{}-", job.id, a.lease.attempt);
        let prefix = files::attempt_prefix(&job.tenant, &job.id, a.lease.attempt);
        let ranges = self.parallel_ranges(&a, &selection, &query_prefix).await?;
        let parts = match self
            .read_parts(&a, &selection, ranges, &query_prefix, &prefix)
            .await
        {
            Ok(parts) => parts,
            Err(e) => {
                if matches!(e, ExportError::Canceled) {
                    self.kill_queries_later(query_prefix);
                }
                return Err(e);
            }
        };
        self.publish_manifest(&a, &spec, &prefix, parts).await
    }

    /// The time ranges a large result is read in, one reader each; `None` reads it
    /// in one go (small results, and requests whose parts are cut by their own
    /// limits).
    async fn parallel_ranges(
        &self,
        a: &Attempt<'_>,
        selection: &Selection<'_>,
        query_prefix: &str,
    ) -> Result<Option<Vec<(i64, i64, u64)>>, ExportError> {
        let spec = selection.spec();
        let splittable = self.parallelism > 1
            && !spec.single_file
            && spec.limit.is_none()
            && spec.part_max_rows.is_none()
            && spec.part_max_bytes.is_none();
        if !splittable {
            return Ok(None);
        }
        let hours = cancellable(
            a.cancel,
            self.store
                .hour_counts(selection, &Bounds::job(format!("{query_prefix}hours"))),
        )
        .await?;
        Ok(split_ranges(
            &hours,
            // One part per reader: never more readers than parts allowed.
            self.parallelism
                .min(usize::try_from(self.max_parts).unwrap_or(usize::MAX)),
            self.parallel_min_rows,
            spec.since,
            spec.until,
        ))
    }

    /// Every part of the attempt, in part order: one reader cutting parts by the
    /// request's limits, or one reader per range writing one part each.
    async fn read_parts(
        &self,
        a: &Attempt<'_>,
        selection: &Selection<'_>,
        ranges: Option<Vec<(i64, i64, u64)>>,
        query_prefix: &str,
        prefix: &str,
    ) -> Result<Vec<Part>, ExportError> {
        let spec = selection.spec();
        let (ext, content_type) = file_kind(spec);
        let sink = |first_n: u32| PartSink {
            exporter: self,
            attempt: a,
            prefix: prefix.to_string(),
            content_type,
            ext: ext.clone(),
            first_n,
            parts: Vec::new(),
        };
        let mut parts = match ranges {
            None => {
                let expected = match spec.format {
                    Format::Parquet => {
                        let bounds = Bounds::job(format!("{query_prefix}count"));
                        let n = cancellable(a.cancel, self.store.count(selection, &bounds)).await?;
                        spec.limit.map_or(n, |l| n.min(l))
                    }
                    _ => 0,
                };
                let mut one = sink(1);
                self.read_into(selection, &format!("{query_prefix}0"), expected, &mut one)
                    .await?;
                one.parts
            }
            // ClickHouse formats (and we encode) on every core at once.
            Some(ranges) => {
                tracing::debug!(readers = ranges.len(), "export split into parallel reads");
                let reads = ranges
                    .into_iter()
                    .enumerate()
                    .map(|(k, (since, until, rows))| {
                        let spec_k = ExportSpec {
                            since,
                            until,
                            ..spec.clone()
                        };
                        let query_id = format!("{query_prefix}{k}");
                        let mut own = sink(k as u32 + 1);
                        async move {
                            let sel = selection.with_spec(&spec_k);
                            self.read_into(&sel, &query_id, rows, &mut own)
                                .await
                                .map(|()| own.parts)
                        }
                    });
                futures::future::try_join_all(reads)
                    .await?
                    .into_iter()
                    .flatten()
                    .collect()
            }
        };
        parts.sort_by_key(|p| p.n);
        Ok(parts)
    }

    /// Stops the server's work on a canceled attempt, without holding the worker: the
    /// job is already canceled in the store, and a stalled server must not keep the
    /// worker from its next job.
    fn kill_queries_later(&self, query_prefix: String) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let kill = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                store.kill_queries(&query_prefix),
            )
            .await;
            match kill {
                Ok(Ok(())) => tracing::info!(%query_prefix, "export queries killed"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, %query_prefix, "could not kill export queries")
                }
                Err(_) => tracing::warn!(%query_prefix, "KILL QUERY timed out"),
            }
        });
    }

    /// Writes the manifest beside the parts (unless the attempt was canceled first).
    async fn publish_manifest(
        &self,
        a: &Attempt<'_>,
        spec: &ExportSpec,
        prefix: &str,
        parts: Vec<Part>,
    ) -> Result<Published, ExportError> {
        let job = a.job;
        let totals = Progress {
            rows: parts.iter().map(|p| p.rows).sum(),
            bytes: parts.iter().map(|p| p.bytes).sum(),
            parts: parts.len() as u32,
        };
        let manifest_key = format!("{prefix}/manifest.json");
        let manifest = Manifest {
            job_id: &job.id,
            attempt: a.lease.attempt,
            slice: &spec.slice,
            format: spec.format.name(),
            compression: match spec.format {
                Format::Parquet => "zstd (inside the Parquet file)",
                _ => spec.compression.name(),
            },
            fields: &spec.fields,
            request: &job.request,
            watermark: logport_catalog::time::format_rfc3339_ms(job.created_at),
            created_at: time::format_rfc3339(job.created_at.div_euclid(1000)),
            finished_at: time::format_rfc3339(logport_queue::now_ms().div_euclid(1000)),
            parts: parts
                .iter()
                .map(|p| ManifestPart {
                    n: p.n,
                    file: p.key.rsplit('/').next().unwrap_or(&p.key).to_string(),
                    rows: p.rows,
                    bytes: p.bytes,
                    sha256: p.sha256.clone(),
                })
                .collect(),
            totals,
        };
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ExportError::Manifest(e.to_string()))?;
        if a.cancel.is_cancelled() {
            return Err(ExportError::Canceled);
        }
        self.files.put(&manifest_key, Bytes::from(body)).await?;
        Ok(Published {
            manifest_key,
            progress: totals,
        })
    }

    /// Reads one selection into parts of `sink`. `expected` is the row count a
    /// Parquet read must reach ([`Store::export_batches`]).
    async fn read_into(
        &self,
        sel: &Selection<'_>,
        query_id: &str,
        expected: u64,
        sink: &mut PartSink<'_, '_>,
    ) -> Result<(), ExportError> {
        let spec = sel.spec();
        match spec.format {
            Format::Parquet => {
                let batches =
                    self.store
                        .export_batches(sel, query_id, encoder::BATCH_ROWS, expected)?;
                self.parquet_parts(batches, spec, sink).await
            }
            _ => {
                let plan = text_plan(spec);
                let stream = self.store.export_stream(sel, plan.encoding, query_id)?;
                self.text_parts(stream, &plan, sel, query_id, sink).await
            }
        }
    }

    /// Text parts of one reader: the store's bytes, cut at record boundaries.
    async fn text_parts(
        &self,
        mut stream: ByteStream,
        plan: &TextPlan,
        selection: &Selection<'_>,
        query_id: &str,
        sink: &mut PartSink<'_, '_>,
    ) -> Result<(), ExportError> {
        let spec = selection.spec();
        let mut scanner = Scanner::new(plan.encoding.framing());
        let mut current: Option<OpenTextPart> = None;
        let result: Result<(), ExportError> = async {
            loop {
                let chunk = tokio::select! {
                    biased;
                    _ = sink.attempt.cancel.cancelled() => return Err(ExportError::Canceled),
                    next = stream.next() => next?,
                };
                let Some(chunk) = chunk else { break };
                write_text_chunk(&chunk, &mut scanner, &mut current, plan, spec, sink).await?;
            }
            self.check_trailing_exception(&scanner, plan, selection, query_id, sink)
                .await?;
            if scanner.pending() > 0 {
                return Err(ExportError::Truncated);
            }
            // An empty result is still one (header-only) part, so clients always get a file.
            if current.is_none() && sink.parts.is_empty() {
                let (n, key, upload) = sink.open_part()?;
                current = Some(OpenTextPart::open(n, key, upload, plan, spec.compression).await?);
            }
            if let Some(done) = current.take() {
                let finished = done.finish(plan).await?;
                sink.record(finished).await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            if let Some(open) = current.take() {
                open.upload.abort().await;
            }
        }
        result
    }

    /// Fails the read when its last record is an exception the server appended.
    async fn check_trailing_exception(
        &self,
        scanner: &Scanner,
        plan: &TextPlan,
        selection: &Selection<'_>,
        query_id: &str,
        sink: &PartSink<'_, '_>,
    ) -> Result<(), ExportError> {
        let Some(e) = scanner
            .suspected_exception()
            .and_then(logport_store::trailing_exception)
        else {
            return Ok(());
        };
        // CSV quotes strings and JSON records start with `{`, but TabSeparated does
        // not quote: a row whose first value begins with `Code: ` looks like an
        // exception. It is data when the rows are exactly as many as the same query
        // counts (an exception adds its lines and drops rows).
        let is_data = plan.encoding.unquoted() && {
            let spec = selection.spec();
            let bounds = Bounds::job(format!("{query_id}-count"));
            let counted = self.store.count(selection, &bounds).await?;
            let counted = spec.limit.map_or(counted, |l| counted.min(l));
            counted == sink.attempt.counters.rows.load(Ordering::Relaxed)
        };
        if is_data {
            Ok(())
        } else {
            Err(e.into())
        }
    }

    /// Parquet parts of one reader: the store's undecoded batches go to an encoder
    /// thread ([`crate::encoder`]) that decodes and encodes them; its output is
    /// uploaded part by part here.
    async fn parquet_parts(
        &self,
        batches: BatchStream,
        spec: &ExportSpec,
        sink: &mut PartSink<'_, '_>,
    ) -> Result<(), ExportError> {
        let limits = encoder::PartLimits {
            max_rows: spec.part_max_rows.unwrap_or(u64::MAX),
            max_bytes: spec.part_max_bytes.unwrap_or(u64::MAX),
        };
        let (mut stream, decoder) = batches.into_parts();
        let (input, mut output) = encoder::spawn(decoder, limits);
        let attempt = sink.attempt;
        let mut current: Option<(u32, String, PartUpload)> = None;
        let mut grouper = ChunkGrouper::default();
        // A group ready to send.
        let mut ready: Option<encoder::ChunkGroup> = None;
        let mut input_done = false;
        let result: Result<(), ExportError> = async {
            loop {
                tokio::select! {
                    biased;
                    _ = attempt.cancel.cancelled() => return Err(ExportError::Canceled),
                    event = output.recv() => match event {
                        Some(Ok(encoder::EncoderEvent::Finished)) => break,
                        Some(Ok(event)) => upload_parquet(event, &mut current, sink).await?,
                        Some(Err(e)) => return Err(e),
                        None => return Err(ExportError::EncoderStopped),
                    },
                    permit = input.reserve(), if ready.is_some() => {
                        let permit = permit.map_err(|_| ExportError::EncoderStopped)?;
                        if let Some(group) = ready.take() {
                            permit.send(group);
                        }
                    }
                    chunk = stream.next(), if ready.is_none() && !input_done => {
                        match chunk? {
                            Some(chunk) => {
                                attempt
                                    .counters
                                    .bytes
                                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                                ready = grouper.push(chunk);
                            }
                            None => {
                                input_done = true;
                                ready = Some(grouper.last());
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            if let Some((_, _, open)) = current.take() {
                open.abort().await;
            }
        }
        result
    }
}

/// Writes one chunk of a text result into parts, closing each at its limits.
async fn write_text_chunk(
    chunk: &[u8],
    scanner: &mut Scanner,
    current: &mut Option<OpenTextPart>,
    plan: &TextPlan,
    spec: &ExportSpec,
    sink: &mut PartSink<'_, '_>,
) -> Result<(), ExportError> {
    let max_rows = spec.part_max_rows.unwrap_or(u64::MAX);
    let max_bytes = spec.part_max_bytes.unwrap_or(u64::MAX);
    let mut pos = 0;
    while pos < chunk.len() {
        let part = match current.as_mut() {
            Some(p) => p,
            None => {
                let (n, key, upload) = sink.open_part()?;
                current.insert(OpenTextPart::open(n, key, upload, plan, spec.compression).await?)
            }
        };
        // Past the byte limit, finish only the record in progress.
        let byte_room = max_bytes.saturating_sub(part.raw_bytes);
        let (window, rows_room) = if byte_room == 0 {
            (chunk.len() - pos, 1)
        } else {
            let w = (chunk.len() - pos).min(usize::try_from(byte_room).unwrap_or(usize::MAX));
            (w, max_rows - part.rows)
        };
        let (used, records) = scanner.scan(&chunk[pos..pos + window], rows_room);
        part.write_records(&chunk[pos..pos + used], records, plan)
            .await?;
        let counters = sink.attempt.counters;
        counters.rows.fetch_add(records, Ordering::Relaxed);
        counters.bytes.fetch_add(used as u64, Ordering::Relaxed);
        pos += used;
        let at_boundary = scanner.pending() == 0;
        let full =
            part.rows >= max_rows || (part.rows > 0 && part.raw_bytes >= max_bytes && at_boundary);
        if full {
            if let Some(done) = current.take() {
                let finished = done.finish(plan).await?;
                sink.record(finished).await?;
            }
        }
    }
    Ok(())
}

/// Uploads what the Parquet encoder reported: bytes into the open part (opening one
/// first if needed), rows into the counters, a part's end as a recorded part.
async fn upload_parquet(
    event: encoder::EncoderEvent,
    current: &mut Option<(u32, String, PartUpload)>,
    sink: &mut PartSink<'_, '_>,
) -> Result<(), ExportError> {
    match event {
        encoder::EncoderEvent::Data { bytes } => {
            let upload = match current.as_mut() {
                Some((_, _, upload)) => upload,
                None => &mut current.insert(sink.open_part()?).2,
            };
            upload.put(bytes).await
        }
        encoder::EncoderEvent::Rows(n) => {
            sink.attempt.counters.rows.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
        encoder::EncoderEvent::PartEnd { rows } => {
            let (n, key, upload) = match current.take() {
                Some(open) => open,
                None => sink.open_part()?,
            };
            let (bytes, sha256) = upload.finish().await?;
            sink.record(Part {
                n,
                key,
                rows,
                bytes,
                sha256,
            })
            .await
        }
        encoder::EncoderEvent::Finished => Ok(()),
    }
}

/// Gathers the store's chunks into groups of about [`encoder::GROUP_BYTES`], so the
/// encoder thread wakes once per group rather than once per network read.
#[derive(Default)]
struct ChunkGrouper {
    group: Vec<Bytes>,
    bytes: usize,
}

impl ChunkGrouper {
    /// Adds a chunk; a group once it is big enough.
    fn push(&mut self, chunk: Bytes) -> Option<encoder::ChunkGroup> {
        self.bytes += chunk.len();
        self.group.push(chunk);
        if self.bytes < encoder::GROUP_BYTES {
            return None;
        }
        self.bytes = 0;
        Some((std::mem::take(&mut self.group), false))
    }

    /// What is left, as the group that ends the input.
    fn last(&mut self) -> encoder::ChunkGroup {
        self.bytes = 0;
        (std::mem::take(&mut self.group), true)
    }
}

/// Runs a store call unless the attempt is stopped first (a stalled server must not
/// hold a canceled or released attempt).
async fn cancellable<T>(
    cancel: &CancellationToken,
    call: impl std::future::Future<Output = Result<T, logport_store::StoreError>>,
) -> Result<T, ExportError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(ExportError::Canceled),
        r = call => Ok(r?),
    }
}

/// Cuts `[since, until)` at hour boundaries into up to `readers` ranges of about equal
/// row counts (from [`logport_store::Store::hour_counts`]); each range carries its
/// row count. `None` when the result has fewer than `min_rows` rows or sits in a
/// single hour.
fn split_ranges(
    hours: &[(u32, u64)],
    readers: usize,
    min_rows: u64,
    since: i64,
    until: i64,
) -> Option<Vec<(i64, i64, u64)>> {
    let total: u64 = hours.iter().map(|(_, n)| n).sum();
    if total < min_rows || hours.len() < 2 || readers < 2 {
        return None;
    }
    let mut ranges = Vec::with_capacity(readers);
    let (mut start, mut acc, mut taken) = (since, 0u64, 0u64);
    for (i, &(hour, rows)) in hours.iter().enumerate() {
        let target = total * (ranges.len() as u64 + 1) / readers as u64;
        // Close the current range before this hour once it holds its share.
        if acc > 0 && taken + acc >= target && ranges.len() + 1 < readers && i > 0 {
            let cut = i64::from(hour).max(start + 1);
            ranges.push((start, cut, acc));
            taken += acc;
            start = cut;
            acc = 0;
        }
        acc += rows;
    }
    ranges.push((start, until, acc));
    (ranges.len() > 1).then_some(ranges)
}

fn file_kind(spec: &ExportSpec) -> (String, &'static str) {
    let base = match spec.format {
        Format::Csv => "csv",
        Format::Tsv => "tsv",
        Format::Jsonl => "jsonl",
        Format::Json => "json",
        Format::Parquet => "parquet",
    };
    let ext = match (spec.format, spec.compression) {
        (Format::Parquet, _) | (_, Compression::None) => base.to_string(),
        (_, Compression::Gzip) => format!("{base}.gz"),
        (_, Compression::Zstd) => format!("{base}.zst"),
    };
    let content_type = files::content_type(&format!("x.{ext}"));
    (ext, content_type)
}

fn text_plan(spec: &ExportSpec) -> TextPlan {
    let mut head = Vec::new();
    if spec.utf8_bom {
        head.extend_from_slice("\u{feff}".as_bytes());
    }
    let header = |sep: &str| format!("{}\n", spec.fields.join(sep)).into_bytes();
    let (encoding, json_array) = match spec.format {
        Format::Csv => {
            head.extend(header(","));
            (Encoding::Csv, false)
        }
        Format::Tsv => {
            head.extend(header("\t"));
            (Encoding::Tsv, false)
        }
        Format::Json => {
            head.extend_from_slice(b"{\"data\":[\n");
            (Encoding::JsonLines, true)
        }
        Format::Jsonl | Format::Parquet => (Encoding::JsonLines, false),
    };
    TextPlan {
        encoding,
        head,
        json_array,
    }
}

/// An object being uploaded: hashed and counted as it goes, visible only when
/// `finish`ed (a multipart upload completes, or a single put happens).
struct PartUpload {
    writer: BufWriter,
    hasher: Sha256,
    bytes: u64,
}

impl PartUpload {
    async fn put(&mut self, data: Bytes) -> Result<(), ExportError> {
        self.hasher.update(&data);
        self.bytes += data.len() as u64;
        self.writer.put(data).await?;
        if self.bytes > UPLOAD_BUFFER as u64 {
            // The object store writer has begun a multipart upload by now.
            crate::failpoint("mid_upload").await;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(u64, String), ExportError> {
        self.writer
            .shutdown()
            .await
            .map_err(|e| ExportError::Files(e.to_string()))?;
        Ok((self.bytes, hex::encode(self.hasher.finalize())))
    }

    async fn abort(mut self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(error = %e, "could not abort a part upload");
        }
    }
}

/// A text part's compression (or none); output accumulates in the inner `Vec`.
enum Compressor {
    Plain(Vec<u8>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Compressor {
    fn new(c: Compression) -> Result<Compressor, ExportError> {
        Ok(match c {
            Compression::None => Compressor::Plain(Vec::with_capacity(BUF)),
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                Vec::with_capacity(BUF),
                flate2::Compression::new(5),
            )),
            Compression::Zstd => Compressor::Zstd(
                zstd::stream::write::Encoder::new(Vec::with_capacity(BUF), 3)
                    .map_err(|e| ExportError::Compression(format!("zstd: {e}")))?,
            ),
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), ExportError> {
        let r = match self {
            Compressor::Plain(v) => {
                v.extend_from_slice(data);
                Ok(())
            }
            Compressor::Gzip(e) => e.write_all(data),
            Compressor::Zstd(e) => e.write_all(data),
        };
        r.map_err(|e| ExportError::Compression(e.to_string()))
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Compressor::Plain(v) => v,
            Compressor::Gzip(e) => e.get_mut(),
            Compressor::Zstd(e) => e.get_mut(),
        }
    }

    fn finish(self) -> Result<Vec<u8>, ExportError> {
        let r = match self {
            Compressor::Plain(v) => Ok(v),
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
        };
        r.map_err(|e| ExportError::Compression(e.to_string()))
    }
}

/// The text part being written.
struct OpenTextPart {
    n: u32,
    key: String,
    upload: PartUpload,
    compressor: Compressor,
    /// Uncompressed bytes written (for `part_max_bytes`).
    raw_bytes: u64,
    rows: u64,
    /// A JSON-array record ended and the next one needs a comma first.
    separator_due: bool,
}

impl OpenTextPart {
    async fn open(
        n: u32,
        key: String,
        upload: PartUpload,
        plan: &TextPlan,
        compression: Compression,
    ) -> Result<OpenTextPart, ExportError> {
        let mut p = OpenTextPart {
            n,
            key,
            upload,
            compressor: Compressor::new(compression)?,
            raw_bytes: 0,
            rows: 0,
            separator_due: false,
        };
        p.write(&plan.head).await?;
        Ok(p)
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), ExportError> {
        self.raw_bytes += data.len() as u64;
        self.compressor.write(data)?;
        if self.compressor.output().len() >= BUF {
            let out = std::mem::replace(self.compressor.output(), Vec::with_capacity(BUF));
            self.upload.put(Bytes::from(out)).await?;
        }
        Ok(())
    }

    /// Writes whole records (and possibly the start of the next).
    async fn write_records(
        &mut self,
        data: &[u8],
        records: u64,
        plan: &TextPlan,
    ) -> Result<(), ExportError> {
        self.rows += records;
        if !plan.json_array {
            return self.write(data).await;
        }
        // Each record's closing newline is held back and becomes `,\n` when another
        // record follows in the same part.
        let mut start = 0;
        while start < data.len() {
            let end = memchr::memchr(b'\n', &data[start..]).map(|i| start + i);
            let segment = &data[start..end.unwrap_or(data.len())];
            if !segment.is_empty() {
                if self.separator_due {
                    self.write(b",\n").await?;
                    self.separator_due = false;
                }
                self.write(segment).await?;
            }
            match end {
                Some(e) => {
                    self.separator_due = true;
                    start = e + 1;
                }
                None => break,
            }
        }
        Ok(())
    }

    async fn finish(mut self, plan: &TextPlan) -> Result<Part, ExportError> {
        if plan.json_array {
            self.write(b"\n]}\n").await?;
        }
        let rest = self.compressor.finish()?;
        if !rest.is_empty() {
            self.upload.put(Bytes::from(rest)).await?;
        }
        let (bytes, sha256) = self.upload.finish().await?;
        Ok(Part {
            n: self.n,
            key: self.key,
            rows: self.rows,
            bytes,
            sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_results_split_into_even_hour_ranges() {
        const M: u64 = 1_000_000;
        let h = |i: u32| 1_793_491_200 + i * 3600;
        let hours: Vec<(u32, u64)> = (0..10).map(|i| (h(i), 300_000)).collect();
        let r = split_ranges(&hours, 2, M, 1_793_491_000, 1_793_600_000).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (1_793_491_000, i64::from(h(5)), 1_500_000));
        assert_eq!(r[1], (i64::from(h(5)), 1_793_600_000, 1_500_000));
        let r3 = split_ranges(&hours, 3, M, i64::from(h(0)), i64::from(h(10))).unwrap();
        assert_eq!(r3.iter().map(|x| x.2).sum::<u64>(), 3_000_000);
        assert!(
            r3.windows(2).all(|w| w[0].1 == w[1].0),
            "ranges are contiguous"
        );
        // Skewed: one busy hour cannot be split, the rest is one range.
        let skew = [(h(0), 2_000_000), (h(1), 10)];
        assert_eq!(
            split_ranges(&skew, 2, M, 0, 99_999_999_999).unwrap().len(),
            2
        );
        assert!(
            split_ranges(&[(h(0), 5_000_000)], 2, M, 0, 1).is_none(),
            "one hour"
        );
        assert!(
            split_ranges(&hours[..2], 2, M, 0, 1).is_none(),
            "too few rows"
        );
        assert!(split_ranges(&hours, 1, M, 0, 1).is_none());
    }
}
