//! ClickHouse failures, classified once: callers decide retry-or-fail from
//! [`StoreError::is_retryable`] and nothing else, and tell a timeout by
//! [`StoreError::is_timeout`]. The server's error codes never leave this crate.

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The server answered with an exception.
    #[error("ClickHouse error {}: {}", .0.code, .0.message)]
    Server(Exception),
    /// No answer: connection refused, reset, DNS.
    #[error("ClickHouse is unreachable: {0}")]
    Unreachable(String),
    #[error("ClickHouse did not answer in time")]
    Timeout,
    /// Anything else (a malformed response, an encoding bug).
    #[error("ClickHouse client error: {0}")]
    Client(String),
}

/// An exception the server answered with. What it means is told by
/// [`StoreError`]'s predicates; its code is the store's business.
#[derive(Debug, Clone)]
pub struct Exception {
    code: u32,
    message: String,
}

/// The server's error codes the store acts on.
pub(crate) mod codes {
    /// Another process added the column first (DUPLICATE_COLUMN, ILLEGAL_COLUMN).
    pub const DUPLICATE_COLUMN: [u32; 2] = [15, 44];
    /// `max_execution_time` passed.
    pub const TIMEOUT_EXCEEDED: u32 = 159;
    /// A query with the same id is running: another writer holds the ingest fence
    /// ([`crate::insert`]).
    pub const QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING: u32 = 216;
}

/// Exception codes a later attempt can succeed past (overload, timeouts, network,
/// replicas). Everything else (syntax, unknown table or column, access, limits) is a
/// property of the request and fails the same way every time.
const RETRYABLE_CODES: &[u32] = &[
    3,   // UNEXPECTED_END_OF_FILE
    159, // TIMEOUT_EXCEEDED
    160, // TOO_SLOW
    164, // READONLY (a replica restarting)
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    225, // NO_ZOOKEEPER
    241, // MEMORY_LIMIT_EXCEEDED (other queries may have finished)
    242, // TABLE_IS_READ_ONLY
    252, // TOO_MANY_PARTS
    285, // TOO_FEW_LIVE_REPLICAS
    319, // UNKNOWN_STATUS_OF_INSERT
    425, // SYSTEM_ERROR
    999, // KEEPER_EXCEPTION
];

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Server(e) => RETRYABLE_CODES.contains(&e.code),
            StoreError::Unreachable(_) | StoreError::Timeout => true,
            StoreError::Client(_) => false,
        }
    }

    /// The query ran out of time: the server's `max_execution_time` or the
    /// client's deadline. A narrower query may fit.
    pub fn is_timeout(&self) -> bool {
        matches!(self, StoreError::Timeout) || self.code() == Some(codes::TIMEOUT_EXCEEDED)
    }

    /// The server answered (with an exception), so it is not still running the query.
    pub(crate) fn is_server_answer(&self) -> bool {
        matches!(self, StoreError::Server(_))
    }

    /// Another writer holds the table's ingest fence.
    pub(crate) fn is_fence_busy(&self) -> bool {
        self.code() == Some(codes::QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING)
    }

    /// The column exists already (another process added it).
    pub(crate) fn is_duplicate_column(&self) -> bool {
        self.code()
            .is_some_and(|c| codes::DUPLICATE_COLUMN.contains(&c))
    }

    pub(crate) fn code(&self) -> Option<u32> {
        match self {
            StoreError::Server(e) => Some(e.code),
            _ => None,
        }
    }

    /// A metric label: the server's error code, or what kind of failure it was.
    pub(crate) fn code_label(&self) -> String {
        match self {
            StoreError::Server(e) => e.code.to_string(),
            StoreError::Unreachable(_) => "unreachable".into(),
            StoreError::Timeout => "timeout".into(),
            StoreError::Client(_) => "client".into(),
        }
    }

    /// Parses an exception text of any server version: `Code: 60, e.displayText() =
    /// DB::Exception: ...` (18.x) or `Code: 60. DB::Exception: ...` (current).
    pub(crate) fn from_exception_text(text: &str) -> StoreError {
        let code = text
            .find("Code: ")
            .map(|i| &text[i + 6..])
            .and_then(|rest| {
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits.parse().ok()
            });
        match code {
            Some(code) => StoreError::Server(Exception {
                code,
                message: text.trim().to_string(),
            }),
            None => StoreError::Client(text.trim().to_string()),
        }
    }
}

