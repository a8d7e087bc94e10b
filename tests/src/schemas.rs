//! Schema directories for `LOGPORT_SCHEMA_DIR`: the repository's schemas plus test
//! slices of the tests' own.

use std::path::Path;

/// A slice with the column types `clicks` lacks (signed integers, `Nullable(String)`,
/// `Date`, `UUID`), loaded with `LOGPORT_SCHEMA_DIR` next to the repository's schemas.
pub const TYPED_SCHEMA: &str = r#"
name = "typed"
description = "Test slice with one column of each scalar type."
group = "system"
partition = "day"
sort_key = ["label"]

[[fields]]
name = "label"
type = "String"
description = "Row label."
filterable = true
default = true
required = true

[[fields]]
name = "note"
type = "Nullable(String)"
description = "Nullable text."
filterable = true
default = true

[[fields]]
name = "big"
type = "UInt64"
description = "Unsigned 64-bit."
filterable = true
default = true

[[fields]]
name = "delta"
type = "Int64"
description = "Signed 64-bit."
filterable = true
default = true

[[fields]]
name = "small"
type = "Int8"
description = "Signed 8-bit."
filterable = true
default = false

[[fields]]
name = "ratio"
type = "Float64"
description = "A double."
filterable = true
default = false

[[fields]]
name = "maybe_n"
type = "Nullable(Int32)"
description = "Nullable signed 32-bit."
filterable = true
default = false

[[fields]]
name = "day"
type = "Date"
description = "A date."
filterable = true
default = false

[[fields]]
name = "uid"
type = "UUID"
description = "A UUID."
filterable = true
default = false

[[fields]]
name = "kind"
type = "Enum8('none' = 0, 'a b' = 1, 'x-y' = -2)"
description = "An enum."
filterable = true
default = false

[[fields]]
name = "lc"
type = "LowCardinality(String)"
description = "Dictionary text."
filterable = true
default = false
"#;

/// A schema directory: the repository's `schemas/*.toml` plus `extra` files (name,
/// TOML text).
pub fn schema_dir_with(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("logport-schemas-")
        .tempdir()
        .expect("temp dir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    for entry in std::fs::read_dir(&repo).expect("the repository's schemas/") {
        let path = entry.expect("a schema file").path();
        if let (Some("toml"), Some(name)) =
            (path.extension().and_then(|e| e.to_str()), path.file_name())
        {
            std::fs::copy(&path, dir.path().join(name)).expect("copy a schema");
        }
    }
    for (name, toml) in extra {
        std::fs::write(dir.path().join(name), toml).expect("write a test schema");
    }
    dir
}

/// The repository's schemas plus `typed.toml` ([`TYPED_SCHEMA`]).
pub fn typed_schema_dir() -> tempfile::TempDir {
    schema_dir_with(&[("typed.toml", TYPED_SCHEMA)])
}
