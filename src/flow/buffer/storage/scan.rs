//! Reading a segment back: the resyncing scanner shared by the store's
//! reader, its recovery at open and `flowgate buffer check`.
//!
//! **The scanner.** A record at offset `p` is taken when its frame fits in
//! the segment, its crc matches and its seq is in `expected ..= upper`,
//! where `upper` is `expected + (end - p) / 16` (no more records fit in
//! what is left) and, when the first seq of the next segment (`bound`) is
//! known, below it. Otherwise the scanner searches forward, byte by byte,
//! for the first offset where such a record starts, and reports the bytes
//! in between as `Skipped` with `lost = expected..seq` (empty for inserted
//! garbage). A search that reaches the end reports `End` with the unusable
//! tail (`damaged_at`: a torn tail in the newest segment) and, with a
//! bound, `lost = expected..bound`. Every step advances the offset or, for
//! a `Skipped` that resumes where it began, the expected seq (and the next
//! step is then the record there), so a scan always terminates.
//! Memory: a 256 KiB window, more only while one larger record is read.

use super::record::{self, HEADER_LEN, Header, MAX_RECORD, SEGMENT_MAGIC};
use super::segment::SEGMENT_HEADER_LEN;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How much the scanner reads at once.
pub const READ_CHUNK: usize = 256 << 10;

/// A bounded view of a file: bytes `start .. start + buf.len()`.
#[derive(Debug, Default)]
struct Window {
    buf: Vec<u8>,
    start: u64,
}

impl Window {
    /// Bytes `at .. at + n` of the file, or fewer where `end` or the file
    /// ends first.
    fn get(&mut self, file: &File, end: u64, at: u64, n: usize) -> io::Result<&[u8]> {
        let want = (n as u64).min(end.saturating_sub(at)) as usize;
        let held = self.start + self.buf.len() as u64;
        if at < self.start || at + want as u64 > held {
            if at >= self.start && at < held {
                self.buf.drain(..(at - self.start) as usize);
            } else {
                self.buf.clear();
            }
            if want <= READ_CHUNK && self.buf.capacity() > 4 * READ_CHUNK {
                self.buf.shrink_to(READ_CHUNK); // after one large record
            }
            self.start = at;
            let target = want.max(READ_CHUNK).min(end.saturating_sub(at) as usize);
            let mut filled = self.buf.len();
            self.buf.resize(target, 0);
            while filled < target {
                match file.read_at(&mut self.buf[filled..], at + filled as u64) {
                    Ok(0) => break, // the file is shorter than `end`
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.truncate(filled);
                        return Err(e);
                    }
                }
            }
            self.buf.truncate(filled);
        }
        let from = (at - self.start) as usize;
        let to = (from + want).min(self.buf.len());
        Ok(&self.buf[from..to])
    }
}

/// Whether a header at `at` could start a record: a length within
/// `MAX_RECORD`, a frame that ends by `end`, a seq in `seqs`.
fn plausible(h: &Header, at: u64, seqs: std::ops::RangeInclusive<u64>, end: u64) -> bool {
    (h.len as usize) <= MAX_RECORD && seqs.contains(&h.seq) && at + h.frame_len() as u64 <= end
}

/// One step of a scan.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A valid record.
    Record { seq: u64, payload: &'a [u8] },
    /// Bytes `at .. resumed_at` held no valid record; the record at
    /// `resumed_at` has seq `lost.end`.
    Skipped {
        at: u64,
        resumed_at: u64,
        lost: Range<u64>,
    },
    /// The end of the segment. `damaged_at`: where unusable bytes begin,
    /// when the segment does not end on a record (in the newest segment, a
    /// torn tail). `lost.start` is the seq the segment would go on with;
    /// with a bound, `lost` reaches it (the seqs missing at the end).
    End {
        damaged_at: Option<u64>,
        lost: Range<u64>,
    },
}

/// Reads one segment from its first record to `end`.
#[derive(Debug)]
pub struct Scanner {
    file: File,
    path: PathBuf,
    first_seq: u64,
    window: Window,
    pos: u64,
    end: u64,
    expected: u64,
    bound: Option<u64>,
    magic_ok: bool,
}