impl From<clickhouse::error::Error> for StoreError {
    fn from(e: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error as E;
        match e {
            E::BadResponse(text) => StoreError::from_exception_text(&text),
            E::Network(inner) => StoreError::Unreachable(inner.to_string()),
            E::TimedOut => StoreError::Timeout,
            other => StoreError::Client(other.to_string()),
        }
    }
}

/// How every exception text of the server begins: a record of a text encoding that
/// begins so may be the exception an old server appended ([`trailing_exception`]).
pub const EXCEPTION_HEAD: &[u8] = b"Code: ";

/// Detects an exception that an old server (18.x) appended to a response it had
/// already started with `200 OK`. Output formats we request never begin a record with
/// `Code: ` (CSV quotes strings, JSON rows start with `{`), so a last record that does
/// is the server's error text, not data.
pub fn trailing_exception(last_record: &[u8]) -> Option<StoreError> {
    let text = std::str::from_utf8(last_record).ok()?;
    if text.starts_with("Code: ") && text.contains("DB::Exception") {
        Some(StoreError::from_exception_text(text))
    } else {
        None
    }
}

/// [`trailing_exception`] for a whole buffer of newline-framed records (JSONEachRow):
/// the exception starts at the last line that begins with `Code: `.
pub fn exception_in_lines(buf: &[u8]) -> Option<StoreError> {
    let start = (0..buf.len())
        .rev()
        .find(|&i| (i == 0 || buf[i - 1] == b'\n') && buf[i..].starts_with(b"Code: "))?;
    trailing_exception(&buf[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes_of_both_generations() {
        let old = StoreError::from_exception_text(
            "Code: 60, e.displayText() = DB::Exception: Table x.y doesn't exist., e.what() = DB::Exception\n",
        );
        assert_eq!(old.code(), Some(60));
        assert!(!old.is_retryable());
        let new = StoreError::from_exception_text(
            "Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES) (version 24.8.1.1)",
        );
        assert_eq!(new.code(), Some(202));
        assert!(new.is_retryable());
        assert!(StoreError::Unreachable("refused".into()).is_retryable());
        assert!(!StoreError::Client("garbage".into()).is_retryable());
        assert!(StoreError::Timeout.is_timeout());
        assert!(StoreError::from_exception_text(
            "Code: 159, e.displayText() = DB::Exception: Timeout exceeded: elapsed 2.6 seconds, maximum: 1, e.what() = DB::Exception"
        )
        .is_timeout());
        assert!(!new.is_timeout());
    }

    #[test]
    fn detects_trailing_exceptions_only() {
        assert!(trailing_exception(
            b"Code: 241, e.displayText() = DB::Exception: Memory limit exceeded, e.what() = DB::Exception\n"
        )
        .is_some());
        assert!(trailing_exception(b"\"Code: 241, e.displayText() = DB::Exception\"\n").is_none());
        assert!(trailing_exception(b"{\"a\":\"Code: 1 DB::Exception\"}\n").is_none());
        assert!(trailing_exception(b"1,2,3\n").is_none());
        let multi = b"{\"a\":1}\nCode: 62, e.displayText() = DB::Exception: Syntax error\n. Expected x, e.what() = DB::Exception\n";
        assert_eq!(exception_in_lines(multi).and_then(|e| e.code()), Some(62));
        assert!(exception_in_lines(b"{\"a\":\"Code: 1 DB::Exception\"}\n").is_none());
    }
}
