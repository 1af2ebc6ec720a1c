//! Line-oriented input shared by `stdin` and `file`: a blocking thread reads
//! chunks that end on a line boundary (cut by `split`, which sets lines over
//! `max_line_bytes` apart), the runtime's workers decode one chunk more
//! than there are cores at once (parsing dominates the cost per
//! event), and the source emits them in input order.

use super::Codec;
use super::split::{Chunk, Splitter};
use crate::components::{ComponentError, SourceContext};
use crate::core::Sampled;
use crate::core::{Acks, Batch, MAX_BATCH};
use std::collections::VecDeque;
use std::io::Read;
use tokio::task::JoinHandle;

const CHUNK_BYTES: usize = 256 * 1024;

/// Reads up to `CHUNK_BYTES` more onto the end of `buf`, trying again when
/// a signal interrupts the read. Returns the bytes read (0 at the end of
/// the data); on an error `buf` is as it was.
pub(super) fn read_more(reader: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + CHUNK_BYTES, 0);
    loop {
        match reader.read(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}

fn decode_parallelism() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
}

/// The events and failures of one chunk, in input order.
#[doc(hidden)] // pub for fuzz/ (decode_lines)
pub struct Decoded {
    pub batches: Vec<Batch>,
    pub failed: Vec<Sampled>,
    pub lines: usize,
}

/// What one chunk decodes to: its lines' events, or the failure of a line
/// over the limit.
#[doc(hidden)] // pub for fuzz/ (decode_lines)
pub fn decode(chunk: &Chunk, codec: Codec) -> Decoded {
    match chunk {
        Chunk::Lines(bytes) => decode_chunk(bytes, codec),
        Chunk::TooLong(long) => Decoded {
            batches: Vec::new(),
            failed: vec![super::decode::too_long(
                &long.sample,
                long.len,
                long.limit,
                "line",
            )],
            lines: 1,
        },
    }
}

pub(super) fn decode_chunk(chunk: &[u8], codec: Codec) -> Decoded {
    let mut decoded = Decoded {
        batches: Vec::new(),
        failed: Vec::new(),
        lines: 0,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH.min(chunk.len() / 64 + 1));
    // memchr finds the line ends a word at a time (a byte-by-byte split
    // was ~5 % of decoding).
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', chunk).chain(std::iter::once(chunk.len()));
    for end in ends {
        let line = &chunk[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        decoded.lines += 1;
        match super::decode::event(line, codec, "line") {
            Ok(event) => batch.push(event),
            Err(failed) => decoded.failed.push(failed.into()),
        }
        if batch.len() == MAX_BATCH {
            decoded
                .batches
                .push(std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH)));
        }
    }
    if !batch.is_empty() {
        decoded.batches.push(batch);
    }
    decoded
}

/// Reads on the current (blocking) thread, sending chunks that end with a
/// full line (or a line over `max_line_bytes`, discarded); stops when the
/// receiver is gone.
fn read_chunks(mut reader: impl Read, max_line_bytes: usize, tx: ChunkSender<()>) {
    let mut lines = Splitter::new(max_line_bytes);
    let mut chunks = Vec::new();
    loop {
        let n = match lines.read(&mut reader) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if n == 0 {
            lines.finish(&mut chunks);
        } else {
            lines.cut(&mut chunks);
        }
        for chunk in chunks.drain(..) {
            if tx.blocking_send(Ok((chunk, ()))).is_err() {
                return;
            }
        }
        if n == 0 {
            return;
        }
    }
}

/// Runs a line source to the end of its input or until shutdown. Chunks
/// already read when shutdown comes are still decoded and emitted, so
/// nothing read is lost.
pub async fn run<R: Read + Send + 'static>(
    reader: R,
    codec: Codec,
    max_line_bytes: usize,
    ctx: &SourceContext,
    what: &str,
) -> Result<(), ComponentError> {
    let (tx, mut rx) = chunk_channel();
    std::thread::Builder::new()
        .name(format!("read-{}", ctx.name))
        .spawn(move || read_chunks(reader, max_line_bytes, tx))
        .map_err(|e| ComponentError::io("starting the reader thread", e))?;
    decode_in_order(&mut rx, codec, ctx, what, |(), _| Acks::none()).await
}

/// Chunks of whole lines, each with a tag (a file position to acknowledge).
pub(super) type ChunkSender<T> = tokio::sync::mpsc::Sender<std::io::Result<(Chunk, T)>>;
pub(super) type ChunkReceiver<T> = tokio::sync::mpsc::Receiver<std::io::Result<(Chunk, T)>>;

pub(super) fn chunk_channel<T>() -> (ChunkSender<T>, ChunkReceiver<T>) {
    tokio::sync::mpsc::channel(decode_parallelism() * 2)
}

