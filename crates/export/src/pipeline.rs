//! One attempt of one export: ClickHouse's formatted stream, cut into parts at record
//! boundaries, each part uploaded with its sha256, then the manifest.
//!
//! Nothing here holds more than a chunk of the result: bytes flow from the HTTP
//! response of ClickHouse through a small buffer into a multipart upload. CSV, TSV and
//! JSON lines are ClickHouse's own output (`CSV`, `TabSeparated`, `JSONEachRow` — the
//! fastest path there is); `json` wraps `JSONEachRow` records in `{"data":[…]}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use logport_catalog::{time, Catalog, ExportRequest, ExportSpec, Format, SpecLimits};
use logport_queue::{Job, JobStore, Lease, Part, Progress};
use logport_store::{Selection, Store};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::files::{self, Files};
use crate::scan::{Framing, Scanner};
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
pub struct Outcome {
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
    pub request: &'a serde_json::Value,
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

/// How one export format is produced.
struct Plan {
    clickhouse_format: &'static str,
    framing: Framing,
    ext: &'static str,
    header: Option<Vec<u8>>,
    /// Wrap records as `{"data":[r1,\nr2]}`.
    json_array: bool,
}

fn plan(spec: &ExportSpec) -> Result<Plan, ExportError> {
    let header = |sep: &str| Some(format!("{}\n", spec.fields.join(sep)).into_bytes());
    Ok(match spec.format {
        Format::Csv => Plan {
            clickhouse_format: "CSV",
            framing: Framing::Csv,
            ext: "csv",
            header: header(","),
            json_array: false,
        },
        Format::Tsv => Plan {
            clickhouse_format: "TabSeparated",
            framing: Framing::Lines,
            ext: "tsv",
            header: header("\t"),
            json_array: false,
        },
        Format::Jsonl => Plan {
            clickhouse_format: "JSONEachRow",
            framing: Framing::Lines,
            ext: "jsonl",
            header: None,
            json_array: false,
        },
        Format::Json => Plan {
            clickhouse_format: "JSONEachRow",
            framing: Framing::Lines,
            ext: "json",
            header: Some(b"{\"data\":[\n".to_vec()),
            json_array: true,
        },
        Format::Parquet => {
            return Err(ExportError::Unsupported("parquet".into()));
        }
    })
}

/// Settings that make ClickHouse's text output exact and identical across versions.
const OUTPUT_SETTINGS: &[(&str, &str)] = &[
    ("output_format_json_quote_64bit_integers", "0"),
    ("output_format_json_escape_forward_slashes", "0"),
];

/// Runs export attempts.
pub struct Exporter {
    pub store: Store,
    pub files: Files,
    pub catalog: Arc<Catalog>,
    pub limits: SpecLimits,
}

impl Exporter {
    /// Validates a stored request again against today's catalog.
    pub fn spec_of(&self, job: &Job) -> Result<ExportSpec, ExportError> {
        let request: ExportRequest = serde_json::from_value(job.request.clone()).map_err(|e| {
            ExportError::InvalidRequest(format!("stored request does not parse: {e}"))
        })?;
        request
            .validate(&self.catalog, &self.limits)
            .map_err(|e| ExportError::InvalidRequest(e.to_string()))
    }

    pub async fn run(&self, a: Attempt<'_>) -> Result<Outcome, ExportError> {
        let job = a.job;
        let spec = self.spec_of(job)?;
        let slice = self
            .catalog
            .slice(&spec.slice)
            .ok_or_else(|| ExportError::InvalidRequest(format!("unknown slice {}", spec.slice)))?;
        let plan = plan(&spec)?;
        let selection = Selection {
            database: self.store.database(),
            slice,
            tenant: &job.tenant,
            spec: &spec,
            watermark: Some(job.watermark),
        };
        let sql = selection.export_sql();
        let query_id = format!("logport-{}-{}", job.id, a.lease.attempt);
        let prefix = files::attempt_prefix(&job.tenant, &job.id, a.lease.attempt);
        tracing::debug!(%sql, %query_id, "export query");

        let mut stream =
            self.store
                .stream(&sql, plan.clickhouse_format, &query_id, OUTPUT_SETTINGS)?;
        let mut scanner = Scanner::new(plan.framing);
        let max_rows = spec.part_max_rows.unwrap_or(u64::MAX);
        let mut parts: Vec<Part> = Vec::new();
        let mut current: Option<PartWriter> = None;

        let result: Result<(), ExportError> = async {
            loop {
                let chunk = tokio::select! {
                    biased;
                    _ = a.cancel.cancelled() => return Err(ExportError::Canceled),
                    next = stream.next() => next?,
                };
                let Some(chunk) = chunk else { break };
                let mut pos = 0;
                while pos < chunk.len() {
                    let part = match current.as_mut() {
                        Some(p) => p,
                        None => current.insert(
                            self.open_part(&prefix, parts.len() as u32 + 1, &plan)
                                .await?,
                        ),
                    };
                    let (used, records) = scanner.scan(&chunk[pos..], max_rows - part.rows);
                    part.write_records(&chunk[pos..pos + used], records, &plan)
                        .await?;
                    a.counters.rows.fetch_add(records, Ordering::Relaxed);
                    a.counters.bytes.fetch_add(used as u64, Ordering::Relaxed);
                    pos += used;
                    if part.rows >= max_rows {
                        if let Some(done) = current.take() {
                            parts.push(self.close_part(done, &plan, &a).await?);
                        }
                    }
                }
            }
            if let Some(text) = scanner.suspected_exception() {
                if let Some(e) = logport_store::trailing_exception(text) {
                    return Err(e.into());
                }
            }
            if scanner.pending() > 0 {
                return Err(ExportError::Truncated);
            }
            // An empty result is still one (header-only) part, so clients always get a file.
            if current.is_none() && parts.is_empty() {
                current = Some(self.open_part(&prefix, 1, &plan).await?);
            }
            if let Some(done) = current.take() {
                parts.push(self.close_part(done, &plan, &a).await?);
            }
            Ok(())
        }
        .await;

        if let Err(e) = result {
            if let Some(mut open) = current.take() {
                open.abort().await;
            }
            if matches!(e, ExportError::Canceled) {
                // Stop the server's work too; the job is already canceled in the store.
                let kill = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    self.store.kill_query(&query_id),
                )
                .await;
                match kill {
                    Ok(Ok(())) => tracing::info!(%query_id, "export query killed"),
                    Ok(Err(e)) => tracing::warn!(error = %e, %query_id, "could not kill export query"),
                    Err(_) => tracing::warn!(%query_id, "KILL QUERY timed out"),
                }
            }
            return Err(e);
        }

