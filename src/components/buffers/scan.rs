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
mod tests {
    use super::*;

    /// A segment's bytes and where each record's frame lies.
    fn segment(first_seq: u64, payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut bytes = SEGMENT_MAGIC.to_vec();
        let mut spans = Vec::new();
        for (seq, p) in (first_seq..).zip(payloads) {
            let start = bytes.len();
            record::encode(&mut bytes, seq, p);
            spans.push(start..bytes.len());
        }
        (bytes, spans)
    }

    struct Scanned {
        records: Vec<(u64, Vec<u8>)>,
        skipped: Vec<Range<u64>>,
        damaged_at: Option<u64>,
        end_lost: Range<u64>,
    }

    fn scan(path: &Path, first_seq: u64, bound: Option<u64>) -> Scanned {
        let mut s = Scanner::open(path, first_seq, None, bound).unwrap();
        let limit = 4 * s.end + 10;
        let (mut records, mut skipped) = (Vec::new(), Vec::new());
        for _ in 0..limit {
            match s.next_step().unwrap() {
                Step::Record { seq, payload } => records.push((seq, payload.to_vec())),
                Step::Skipped { lost, .. } => skipped.push(lost),
                Step::End { damaged_at, lost } => {
                    return Scanned {
                        records,
                        skipped,
                        damaged_at,
                        end_lost: lost,
                    };
                }
            }
        }
        panic!("the scan did not end within {limit} steps");
    }

