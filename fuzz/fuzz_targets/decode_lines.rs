//! What a line source (`stdin`, `file`) does with the bytes it reads: the
//! splitter cuts them into whole lines, at most `max_line_bytes` each, and
//! each chunk is decoded under the `json` or `text` codec. A panic is a
//! finding, and so is a result that differs from the plain reading of the
//! input (split at every '\n', lines over the limit set apart with their
//! first KiB) whatever the sizes of the reads. Time and memory must stay
//! linear: each byte is searched for a newline once (the splitter counts
//! them), and `-timeout=1` and `-rss_limit_mb` catch the rest.
//!
//! Input: 2 bytes of `max_line_bytes` (1..=65536, the small ones most
//! often), 1 byte of flags (bit 0: text codec; bits 1-7: how many times
//! the data is repeated, up to 256 KiB), 2 bytes seeding the read sizes,
//! then the data.

#![no_main]

use flowgate::components::sources::Codec;
use flowgate::components::sources::lines::decode;
use flowgate::components::sources::split::{Chunk, SAMPLE_BYTES, Splitter};
use libfuzzer_sys::fuzz_target;
use std::io::Read;

/// Hands out `data` in reads of pseudo-random sizes, from 1 byte to many KiB.
struct Reads<'a> {
    data: &'a [u8],
    state: u32,
}

impl Read for Reads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let r = (self.state >> 16) as usize;
        let size = match r % 4 {
            0 => 1 + r % 4,
            1 => 1 + r % 64,
            2 => 1 + r % 4096,
            _ => buf.len(),
        };
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A line as the splitter must hand it on.
#[derive(Debug, PartialEq)]
enum Item {
    /// A line within the limit, with its '\n' (none only at the end).
    Line(Vec<u8>),
    /// A line over the limit: its first bytes, length without the line
    /// ending, input bytes with the newline.
    Long(Vec<u8>, u64, u64),
}

/// The plain reading of `input`.
fn expected(input: &[u8], max: usize) -> Vec<Item> {
    let mut items = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let (line, newline) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        let bare = line.strip_suffix(b"\r").unwrap_or(line);
        let taken = line.len() + usize::from(newline);
        if bare.len() > max {
            // Without a newline, a trailing '\r' is part of the line.
            let kept = if newline { bare } else { line };
            items.push(Item::Long(
                kept[..kept.len().min(SAMPLE_BYTES)].to_vec(),
                kept.len() as u64,
                taken as u64,
            ));
        } else {
            items.push(Item::Line(rest[..taken].to_vec()));
        }
        rest = &rest[taken..];
    }
    items
}

fn items(chunks: &[Chunk]) -> Vec<Item> {
    let mut items = Vec::new();
    for chunk in chunks {
        match chunk {
            Chunk::Lines(bytes) => {
                assert!(!bytes.is_empty(), "an empty chunk");
                items.extend(
                    bytes
                        .split_inclusive(|b| *b == b'\n')
                        .map(|l| Item::Line(l.to_vec())),
                );
            }
            Chunk::TooLong(long) => {
                items.push(Item::Long(long.sample.clone(), long.len, long.consumed))
            }
        }
    }
    items
}

fuzz_target!(|data: &[u8]| {
    let [m0, m1, flags, s0, s1, data @ ..] = data else {
        return;
    };
    let m = u16::from_le_bytes([*m0, *m1]);
    // Mostly small limits, so lines over them are common.
    let max = 1 + usize::from(if m & 0x8000 == 0 { m % 64 } else { m });
    let codec = if flags & 1 == 1 {
        Codec::Text
    } else {
        Codec::Json
    };
    // Mostly once; an eighth of the time repeated up to 256 KiB, so long
    // lines span many reads.
    let r = usize::from(flags >> 1);
    let times = if r < 112 { 1 } else { 1 << ((r - 112) % 9) };
    let input = data.repeat(times.min((256 << 10) / data.len().max(1)).max(1));

    let mut splitter = Splitter::new(max);
    let mut reader = Reads {
        data: &input,
        state: u32::from(u16::from_le_bytes([*s0, *s1])),
    };
    let mut chunks = Vec::new();
    loop {
        let n = splitter.read(&mut reader).unwrap();
        if n == 0 {
            splitter.finish(&mut chunks);
            break;
        }
        splitter.cut(&mut chunks);
        // The line being read is held, a line over the limit only counted.
        assert!(splitter.pending() <= input.len() as u64);
    }
    assert_eq!(splitter.pending(), 0, "everything read is handed on");
    // Linear: every byte is searched for a newline once, whatever the reads.
    assert!(
        splitter.searched() <= input.len() as u64,
        "{} searched",
        splitter.searched()
    );
    let consumed: u64 = chunks.iter().map(Chunk::consumed).sum();
    assert_eq!(consumed, input.len() as u64);
    assert_eq!(items(&chunks), expected(&input, max));

    for chunk in &chunks {
        let decoded = decode(chunk, codec);
        let events: usize = decoded.batches.iter().map(Vec::len).sum();
        assert_eq!(events + decoded.failed.len(), decoded.lines);
        if codec == Codec::Text {
            assert!(matches!(chunk, Chunk::TooLong(_)) || decoded.failed.is_empty());
        }
        for f in &decoded.failed {
            assert_eq!(f.failed.error_type, "decode");
            let _ = f.failed.message.len();
            if let Some(sample) = &f.sample {
                // Lossy: a bad byte is three in U+FFFD.
                assert!(sample.len() <= 3 * SAMPLE_BYTES);
            }
        }
        for e in decoded.batches.iter().flatten() {
            assert!(e.is_object());
            let _ = serde_json::to_vec(e).unwrap();
        }
    }
});
