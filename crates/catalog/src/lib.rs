//! The catalog of log slices: what each slice's rows hold, in which ClickHouse types,
//! which fields may be filtered and exported by default; plus the validation of ingest
//! values and export requests against it. No I/O beyond reading schema files, and no
//! wire format: validated rows go to a [`ingest::RowSink`] the store implements.

pub mod ingest;
pub mod schema;
pub mod spec;
pub mod time;
pub mod types;
pub mod value;

pub use schema::{Catalog, Field, Partition, SchemaError, Slice, TENANT_COLUMN};
pub use spec::{
    BucketRequest, Compression, DateDimension, ExportRequest, ExportSpec, Filter, FilterOp,
    FilterRequest, Format, SpecError,
};
pub use types::{ColumnType, TypeFamily};
pub use value::Value;
