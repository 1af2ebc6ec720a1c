//! Cutting what a line source reads into chunks of whole lines, each at
//! most `max_line_bytes` long (SPEC §10). Every byte read is searched for a
//! newline once: the start of a line carried over from one read to the next
//! is never searched again. A line over the limit is discarded as it
//! streams in — only its first [`SAMPLE_BYTES`] are kept, for the error's
//! sample — so reading it costs time linear in its length and holds at most
//! `max_line_bytes` plus one read.

use super::lines::read_more;
use std::io::Read;

/// How much of a line over the limit is kept, for `.error.sample`.
pub const SAMPLE_BYTES: usize = 1024;

/// What the splitter hands on, in input order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Whole lines (the last one without a newline only at the end of the
    /// input), none longer than the limit.
    Lines(Vec<u8>),
    /// A line over the limit, already discarded.
    TooLong(TooLong),
}

impl Chunk {
    /// Input bytes the chunk stands for, newlines included.
    pub fn consumed(&self) -> u64 {
        match self {
            Self::Lines(bytes) => bytes.len() as u64,
            Self::TooLong(long) => long.consumed,
        }
    }
}

/// A discarded line over the limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong {
    /// Its first bytes, at most [`SAMPLE_BYTES`].
    pub sample: Vec<u8>,
    /// Its length without the line ending.
    pub len: u64,
    /// Input bytes it took, with the newline.
    pub consumed: u64,
    /// The `max_line_bytes` it broke.
    pub limit: usize,
}

/// The line over the limit being discarded, until its newline.
#[derive(Debug, Default)]
struct LongLine {
    sample: Vec<u8>,
    len: u64,
    /// The last byte seen was '\r' (not part of the line if '\n' follows).
    cr: bool,
}

impl LongLine {
    fn add(&mut self, bytes: &[u8]) {
        let room = SAMPLE_BYTES.saturating_sub(self.sample.len());
        self.sample
            .extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.len += bytes.len() as u64;
        if let Some(last) = bytes.last() {
            self.cr = *last == b'\r';
        }
    }

    fn end(mut self, newline: bool, limit: usize) -> TooLong {
        let ending = u64::from(newline && self.cr);
        if ending == 1 && self.sample.len() as u64 == self.len {
            self.sample.pop();
        }
        TooLong {
            len: self.len - ending,
            consumed: self.len + u64::from(newline),
            sample: self.sample,
            limit,
        }
    }
}

/// Cuts read bytes into [`Chunk`]s.
pub struct Splitter {
    max: usize,
    /// Bytes read and not yet cut off: the start of a line (no newline).
    /// Reads append here.
    buf: Vec<u8>,
    /// `buf[..searched_to]` holds no newline.
    searched_to: usize,
    /// The line over the limit being discarded.
    long: Option<LongLine>,
    /// Bytes searched for a newline, in all (tests prove linearity with it).
    searched: u64,
}

/// `true` when `line` (without its '\n') is over `max`; a trailing '\r'
/// is not part of the line.
fn over(line: &[u8], max: usize) -> bool {
    line.strip_suffix(b"\r").unwrap_or(line).len() > max
}

