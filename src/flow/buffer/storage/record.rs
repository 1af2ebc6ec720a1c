//! The record frame and the constants of the on-disk format.
//!
//! A record is `crc32c u32 | len u32 | seq u64 | payload[len]`, all
//! little-endian; the crc (Castagnoli) covers `len ‖ seq ‖ payload`, i.e.
//! every byte of the frame after the crc itself. One event per record, so a
//! damaged frame loses exactly one event and the loss is counted exactly.
//! A payload is an event's compact JSON, which holds no NUL byte; a frame
//! header of any record under 16 MiB does (the top byte of `len`), so a
//! payload can never be mistaken for a frame when the scanner resyncs.

use std::ops::Range;

/// Bytes of a frame before its payload.
pub const HEADER_LEN: usize = 16;

/// The largest payload a record may carry. A larger event fails at send.
pub const MAX_RECORD: usize = 64 << 20;

/// The first bytes of every segment file: magic and format version 1.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FGBUF\0\x01\0";

/// Bytes a record of `payload_len` takes on disk.
pub const fn frame_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len
}

/// Appends the frame of record `seq` to `out`. The caller keeps
/// `payload.len() <= MAX_RECORD` (`EncodedBatch` checks it).
pub fn encode(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_RECORD);
    let start = out.len();
    out.reserve(frame_len(payload.len()));
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A frame header as read, not yet verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub crc: u32,
    pub len: u32,
    pub seq: u64,
}

impl Header {
    /// Reads the first 16 bytes of `bytes`; `None` when there are fewer.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let h = bytes.get(..HEADER_LEN)?;
        Some(Header {
            crc: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            len: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            seq: u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        })
    }

    /// Bytes of the whole frame this header announces.
    pub fn frame_len(&self) -> usize {
        frame_len(self.len as usize)
    }
}

/// Whether `frame` (exactly one frame: header and payload) carries the crc
/// its header states.
pub fn crc_matches(frame: &[u8]) -> bool {
    match Header::parse(frame) {
        Some(h) if frame.len() == h.frame_len() => crc32c::crc32c(&frame[4..]) == h.crc,
        _ => false,
    }
}

/// A verified record inside a byte slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub seq: u64,
    /// Where the payload lies in the slice given to `parse`.
    pub payload: Range<usize>,
    /// Where the next frame would start.
    pub next: usize,
}

/// Verifies the record at `at` in `bytes`: `None` when the bytes there are
/// not a whole frame with a matching crc and a length within `MAX_RECORD`.
pub fn parse(bytes: &[u8], at: usize) -> Option<Parsed> {
    let h = Header::parse(bytes.get(at..)?)?;
    if h.len as usize > MAX_RECORD {
        return None;
    }
    let end = at.checked_add(h.frame_len())?;
    let frame = bytes.get(at..end)?;
    crc_matches(frame).then_some(Parsed {
        seq: h.seq,
        payload: at + HEADER_LEN..end,
        next: end,
    })
}

/// Events of one send, encoded on the producer's task: every payload back
/// to back in one `Vec` and their lengths, so appending a batch allocates
/// nothing per record.
#[derive(Debug, Default, Clone)]
pub struct EncodedBatch {
    bytes: Vec<u8>,
    lens: Vec<u32>,
}

/// Why a record could not be added to an `EncodedBatch`.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError<E> {
    #[error("an event of {0} bytes is larger than a buffer record may be ({MAX_RECORD} bytes)")]
    TooLarge(usize),
    #[error(transparent)]
    Encode(E),
}

