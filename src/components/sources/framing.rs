//! Cutting a byte stream (a TCP or unix connection) into frames: lines
//! ended by `\n`, octet-counted frames (`<length> <bytes>`, RFC 6587
//! §3.4.1), or either, decided per frame (`syslog`: a frame that starts
//! with digits and a space is octet-counted). A frame over
//! `max_line_bytes` is discarded as it streams in, keeping only its first
//! [`SAMPLE_BYTES`]: the buffer holds at most the limit plus one read, and
//! every byte is searched for a newline once. A buffer a long frame grew
//! is shrunk again once it is handed out.

use super::split::SAMPLE_BYTES;

/// Most digits of an octet count (a length up to 9,999,999,999).
const MAX_COUNT_DIGITS: usize = 10;

/// How frames are delimited on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Newline,
    OctetCounting,
    /// Per frame: octet-counted when it starts with digits and a space.
    Auto,
}

/// What [`Framer::next_frame`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A frame's bytes: a line without its `\n` (and a `\r` before it),
    /// or an octet-counted frame's content.
    Message(&'a [u8]),
    /// A frame over the limit, discarded: its first bytes and its length.
    TooLong { sample: Vec<u8>, len: u64 },
    /// With `octet_counting`, a frame that does not start with a length:
    /// the stream cannot be cut any further.
    Invalid(String),
}

#[derive(Debug)]
enum State {
    /// At a frame boundary or inside a line still being searched.
    Ready,
    /// Inside a line over the limit, until its newline.
    /// `cr`: its last byte so far is `\r` (not part of it before `\n`).
    LongLine { sample: Vec<u8>, len: u64, cr: bool },
    /// Inside an octet-counted frame of `len` bytes.
    Counted { len: usize },
    /// Inside an octet-counted frame over the limit: `left` bytes to drop.
    LongCounted {
        sample: Vec<u8>,
        len: u64,
        left: u64,
    },
}

/// Cuts a stream into [`Frame`]s: reads append to [`Framer::buffer`], then
/// [`Framer::next_frame`] hands out the frames they completed.
pub struct Framer {
    framing: Framing,
    max: usize,
    buf: Vec<u8>,
    /// Start of the first byte not yet handed out.
    start: usize,
    /// `buf[start..searched]` holds no newline (the line being read).
    searched: usize,
    state: State,
}

fn sample_of(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len().min(SAMPLE_BYTES)].to_vec()
}

fn add_to_sample(sample: &mut Vec<u8>, bytes: &[u8]) {
    let room = SAMPLE_BYTES.saturating_sub(sample.len());
    sample.extend_from_slice(&bytes[..room.min(bytes.len())]);
}

/// The length of an octet-counted frame at the start of `bytes`:
/// `Some(Ok((len, header bytes)))`, `Some(Err(()))` when `bytes` cannot
/// start one, `None` when more bytes are needed to tell.
fn octet_count(bytes: &[u8]) -> Option<Result<(u64, usize), ()>> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_COUNT_DIGITS {
        return (!bytes.is_empty()).then_some(Err(()));
    }
    match bytes.get(digits) {
        None => None,
        Some(b' ') => {
            // Ten ASCII digits always fit a u64.
            let len = std::str::from_utf8(&bytes[..digits])
                .ok()
                .and_then(|d| d.parse().ok());
            Some(len.map(|len| (len, digits + 1)).ok_or(()))
        }
        Some(_) => Some(Err(())),
    }
}

impl Framer {
    pub fn new(framing: Framing, max_line_bytes: usize) -> Self {
        Self {
            framing,
            max: max_line_bytes,
            buf: Vec::new(),
            start: 0,
            searched: 0,
            state: State::Ready,
        }
    }