/// Decodes chunks on the runtime's workers, several at once, and emits
/// them in input order with the acknowledgements `acks_for` makes of each
/// chunk's tag and line count. Ends when the channel does; on shutdown the channel is
/// closed and chunks already read are still emitted.
pub(super) async fn decode_in_order<T: Send + 'static>(
    rx: &mut ChunkReceiver<T>,
    codec: Codec,
    ctx: &SourceContext,
    what: &str,
    mut acks_for: impl FnMut(T, usize) -> Acks,
) -> Result<(), ComponentError> {
    // One chunk more than there are cores: while the source waits to hand
    // the front chunk downstream, every core still has one to decode (with
    // as many as cores, sixteen stages in a row left a core idle a fifth
    // of the time: 1.65 of 2 cores busy, 1.96 with one more).
    let parallelism = decode_parallelism() + 1;
    let mut inflight: VecDeque<JoinHandle<(Decoded, T)>> = VecDeque::new();
    let mut input_done = false;
    let mut closing = false;
    loop {
        if input_done && inflight.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled(), if !closing => {
                closing = true;
                rx.close();
            }
            decoded = async { inflight.front_mut().expect("guarded by is_empty").await }, if !inflight.is_empty() => {
                inflight.pop_front();
                let (decoded, tag) = decoded.map_err(|e| ComponentError::Other(format!("decoding {what}: {e}")))?;
                let acks = acks_for(tag, decoded.lines);
                emit(decoded, acks, ctx).await;
            }
            chunk = rx.recv(), if !input_done && inflight.len() < parallelism => match chunk {
                Some(Ok((chunk, tag))) => inflight.push_back(tokio::spawn(async move { (decode(&chunk, codec), tag) })),
                Some(Err(e)) => return Err(ComponentError::io(format!("reading {what}"), e)),
                None => input_done = true,
            },
        }
    }
}

async fn emit(decoded: Decoded, acks: Acks, ctx: &SourceContext) {
    ctx.metrics.events_in.inc_by(decoded.lines as u64);
    for batch in decoded.batches {
        ctx.emit_acked(batch, acks.clone()).await;
    }
    ctx.errors.handle_sampled(decoded.failed, &acks).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_json_and_text_skipping_empty_lines() {
        let d = decode_chunk(b"{\"a\":1}\r\n\n[1]\nnot json\n{\"b\":2}", Codec::Json);
        assert_eq!(d.lines, 4);
        assert_eq!(
            d.batches.concat(),
            vec![crate::ev!({"a": 1}), crate::ev!({"b": 2})]
        );
        assert_eq!(d.failed.len(), 2);
        assert_eq!(
            d.failed[0].failed.message,
            "line is a JSON array, not an object"
        );
        assert_eq!(
            d.failed[1].failed.event,
            crate::ev!({"message": "not json"})
        );
        let t = decode_chunk(b"x\r\n\ny", Codec::Text);
        assert_eq!(
            t.batches.concat(),
            vec![crate::ev!({"message": "x"}), crate::ev!({"message": "y"})]
        );
    }

    /// Fails once with `kind`, then reads `data`.
    struct Flaky {
        kind: Option<std::io::ErrorKind>,
        data: std::io::Cursor<Vec<u8>>,
    }

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.kind.take() {
                Some(kind) => Err(kind.into()),
                None => self.data.read(buf),
            }
        }
    }

    #[test]
    fn reads_append_retry_after_a_signal_and_leave_the_buffer_on_errors() {
        let flaky = |kind| Flaky {
            kind: Some(kind),
            data: std::io::Cursor::new(b"b\n".to_vec()),
        };
        let mut buf = b"a".to_vec();
        let mut r = flaky(std::io::ErrorKind::Interrupted);
        assert_eq!(read_more(&mut r, &mut buf).unwrap(), 2);
        assert_eq!(buf, b"ab\n");
        assert_eq!(read_more(&mut r, &mut buf).unwrap(), 0);
        assert_eq!(buf, b"ab\n");
        let mut r = flaky(std::io::ErrorKind::PermissionDenied);
        assert!(read_more(&mut r, &mut buf).is_err());
        assert_eq!(buf, b"ab\n", "an error adds nothing");
    }

    #[test]
    fn chunks_end_on_line_boundaries() {
        let text: String = (0..100_000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let data = text.clone().into_bytes();
        std::thread::spawn(move || read_chunks(std::io::Cursor::new(data), 1 << 20, tx));
        let mut total = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            let (Chunk::Lines(chunk), ()) = chunk.unwrap() else {
                panic!("no line is too long");
            };
            assert_eq!(chunk.last(), Some(&b'\n'));
            total.extend(chunk);
        }
        assert_eq!(total, text.into_bytes());
    }

    #[test]
    fn a_line_over_the_limit_is_one_decode_failure_between_the_others() {
        let mut data = b"{\"i\":1}\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 3 * CHUNK_BYTES));
        data.extend(b"\n{\"i\":2}\n");
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        std::thread::spawn(move || read_chunks(std::io::Cursor::new(data), 1000, tx));
        let mut decoded = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            decoded.push(decode(&chunk.unwrap().0, Codec::Json));
        }
        let events: Vec<_> = decoded.iter().flat_map(|d| d.batches.concat()).collect();
        assert_eq!(events, vec![crate::ev!({"i": 1}), crate::ev!({"i": 2})]);
        let failed: Vec<_> = decoded.iter().flat_map(|d| &d.failed).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(
            failed[0].failed.message,
            format!(
                "line is {} bytes, over max_line_bytes (1000)",
                3 * CHUNK_BYTES
            )
        );
        assert_eq!(failed[0].sample.as_deref(), Some("x".repeat(1024).as_str()));
        let lines: usize = decoded.iter().map(|d| d.lines).sum();
        assert_eq!(lines, 3);
        let order: Vec<bool> = decoded.iter().map(|d| d.failed.is_empty()).collect();
        assert_eq!(order, vec![true, false, true], "in input order");
    }
}