    fn json_payload(rng: &mut fastrand::Rng) -> Vec<u8> {
        let n = rng.usize(0..300);
        let text: String = (0..n).map(|_| rng.alphanumeric()).collect();
        format!(r#"{{"id":{},"message":"{text}"}}"#, rng.u32(..)).into_bytes()
    }

    /// Random truncations, byte flips and inserted garbage: the scan ends,
    /// yields exactly the intact records, in order and unchanged, and
    /// accounts for every other seq as lost.
    #[test]
    fn the_scanner_survives_random_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000001000.seg");
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let (mut resynced, mut torn) = (0, 0);
        for round in 0..3000 {
            let first = 1000;
            let n = rng.usize(1..60);
            let payloads: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    if rng.u8(..8) == 0 {
                        (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect()
                    } else {
                        json_payload(&mut rng)
                    }
                })
                .collect();
            let (good, spans) = segment(first, &payloads);
            // Each byte remembers where it came from (None: garbage).
            let mut file: Vec<(u8, Option<usize>)> = good
                .iter()
                .enumerate()
                .map(|(i, &b)| (b, Some(i)))
                .collect();
            for _ in 0..rng.usize(1..4) {
                match rng.u8(..3) {
                    0 => {
                        let at = rng.usize(..file.len());
                        file[at].0 ^= rng.u8(1..);
                    }
                    1 => {
                        let at = rng.usize(..=file.len());
                        let garbage: Vec<(u8, Option<usize>)> =
                            (0..rng.usize(1..100)).map(|_| (rng.u8(..), None)).collect();
                        file.splice(at..at, garbage);
                    }
                    _ => file.truncate(rng.usize(..=file.len())),
                }
            }
            let bytes: Vec<u8> = file.iter().map(|e| e.0).collect();
            std::fs::write(&path, &bytes).unwrap();
            let intact: Vec<u64> = spans
                .iter()
                .zip(first..)
                .filter(|(span, _)| {
                    let Some(at) = file.iter().position(|e| e.1 == Some(span.start)) else {
                        return false;
                    };
                    (span.start..span.end).zip(at..).all(|(orig, i)| {
                        file.get(i)
                            .is_some_and(|&(b, o)| o == Some(orig) && b == good[orig])
                    })
                })
                .map(|(_, seq)| seq)
                .collect();
            let end = first + n as u64;
            for bound in [Some(end), None] {
                let s = scan(&path, first, bound);
                let yielded: Vec<u64> = s.records.iter().map(|r| r.0).collect();
                assert_eq!(yielded, intact, "round {round}, bound {bound:?}");
                for (seq, p) in &s.records {
                    assert_eq!(p, &payloads[(seq - first) as usize]);
                }
                // Every seq up to where the scan stopped is yielded or lost, once.
                let lost: u64 = s.skipped.iter().map(|r| r.end - r.start).sum();
                resynced += usize::from(
                    !s.skipped.is_empty() && yielded.last() > s.skipped.last().map(|r| &r.end),
                );
                torn += usize::from(bound.is_none() && s.damaged_at.is_some());
                assert_eq!(
                    yielded.len() as u64 + lost,
                    s.end_lost.start - first,
                    "round {round}"
                );
                match bound {
                    Some(b) => assert_eq!(s.end_lost.end, b),
                    None => assert!(s.end_lost.is_empty()),
                }
                // Damage with nothing valid after it: a torn tail.
                let tail_torn = s.damaged_at.is_some();
                if bound.is_none() && !tail_torn && bytes.len() as u64 >= SEGMENT_HEADER_LEN {
                    assert_eq!(s.end_lost.start, intact.last().map_or(first, |l| l + 1));
                }
            }
        }
        // The damage exercised both paths, many times.
        assert!(
            resynced > 500 && torn > 500,
            "resynced {resynced}, torn {torn}"
        );
    }

    #[test]
    fn a_cut_at_every_offset_of_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.seg");
        let payloads: Vec<Vec<u8>> = (0..5)
            .map(|i| format!(r#"{{"n":{i}}}"#).into_bytes())
            .collect();
        let (good, spans) = segment(1, &payloads);
        let last = spans.last().unwrap().clone();
        for cut in last.start + 1..last.end {
            std::fs::write(&path, &good[..cut]).unwrap();
            let s = scan(&path, 1, None);
            assert_eq!(s.records.len(), 4);
            assert_eq!(
                (s.damaged_at, s.end_lost.clone()),
                (Some(last.start as u64), 5..5)
            );
        }
        std::fs::write(&path, &good[..last.start]).unwrap();
        let s = scan(&path, 1, None);
        assert_eq!((s.records.len(), s.damaged_at), (4, None));
    }

    /// Records larger than the window, and damage across window edges.
    #[test]
    fn large_records_and_damage_across_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.seg");
        let mut rng = fastrand::Rng::with_seed(11);
        let payloads: Vec<Vec<u8>> = (0..60)
            .map(|i| {
                vec![
                    b'a' + (i % 26) as u8;
                    if i % 7 == 3 {
                        700 << 10
                    } else {
                        rng.usize(1..90_000)
                    }
                ]
            })
            .collect();
        let (mut bytes, spans) = segment(1, &payloads);
        let damaged = [5usize, 17, 18, 40];
        for &i in &damaged {
            let span = &spans[i];
            let at = rng.usize(span.start..span.end);
            bytes[at] ^= 0x01;
        }
        std::fs::write(&path, &bytes).unwrap();
        let s = scan(&path, 1, Some(61));
        let expected: Vec<u64> = (1..=60)
            .filter(|s| !damaged.contains(&((s - 1) as usize)))
            .collect();
        assert_eq!(s.records.iter().map(|r| r.0).collect::<Vec<_>>(), expected);
        assert_eq!(s.skipped.iter().map(|r| r.end - r.start).sum::<u64>(), 4);
        for (seq, p) in &s.records {
            assert_eq!(p, &payloads[(seq - 1) as usize]);
        }
    }

    #[test]
    fn a_damaged_magic_or_a_short_file_does_not_stop_anything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.seg");
        let (mut bytes, _) = segment(7, &[b"{}".to_vec(), b"[]".to_vec()]);
        bytes[2] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        let s = scan(&path, 7, None);
        assert_eq!(s.records.len(), 2);
        assert!(!Scanner::open(&path, 7, None, None).unwrap().magic_ok());
        std::fs::write(&path, &bytes[..3]).unwrap();
        let s = scan(&path, 7, Some(9));
        assert_eq!((s.records.len(), s.end_lost.clone()), (0, 7..9));
    }
}