    /// Where the next read goes, with room for `room` more bytes; frames
    /// already handed out are dropped from the front first.
    pub fn buffer(&mut self, room: usize) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.searched -= self.start;
            self.start = 0;
        }
        // A connection that once held a long frame gives the memory back
        // (else each of `max_connections` could keep `max_line_bytes`).
        let want = self.buf.len() + room;
        if self.buf.capacity() > 2 * want.max(256 * 1024) {
            self.buf.shrink_to(want);
        }
        self.buf.reserve(room);
        &mut self.buf
    }

    /// Bytes held for frames not complete yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame in what was read, if any. Empty lines are
    /// skipped; so are line endings between octet-counted frames.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            match std::mem::replace(&mut self.state, State::Ready) {
                State::Ready => {}
                State::LongLine {
                    mut sample,
                    mut len,
                    cr,
                } => {
                    let rest = &self.buf[self.start..];
                    let Some(i) = rest.iter().position(|b| *b == b'\n') else {
                        add_to_sample(&mut sample, rest);
                        len += rest.len() as u64;
                        let cr = rest.last().map_or(cr, |b| *b == b'\r');
                        self.start = self.buf.len();
                        self.searched = self.start;
                        self.state = State::LongLine { sample, len, cr };
                        return None;
                    };
                    add_to_sample(&mut sample, &rest[..i]);
                    len += i as u64;
                    if rest[..i].last().map_or(cr, |b| *b == b'\r') {
                        len -= 1;
                        if sample.len() as u64 > len {
                            sample.pop();
                        }
                    }
                    self.start += i + 1;
                    self.searched = self.start;
                    return Some(Frame::TooLong { sample, len });
                }
                State::Counted { len } => {
                    if self.buf.len() - self.start < len {
                        self.state = State::Counted { len };
                        return None;
                    }
                    let at = self.start;
                    self.start += len;
                    self.searched = self.start;
                    return Some(Frame::Message(&self.buf[at..at + len]));
                }
                State::LongCounted {
                    mut sample,
                    len,
                    left,
                } => {
                    let rest = &self.buf[self.start..];
                    let take = (rest.len() as u64).min(left) as usize;
                    add_to_sample(&mut sample, &rest[..take]);
                    self.start += take;
                    self.searched = self.start;
                    if take as u64 == left {
                        return Some(Frame::TooLong { sample, len });
                    }
                    self.state = State::LongCounted {
                        sample,
                        len,
                        left: left - take as u64,
                    };
                    return None;
                }
            }
            // At a frame boundary (or in a line being searched).
            if self.framing != Framing::Newline && self.searched == self.start {
                // Line endings between counted frames are not frames.
                while matches!(self.buf.get(self.start), Some(b'\n' | b'\r')) {
                    self.start += 1;
                }
                self.searched = self.start;
                match octet_count(&self.buf[self.start..]) {
                    // Nothing yet, or digits only: a count, or a line's start.
                    None => return None,
                    Some(Ok((len, header))) => {
                        self.start += header;
                        self.searched = self.start;
                        self.state = if len > self.max as u64 {
                            State::LongCounted {
                                sample: Vec::new(),
                                len,
                                left: len,
                            }
                        } else {
                            State::Counted { len: len as usize }
                        };
                        continue;
                    }
                    Some(Err(())) if self.framing == Framing::OctetCounting => {
                        let sample = String::from_utf8_lossy(
                            &self.buf[self.start..self.buf.len().min(self.start + 32)],
                        )
                        .into_owned();
                        self.start = self.buf.len();
                        self.searched = self.start;
                        return Some(Frame::Invalid(format!(
                            "an octet-counted frame must start with its length and a space, not '{sample}'"
                        )));
                    }
                    Some(Err(())) => {}
                }
            }
            let rest = &self.buf[self.searched..];
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let nl = self.searched + i;
                    let line = &self.buf[self.start..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let at = self.start;
                    self.start = nl + 1;
                    self.searched = self.start;
                    if line.is_empty() {
                        continue;
                    }
                    if line.len() > self.max {
                        let (sample, len) = (sample_of(line), line.len() as u64);
                        return Some(Frame::TooLong { sample, len });
                    }
                    let end = at + line.len();
                    return Some(Frame::Message(&self.buf[at..end]));
                }
                None => {
                    self.searched = self.buf.len();
                    // Over max + 1 bytes without a newline (+ 1 for a '\r'
                    // that may end it): over the limit, stop keeping it.
                    if self.buf.len() - self.start > self.max + 1 {
                        let rest = &self.buf[self.start..];
                        self.state = State::LongLine {
                            sample: sample_of(rest),
                            len: rest.len() as u64,
                            cr: rest.last() == Some(&b'\r'),
                        };
                        self.start = self.buf.len();
                        self.searched = self.start;
                    }
                    return None;
                }
            }
        }
    }

    /// At the end of the stream: the last frame, if it was incomplete (a
    /// line without its newline; a counted frame cut short is `Invalid`).
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        match std::mem::replace(&mut self.state, State::Ready) {
            State::LongLine { sample, len, .. } => Some(Frame::TooLong { sample, len }),
            State::Counted { len } => Some(Frame::Invalid(format!(
                "the stream ended inside an octet-counted frame ({} of {len} bytes)",
                self.buf.len() - self.start
            ))),
            State::LongCounted { sample, len, .. } => Some(Frame::TooLong { sample, len }),
            State::Ready => {
                let line = &self.buf[self.start..];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.start = self.buf.len();
                self.searched = self.start;
                if line.iter().all(|b| matches!(b, b'\n' | b'\r')) {
                    None
                } else if self.framing == Framing::OctetCounting {
                    Some(Frame::Invalid(
                        "the stream ended inside an octet-counted frame's length".into(),
                    ))
                } else if line.len() > self.max {
                    Some(Frame::TooLong {
                        sample: sample_of(line),
                        len: line.len() as u64,
                    })
                } else {
                    Some(Frame::Message(line))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum F {
        M(String),
        Long(usize, u64),
        Bad,
    }

    /// Feeds `reads` one at a time, then ends the stream.
    fn frames(framing: Framing, max: usize, reads: &[&[u8]]) -> Vec<F> {
        let mut framer = Framer::new(framing, max);
        let mut out = Vec::new();
        let take = |f: Frame<'_>, out: &mut Vec<F>| {
            out.push(match f {
                Frame::Message(m) => F::M(String::from_utf8_lossy(m).into_owned()),
                Frame::TooLong { sample, len } => F::Long(sample.len(), len),
                Frame::Invalid(_) => F::Bad,
            })
        };
        for r in reads {
            framer.buffer(r.len()).extend_from_slice(r);
            while let Some(f) = framer.next_frame() {
                take(f, &mut out);
            }
            assert!(framer.pending() <= max + 1 + r.len());
        }
        if let Some(f) = framer.finish() {
            take(f, &mut out);
        }
        out
    }

    fn m(s: &str) -> F {
        F::M(s.to_string())
    }

    #[test]
    fn lines_across_reads_skip_empty_ones_and_lose_their_carriage_return() {
        let got = frames(Framing::Newline, 10, &[b"ab\r\ncd\n\nef", b"g\n", b"h"]);
        assert_eq!(got, vec![m("ab"), m("cd"), m("efg"), m("h")]);
    }

    #[test]
    fn a_line_over_the_limit_streams_past_in_bounded_memory() {
        let mut reads: Vec<Vec<u8>> = vec![b"first\nxy".to_vec()];
        reads.extend((0..1000).map(|_| vec![b'x'; 100]));
        reads.push(b"z\r\nnext\n".to_vec());
        let reads: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
        let got = frames(Framing::Newline, 1500, &reads);
        assert_eq!(
            got,
            vec![m("first"), F::Long(SAMPLE_BYTES, 100_003), m("next")]
        );
        assert_eq!(
            frames(Framing::Newline, 3, &[b"abc\r\nabcd\n"]),
            vec![m("abc"), F::Long(4, 4)]
        );
    }

    #[test]
    fn octet_counted_frames_may_hold_newlines_and_be_cut_anywhere() {
        let data = b"5 a\nb c11 hello world\n3 xyz";
        let whole = frames(Framing::OctetCounting, 100, &[data]);
        assert_eq!(whole, vec![m("a\nb c"), m("hello world"), m("xyz")]);
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(frames(Framing::OctetCounting, 100, &bytes), whole);
        assert_eq!(
            frames(Framing::OctetCounting, 4, &[b"10 0123456789", b"2 ok"]),
            vec![F::Long(10, 10), m("ok")]
        );
        assert_eq!(
            frames(Framing::OctetCounting, 100, &[b"x1 a"]),
            vec![F::Bad]
        );
        assert_eq!(
            frames(Framing::OctetCounting, 100, &[b"5 ab"]),
            vec![F::Bad]
        );
    }

    #[test]
    fn the_memory_of_a_long_frame_is_given_back_once_it_is_handed_out() {
        let mut framer = Framer::new(Framing::Newline, 4 << 20);
        framer.buffer(0).extend(std::iter::repeat_n(b'x', 3 << 20));
        framer.buffer(0).push(b'\n');
        assert!(matches!(framer.next_frame(), Some(Frame::Message(m)) if m.len() == 3 << 20));
        assert!(framer.buffer(64 * 1024).capacity() < 1 << 20);
    }

    #[test]
    fn auto_framing_decides_per_frame() {
        let got = frames(
            Framing::Auto,
            100,
            &[
                b"<13>a line\n7 <13>b c",
                b"<14>another\n",
                b"12",
                b"3x\n",
                b"2 ab",
            ],
        );
        assert_eq!(
            got,
            vec![
                m("<13>a line"),
                m("<13>b c"),
                m("<14>another"),
                m("123x"),
                m("ab")
            ]
        );
    }
}