impl EncodedBatch {
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            lens: Vec::with_capacity(records),
        }
    }

    /// Adds one record whose payload `write` appends to the given `Vec`
    /// (e.g. `|v| serde_json::to_writer(v, &event)`). On an error, or a
    /// payload over `MAX_RECORD`, the batch is left as it was.
    pub fn push_with<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<usize, EncodeError<E>> {
        let start = self.bytes.len();
        if let Err(e) = write(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(EncodeError::Encode(e));
        }
        let len = self.bytes.len() - start;
        if len > MAX_RECORD {
            self.bytes.truncate(start);
            return Err(EncodeError::TooLarge(len));
        }
        // Cannot truncate: MAX_RECORD < u32::MAX.
        self.lens.push(len as u32);
        Ok(len)
    }

    /// Adds one record with this payload.
    pub fn push(&mut self, payload: &[u8]) -> Result<(), EncodeError<std::convert::Infallible>> {
        self.push_with(|v| {
            v.extend_from_slice(payload);
            Ok(())
        })
        .map(drop)
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Payload bytes, without frame headers.
    pub fn payload_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes the batch adds to a segment file (payloads and headers).
    pub fn disk_bytes(&self) -> usize {
        self.bytes.len() + HEADER_LEN * self.lens.len()
    }

    /// Keeps the first `n` records.
    pub fn truncate(&mut self, n: usize) {
        if n < self.lens.len() {
            let keep: usize = self.lens[..n].iter().map(|&l| l as usize).sum();
            self.lens.truncate(n);
            self.bytes.truncate(keep);
        }
    }

    /// Bytes on disk of each record, in order (payload and header).
    pub fn disk_lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.lens.iter().map(|&l| l as usize + HEADER_LEN)
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.lens.clear();
    }

    /// The payloads in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        self.lens.iter().map(move |&len| {
            let payload = &self.bytes[at..at + len as usize];
            at += len as usize;
            payload
        })
    }

    /// Appends the frames of the whole batch, numbered from `first_seq`.
    pub fn encode_frames(&self, first_seq: u64, out: &mut Vec<u8>) {
        out.reserve(self.disk_bytes());
        for (seq, payload) in (first_seq..).zip(self.iter()) {
            encode(out, seq, payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, seq, payload);
        out
    }

    #[test]
    fn a_record_round_trips() {
        let payload = br#"{"message":"hello","n":1}"#;
        let bytes = frame(42, payload);
        assert_eq!(bytes.len(), frame_len(payload.len()));
        let p = parse(&bytes, 0).expect("a valid frame");
        assert_eq!(p.seq, 42);
        assert_eq!(&bytes[p.payload.clone()], payload);
        assert_eq!(p.next, bytes.len());
        // At an offset, and an empty payload.
        let mut two = frame(7, b"");
        two.extend(frame(8, b"x"));
        let first = parse(&two, 0).unwrap();
        assert_eq!((first.seq, first.payload.len()), (7, 0));
        let second = parse(&two, first.next).unwrap();
        assert_eq!((second.seq, &two[second.payload]), (8, &b"x"[..]));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        for payload in [
            &b""[..],
            b"{}",
            br#"{"level":"error","message":"disk full on /var"}"#,
        ] {
            let good = frame(1_000_003, payload);
            for bit in 0..good.len() * 8 {
                let mut bad = good.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(parse(&bad, 0), None, "flip of bit {bit} not detected");
            }
        }
    }

    #[test]
    fn short_and_oversized_frames_are_rejected() {
        let good = frame(3, b"payload");
        for cut in 0..good.len() {
            assert_eq!(parse(&good[..cut], 0), None);
        }
        assert_eq!(parse(&good, good.len()), None);
        assert_eq!(parse(&good, good.len() + 5), None);
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&(MAX_RECORD as u32 + 1).to_le_bytes());
        assert_eq!(parse(&huge, 0), None);
        // A zero-filled block (a hole left by a crash) is not a record.
        assert_eq!(parse(&[0; 64], 0), None);
    }

    #[test]
    fn a_batch_frames_every_payload_in_order() {
        let mut batch = EncodedBatch::default();
        batch.push(b"one").unwrap();
        batch
            .push_with(|v| serde_json::to_writer(v, &serde_json::json!({"n": 2})))
            .unwrap();
        let failed = batch.push_with(|v| {
            v.extend_from_slice(b"partial");
            Err("no")
        });
        assert!(matches!(failed, Err(EncodeError::Encode("no"))));
        assert_eq!((batch.len(), batch.payload_bytes()), (2, 3 + 7));
        assert_eq!(batch.disk_bytes(), 10 + 2 * HEADER_LEN);
        let mut out = Vec::new();
        batch.encode_frames(10, &mut out);
        assert_eq!(out.len(), batch.disk_bytes());
        let a = parse(&out, 0).unwrap();
        let b = parse(&out, a.next).unwrap();
        assert_eq!((a.seq, &out[a.payload]), (10, &b"one"[..]));
        assert_eq!((b.seq, &out[b.payload]), (11, &br#"{"n":2}"#[..]));
        assert_eq!(b.next, out.len());
    }

    #[test]
    fn a_record_over_the_limit_is_refused() {
        let mut batch = EncodedBatch::default();
        let too_big = batch.push_with(|v| {
            v.resize(MAX_RECORD + 1, b'a');
            Ok::<(), ()>(())
        });
        assert!(matches!(too_big, Err(EncodeError::TooLarge(n)) if n == MAX_RECORD + 1));
        assert!(batch.is_empty());
        assert_eq!(batch.payload_bytes(), 0);
    }
}