        let totals = Progress {
            rows: parts.iter().map(|p| p.rows).sum(),
            bytes: parts.iter().map(|p| p.bytes).sum(),
            parts: parts.len() as u32,
        };
        let manifest_key = format!("{prefix}/manifest.json");
        let request = job.request.clone();
        let manifest = Manifest {
            job_id: &job.id,
            attempt: a.lease.attempt,
            slice: &spec.slice,
            format: spec.format.name(),
            compression: spec.compression.name(),
            fields: &spec.fields,
            request: &request,
            watermark: time::format_rfc3339(job.watermark),
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
            .map_err(|e| ExportError::InvalidRequest(format!("manifest: {e}")))?;
        if a.cancel.is_cancelled() {
            return Err(ExportError::Canceled);
        }
        self.files.put(&manifest_key, Bytes::from(body)).await?;
        Ok(Outcome {
            manifest_key,
            progress: totals,
        })
    }

    async fn open_part(
        &self,
        prefix: &str,
        n: u32,
        plan: &Plan,
    ) -> Result<PartWriter, ExportError> {
        let key = format!("{prefix}/{}", files::part_name(n, plan.ext));
        let mut w = PartWriter {
            n,
            writer: BufWriter::with_capacity(
                self.files.store(),
                Path::from(key.as_str()),
                UPLOAD_BUFFER,
            ),
            key,
            hasher: Sha256::new(),
            buf: Vec::with_capacity(BUF),
            bytes: 0,
            rows: 0,
            separator_due: false,
        };
        if let Some(h) = &plan.header {
            w.write(h).await?;
        }
        Ok(w)
    }

    async fn close_part(
        &self,
        mut w: PartWriter,
        plan: &Plan,
        a: &Attempt<'_>,
    ) -> Result<Part, ExportError> {
        if plan.json_array {
            w.write(b"\n]}\n").await?;
        }
        let part = w.finish().await?;
        if !a
            .jobs
            .add_part(a.lease, &part, logport_queue::now_ms())
            .await?
        {
            return Err(ExportError::LeaseLost);
        }
        a.counters.parts.fetch_add(1, Ordering::Relaxed);
        Ok(part)
    }
}

const BUF: usize = 1 << 20;
/// Bytes the object store writer buffers before it starts a multipart upload (also
/// the size of each uploaded chunk; S3 wants at least 5 MiB).
const UPLOAD_BUFFER: usize = 8 << 20;

/// One part being uploaded: bytes go through a 1 MiB buffer into a multipart upload
/// that becomes visible only at `finish`.
struct PartWriter {
    n: u32,
    key: String,
    writer: BufWriter,
    hasher: Sha256,
    buf: Vec<u8>,
    bytes: u64,
    rows: u64,
    /// A JSON-array record ended and the next one needs a comma first.
    separator_due: bool,
}

impl PartWriter {
    async fn write(&mut self, data: &[u8]) -> Result<(), ExportError> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BUF {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes whole records (and possibly the start of the next). For a JSON array
    /// each record's closing newline is held back and becomes `,\n` when another
    /// record follows in the same part.
    async fn write_records(
        &mut self,
        data: &[u8],
        records: u64,
        plan: &Plan,
    ) -> Result<(), ExportError> {
        if !plan.json_array {
            self.write(data).await?;
            self.rows += records;
            return Ok(());
        }
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
        self.rows += records;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ExportError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hasher.update(&self.buf);
        self.bytes += self.buf.len() as u64;
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(BUF));
        self.writer.put(Bytes::from(chunk)).await?;
        if self.bytes > UPLOAD_BUFFER as u64 {
            // The object store writer has begun a multipart upload by now.
            crate::failpoint("mid_upload");
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Part, ExportError> {
        self.flush().await?;
        self.writer
            .shutdown()
            .await
            .map_err(|e| ExportError::Files(e.to_string()))?;
        Ok(Part {
            n: self.n,
            key: self.key,
            rows: self.rows,
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }

    async fn abort(&mut self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(error = %e, key = %self.key, "could not abort part upload");
        }
    }
}
