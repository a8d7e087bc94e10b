//! Finding record boundaries in the store's text encodings.
//!
//! Parts are cut at record boundaries and rows are counted without parsing values:
//! in `JSONEachRow` and `TabSeparated` every `\n` ends a record (newlines inside
//! values are escaped); in `CSV` a `\n` ends a record only outside double quotes
//! (ClickHouse writes an embedded quote as `""`, which toggles the state twice).
//! The scanner also remembers whether the latest record began like a server exception
//! ([`logport_store::EXCEPTION_HEAD`]), which an old server appends to a response it
//! already began.

pub use logport_store::Framing;
use logport_store::EXCEPTION_HEAD;

pub struct Scanner {
    framing: Framing,
    in_quotes: bool,
    /// Bytes scanned so far.
    total: u64,
    /// Stream offset where the current (unfinished) record began.
    record_start: u64,
    /// The first bytes of the current record, to spot an exception.
    head: Vec<u8>,
    /// Offset of the latest record that began like an exception.
    suspect_at: Option<u64>,
    /// The last bytes of the stream (at most `TAIL_MAX` plus one chunk).
    tail: Vec<u8>,
}

const HEAD: usize = EXCEPTION_HEAD.len();
const TAIL_MAX: usize = 16 * 1024;

impl Scanner {
    pub fn new(framing: Framing) -> Self {
        Scanner {
            framing,
            in_quotes: false,
            total: 0,
            record_start: 0,
            head: Vec::with_capacity(HEAD),
            suspect_at: None,
            tail: Vec::new(),
        }
    }

    /// Scans `buf` up to the end of the `max_records`-th record that ends in it.
    /// Returns `(bytes consumed, records ended)`; consumed == buf.len() when fewer
    /// than `max_records` end in `buf`.
    pub fn scan(&mut self, buf: &[u8], max_records: u64) -> (usize, u64) {
        let mut records = 0u64;
        let mut pos = 0usize;
        while pos < buf.len() && records < max_records {
            let rest = &buf[pos..];
            // One search per line; in CSV the quotes before the newline decide
            // whether it ends the record (an odd count flips the state). Counting
            // bytes vectorises, where stopping at every quote did not.
            let Some(i) = memchr::memchr(b'\n', rest) else {
                self.flip_quotes(rest);
                self.note(rest);
                pos = buf.len();
                break;
            };
            let line = &rest[..=i];
            self.flip_quotes(line);
            self.note(line);
            pos += i + 1;
            if !self.in_quotes {
                records += 1;
                self.record_start = self.total;
                self.head.clear();
            }
        }
        self.keep_tail(&buf[..pos]);
        (pos, records)
    }

    fn flip_quotes(&mut self, bytes: &[u8]) {
        if self.framing == Framing::Csv {
            let quotes = bytes.iter().filter(|&&b| b == b'"').count();
            self.in_quotes ^= quotes % 2 == 1;
        }
    }

    fn note(&mut self, bytes: &[u8]) {
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            if self.head == EXCEPTION_HEAD {
                self.suspect_at = Some(self.record_start);
            }
        }
        self.total += bytes.len() as u64;
    }

    fn keep_tail(&mut self, bytes: &[u8]) {
        if bytes.len() >= TAIL_MAX {
            self.tail.clear();
            self.tail
                .extend_from_slice(&bytes[bytes.len() - TAIL_MAX..]);
            return;
        }
        if self.tail.len() + bytes.len() > 2 * TAIL_MAX {
            let cut = self.tail.len() + bytes.len() - TAIL_MAX;
            self.tail.drain(..cut.min(self.tail.len()));
        }
        self.tail.extend_from_slice(bytes);
    }

    /// Bytes after the last record end (a truncated record, if any).
    pub fn pending(&self) -> u64 {
        self.total - self.record_start
    }

    /// From the latest record that began like an exception to the end of the
    /// stream, if that is still in the kept tail: an exception appended by the server.
    pub fn suspected_exception(&self) -> Option<&[u8]> {
        let at = self.suspect_at?;
        let back = usize::try_from(self.total - at).ok()?;
        (back <= self.tail.len()).then(|| &self.tail[self.tail.len() - back..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(framing: Framing, chunks: &[&[u8]]) -> (u64, u64) {
        let mut s = Scanner::new(framing);
        let mut n = 0;
        for c in chunks {
            let (used, r) = s.scan(c, u64::MAX);
            assert_eq!(used, c.len());
            n += r;
        }
        (n, s.pending())
    }

    #[test]
    fn csv_newlines_inside_quotes_do_not_end_records() {
        let data = b"\"a\nb\",1\n\"x\"\"y\",2\n\"\",\\N\n";
        assert_eq!(count(Framing::Csv, &[data]), (3, 0));
        // Split at every position: the count is the same.
        for i in 0..data.len() {
            assert_eq!(
                count(Framing::Csv, &[&data[..i], &data[i..]]),
                (3, 0),
                "split at {i}"
            );
        }
        assert_eq!(count(Framing::Csv, &[b"\"open\n"]), (0, 6));
    }

    #[test]
    fn lines() {
        assert_eq!(count(Framing::Lines, &[b"{\"a\":\"x\\ny\"}\n{}\n"]), (2, 0));
        assert_eq!(count(Framing::Lines, &[b"{}\n{"]), (1, 1));
    }

    #[test]
    fn stops_after_max_records() {
        let mut s = Scanner::new(Framing::Csv);
        let data = b"1\n\"2\n\"\n3\n";
        assert_eq!(s.scan(data, 2), (7, 2));
        assert_eq!(s.scan(&data[7..], 2), (2, 1));
    }

    #[test]
    fn spots_a_trailing_exception() {
        let mut s = Scanner::new(Framing::Csv);
        s.scan(b"1,\"a\"\nCo", u64::MAX);
        s.scan(
            b"de: 241, e.displayText() = DB::Exception: Memory\nlimit\n",
            u64::MAX,
        );
        let e = s.suspected_exception().unwrap();
        assert!(
            e.starts_with(b"Code: 241, e.displayText() = DB::Exception: Memory\nlimit"),
            "{}",
            String::from_utf8_lossy(e)
        );
        let mut clean = Scanner::new(Framing::Csv);
        clean.scan(b"\"Code: 1 DB::Exception\"\n", u64::MAX);
        assert!(clean.suspected_exception().is_none());
    }
}