impl Scanner {
    /// Opens `path`, whose first record should be `first_seq`. `end`: how
    /// far to read (`None`: the file's length); `bound`: the first seq of
    /// the next segment, when there is one.
    pub fn open(
        path: &Path,
        first_seq: u64,
        end: Option<u64>,
        bound: Option<u64>,
    ) -> io::Result<Scanner> {
        let file = File::open(path)?;
        let end = match end {
            Some(end) => end,
            None => file.metadata()?.len(),
        };
        let mut scanner = Scanner {
            file,
            path: path.to_path_buf(),
            first_seq,
            window: Window::default(),
            pos: SEGMENT_HEADER_LEN.min(end),
            end,
            expected: first_seq,
            bound,
            magic_ok: false,
        };
        scanner.magic_ok = scanner
            .window
            .get(&scanner.file, end, 0, SEGMENT_MAGIC.len())?
            == SEGMENT_MAGIC;
        Ok(scanner)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first seq of the segment, as its name says.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Whether the segment starts with `SEGMENT_MAGIC` (a damaged header
    /// does not stop the scan: the records after it may be intact).
    pub fn magic_ok(&self) -> bool {
        self.magic_ok
    }

    /// The offset of the next step.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The seq the next record should have.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Moves the end (the writer appended more) and the bound (a segment
    /// was started after this one).
    pub fn set_limits(&mut self, end: u64, bound: Option<u64>) {
        self.end = end.max(self.pos);
        self.bound = bound;
    }

    /// The largest seq a record found at or after `from` may have.
    fn upper(&self, from: u64) -> u64 {
        let fit = self.expected + self.end.saturating_sub(from) / HEADER_LEN as u64;
        match self.bound {
            Some(b) => fit.min(b.saturating_sub(1)),
            None => fit,
        }
    }

    /// A valid record at `at` with a seq in `expected ..= upper`: `(seq,
    /// frame length)`.
    fn record_at(&mut self, at: u64, upper: u64) -> io::Result<Option<(u64, usize)>> {
        let Some(h) = Header::parse(self.window.get(&self.file, self.end, at, HEADER_LEN)?) else {
            return Ok(None);
        };
        if !self.plausible(&h, at, upper) {
            return Ok(None);
        }
        let frame = self.window.get(&self.file, self.end, at, h.frame_len())?;
        Ok(record::crc_matches(frame).then_some((h.seq, h.frame_len())))
    }

    fn plausible(&self, h: &Header, at: u64, upper: u64) -> bool {
        plausible(h, at, self.expected..=upper, self.end)
    }

    /// The first offset at or after `from` where a valid record starts.
    fn resync(&mut self, from: u64, upper: u64) -> io::Result<Option<(u64, u64)>> {
        let mut q = from;
        while q + HEADER_LEN as u64 <= self.end {
            let chunk = self.window.get(&self.file, self.end, q, READ_CHUNK)?;
            if chunk.len() < HEADER_LEN {
                self.end = q + chunk.len() as u64; // the file shrank
                break;
            }
            let (seqs, end) = (self.expected..=upper, self.end);
            let candidate = (0..=chunk.len() - HEADER_LEN).find(|&i| {
                Header::parse(&chunk[i..])
                    .is_some_and(|h| plausible(&h, q + i as u64, seqs.clone(), end))
            });
            match candidate {
                Some(i) => {
                    let at = q + i as u64;
                    if let Some((seq, _)) = self.record_at(at, upper)? {
                        return Ok(Some((at, seq)));
                    }
                    q = at + 1;
                }
                None => q += (chunk.len() - HEADER_LEN + 1) as u64,
            }
        }
        Ok(None)
    }

    /// The next step. After `End`, `next_step` returns `End` again until
    /// `set_limits` moves the end.
    pub fn next_step(&mut self) -> io::Result<Step<'_>> {
        if self.pos >= self.end {
            return Ok(self.end_step(None));
        }
        let at = self.pos;
        let upper = self.upper(at);
        match self.record_at(at, upper)? {
            Some((seq, len)) if seq == self.expected => {
                self.pos += len as u64;
                self.expected += 1;
                let frame = self.window.get(&self.file, self.end, at, len)?;
                Ok(Step::Record {
                    seq,
                    payload: &frame[HEADER_LEN..],
                })
            }
            // Valid, but seqs are missing before it.
            Some((seq, _)) => Ok(self.skip(at, at, seq)),
            None => match self.resync(at + 1, upper)? {
                Some((resumed_at, seq)) => Ok(self.skip(at, resumed_at, seq)),
                None => {
                    self.pos = self.end;
                    Ok(self.end_step(Some(at)))
                }
            },
        }
    }

    fn skip(&mut self, at: u64, resumed_at: u64, seq: u64) -> Step<'static> {
        let lost = self.expected..seq;
        self.pos = resumed_at;
        self.expected = seq;
        Step::Skipped {
            at,
            resumed_at,
            lost,
        }
    }

    fn end_step(&self, damaged_at: Option<u64>) -> Step<'static> {
        let to = self.bound.unwrap_or(self.expected).max(self.expected);
        Step::End {
            damaged_at,
            lost: self.expected..to,
        }
    }

    /// Leaves the segment: later calls report its end, with every seq from
    /// the current one to the bound lost (used after a read error).
    pub fn abandon(&mut self) {
        self.pos = self.end;
    }
}

#[cfg(test)]
mod tests;