impl Splitter {
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max: max_line_bytes,
            buf: Vec::new(),
            searched_to: 0,
            long: None,
            searched: 0,
        }
    }

    /// Reads more (up to one read chunk); 0 at the end of the data.
    pub fn read(&mut self, reader: &mut impl Read) -> std::io::Result<usize> {
        read_more(reader, &mut self.buf)
    }

    /// Appends `bytes` as if read (tests, and sources handed bytes).
    #[cfg(test)]
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes read that are in no chunk yet (the line being read).
    pub fn pending(&self) -> u64 {
        self.buf.len() as u64 + self.long.as_ref().map_or(0, |l| l.len)
    }

    /// Bytes searched for a newline so far.
    #[doc(hidden)] // for tests and fuzz/ (decode_lines)
    pub fn searched(&self) -> u64 {
        self.searched
    }

    /// Forgets the line being read (the input starts over).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.searched_to = 0;
        self.long = None;
    }

    /// Cuts off the whole lines read so far, onto `out`.
    pub fn cut(&mut self, out: &mut Vec<Chunk>) {
        // buf[lines_from..start]: whole lines not yet in `out`;
        // buf[start..]: the line being read.
        let (mut start, mut lines_from, mut discard) = (0, 0, false);
        loop {
            let from = self.searched_to.max(start);
            if self.long.is_none() && self.buf.len() - start <= self.max.saturating_add(1) {
                // No whole line here can be over the limit: find the last newline.
                self.searched += (self.buf.len() - from) as u64;
                if let Some(i) = self.buf[from..].iter().rposition(|b| *b == b'\n') {
                    start = from + i + 1;
                }
                break;
            }
            let Some(i) = self.buf[from..].iter().position(|b| *b == b'\n') else {
                self.searched += (self.buf.len() - from) as u64;
                // More than max + 1 bytes without a newline: over the limit
                // (+ 1 for a '\r' that may end it), or already known to be.
                discard = true;
                self.long
                    .get_or_insert_with(LongLine::default)
                    .add(&self.buf[start..]);
                break;
            };
            self.searched += i as u64 + 1;
            let nl = from + i;
            let line = &self.buf[start..nl];
            let long = match self.long.take() {
                Some(mut long) => {
                    long.add(line);
                    Some(long)
                }
                None if over(line, self.max) => {
                    let mut long = LongLine::default();
                    long.add(line);
                    Some(long)
                }
                None => None,
            };
            if let Some(long) = long {
                if lines_from < start {
                    out.push(Chunk::Lines(self.buf[lines_from..start].to_vec()));
                }
                out.push(Chunk::TooLong(long.end(true, self.max)));
                lines_from = nl + 1;
            }
            start = nl + 1;
        }
        if discard {
            self.buf.truncate(start);
        }
        if lines_from == start {
            self.buf.drain(..start);
        } else {
            // The common case: the buffer goes on as the chunk, the
            // start of the next line is copied out.
            let rest = self.buf.split_off(start);
            self.buf.drain(..lines_from);
            out.push(Chunk::Lines(std::mem::replace(&mut self.buf, rest)));
        }
        self.searched_to = self.buf.len();
    }

    /// At the end of the input: cuts everything, the last line without a
    /// newline included.
    pub fn finish(&mut self, out: &mut Vec<Chunk>) {
        self.cut(out);
        if let Some(long) = self.long.take() {
            out.push(Chunk::TooLong(long.end(false, self.max)));
        } else if over(&self.buf, self.max) {
            let mut long = LongLine::default();
            long.add(&self.buf);
            out.push(Chunk::TooLong(long.end(false, self.max)));
        } else if !self.buf.is_empty() {
            out.push(Chunk::Lines(std::mem::take(&mut self.buf)));
        }
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Chunk {
        Chunk::Lines(s.as_bytes().to_vec())
    }

    fn too_long(sample: &[u8], len: u64, consumed: u64, limit: usize) -> Chunk {
        Chunk::TooLong(TooLong {
            sample: sample.to_vec(),
            len,
            consumed,
            limit,
        })
    }

    /// Feeds `reads` one at a time, then ends the input.
    fn split(max: usize, reads: &[&[u8]]) -> (Vec<Chunk>, Splitter) {
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        for r in reads {
            s.push(r);
            s.cut(&mut out);
        }
        s.finish(&mut out);
        (out, s)
    }

    #[test]
    fn whole_lines_are_cut_at_the_last_newline_of_each_read() {
        let (out, _) = split(10, &[b"ab\ncd\nef", b"g\n", b"h"]);
        assert_eq!(out, vec![lines("ab\ncd\n"), lines("efg\n"), lines("h")]);
    }

    #[test]
    fn a_line_over_the_limit_across_many_reads_is_one_sample_and_the_rest_goes_on() {
        let mut reads: Vec<Vec<u8>> = vec![b"first\nxy".to_vec()];
        reads.extend((0..1000).map(|_| vec![b'x'; 100]));
        reads.push(b"z\r\nnext\nlast".to_vec());
        let reads: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
        let (out, s) = split(1500, &reads);
        let len = 2 + 100_000 + 1;
        let mut sample = b"xy".to_vec();
        sample.resize(SAMPLE_BYTES, b'x');
        assert_eq!(
            out,
            vec![
                lines("first\n"),
                too_long(&sample, len, len + 2, 1500),
                lines("next\n"),
                lines("last"),
            ]
        );
        let total: usize = reads.iter().map(|r| r.len()).sum();
        assert_eq!(s.searched(), total as u64, "every byte searched once");
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn memory_stays_within_the_limit_while_a_line_streams_past() {
        let mut s = Splitter::new(1000);
        let mut out = Vec::new();
        for _ in 0..10_000 {
            s.push(&[b'x'; 300]);
            s.cut(&mut out);
            assert!(s.buf.len() <= 1001 && s.buf.capacity() < 4096);
        }
        assert!(out.is_empty());
        assert_eq!(s.pending(), 3_000_000);
        assert_eq!(s.searched(), 3_000_000);
    }

    #[test]
    fn lines_over_the_limit_inside_one_read_are_cut_out_in_order() {
        let (out, _) = split(3, &[b"abc\nabcd\r\nab\nabcde\nabc\r\n\nxyzzy"]);
        assert_eq!(
            out,
            vec![
                lines("abc\n"),
                too_long(b"abcd", 4, 6, 3),
                lines("ab\n"),
                too_long(b"abcde", 5, 6, 3),
                lines("abc\r\n\n"),
                too_long(b"xyzzy", 5, 5, 3),
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_with_or_without_a_carriage_return() {
        let (out, _) = split(3, &[b"ab", b"c", b"\r", b"\nabc"]);
        assert_eq!(out, vec![lines("abc\r\n"), lines("abc")]);
        let (out, _) = split(3, &[b"abc\r"]);
        assert_eq!(out, vec![lines("abc\r")]);
        let (out, _) = split(3, &[b"abcd"]);
        assert_eq!(out, vec![too_long(b"abcd", 4, 4, 3)]);
    }

    #[test]
    fn reads_from_a_reader_until_the_end() {
        let data = b"a\nbb\n".repeat(100_000);
        let mut reader = std::io::Cursor::new(data.clone());
        let mut s = Splitter::new(1 << 20);
        let mut out = Vec::new();
        while s.read(&mut reader).unwrap() > 0 {
            s.cut(&mut out);
        }
        s.finish(&mut out);
        assert!(out.len() > 1, "one chunk per read");
        let all: Vec<u8> = out
            .into_iter()
            .flat_map(|c| match c {
                Chunk::Lines(b) => b,
                Chunk::TooLong(_) => panic!("no line is too long"),
            })
            .collect();
        assert_eq!(all, data);
        assert_eq!(s.searched(), data.len() as u64);
    }
}
