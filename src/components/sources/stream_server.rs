//! The stream and datagram servers behind the `socket` and `syslog`
//! sources: they accept connections (TCP or unix) or receive datagrams,
//! cut frames, and hand each frame to the source's [`FrameDecoder`].
//!
//! Bounded (SPEC §10, §14):
//! - At most `max_connections` connections are served; one over it is
//!   accepted and closed at once, counted as an error of type
//!   `connection_limit` (the senders are told now, rather than hanging in
//!   the accept queue).
//! - A connection that sends nothing for `idle_timeout` is closed and
//!   counted as an error of type `timeout`; only time spent waiting for
//!   the client counts, not time the pipeline pushes back.
//! - A frame over `max_line_bytes` is a `decode` error, discarded as it
//!   streams in (see `framing`).
//!
//! Backpressure: a connection's task does not read while it waits for
//! room downstream, so the kernel's buffers fill and the sender's writes
//! block. Datagrams cannot be pushed back: those that do not fit
//! downstream are discarded (`reason="buffer_full"`).

use super::framing::{Frame, Framer, Framing};
use crate::components::SourceContext;
use crate::core::{Batch, Failed, MAX_BATCH, Map, Sampled, Value};
use crate::telemetry::DiscardReason;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Bytes a connection reads at a time (also its buffer beyond a frame).
const READ_BYTES: usize = 64 * 1024;
/// Largest UDP datagram.
const DATAGRAM_BYTES: usize = 65_536;

/// What the frames of one read decode to.
#[derive(Default)]
pub struct Decoded {
    pub batch: Batch,
    pub failed: Vec<Sampled>,
    /// Frames seen (events and failures): `flowgate_events_in_total`.
    pub frames: usize,
}

impl Decoded {
    fn fail(&mut self, message: String) {
        self.frames += 1;
        self.failed.push(Sampled::from(Failed::new(
            Value::Object(Map::new()),
            message,
            "decode",
        )));
    }
}

/// Turns one frame (a line, an octet-counted frame, a datagram) into an
/// event or a failure.
pub trait FrameDecoder: Send + Sync + 'static {
    fn decode(&self, frame: &[u8], out: &mut Decoded);
    /// Whether a datagram holds lines (`socket`) rather than one message (`syslog`).
    fn datagram_lines(&self) -> bool;
}

/// The limits of one stream server.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub framing: Framing,
    pub max_line_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// SO_RCVBUF for each connection or the UDP socket; `None`: the kernel's.
    pub receive_buffer_bytes: Option<usize>,
}

/// Sets the kernel's receive buffer of `socket` (for a listener: of the
/// connections it accepts, which inherit it).
pub fn set_receive_buffer(
    socket: &impl std::os::fd::AsFd,
    bytes: Option<usize>,
) -> std::io::Result<()> {
    match bytes {
        Some(n) => socket2::SockRef::from(socket).set_recv_buffer_size(n),
        None => Ok(()),
    }
}

/// A bound stream listener.
pub enum StreamListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

type Stream = Box<dyn AsyncRead + Send + Unpin>;

impl StreamListener {
    async fn accept(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Self::Tcp(l) => Box::new(l.accept().await?.0),
            Self::Unix(l) => Box::new(l.accept().await?.0),
        })
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves connections until shutdown, then waits for the connections to
/// emit what they read.
pub async fn serve_streams(
    listener: StreamListener,
    limits: StreamLimits,
    decoder: Arc<dyn FrameDecoder>,
    ctx: Arc<SourceContext>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(stream) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (ctx, decoder) = (ctx.clone(), decoder.clone());
                    tracker.spawn(async move {
                        connection(stream, limits, &*decoder, &ctx).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    ctx.metrics.errors("connection_limit", 1);
                    tracing::debug!(component = %ctx.name, "a connection over max_connections ({}) was closed", limits.max_connections);
                }
            },
            Err(e) if is_connection_error(&e) => {}
            // Out of descriptors, say: some may be closed in a while.
            Err(e) => {
                tracing::error!(component = %ctx.name, "accepting a connection: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Reads one connection until it ends, idles too long, or shutdown.
async fn connection(
    mut stream: Stream,
    limits: StreamLimits,
    decoder: &dyn FrameDecoder,
    ctx: &SourceContext,
) {
    let mut framer = Framer::new(limits.framing, limits.max_line_bytes);
    let mut out = Decoded::default();
    loop {
        let read = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            r = tokio::time::timeout(limits.idle_timeout, stream.read_buf(framer.buffer(READ_BYTES))) => r,
        };
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                ctx.metrics.errors("io", 1);
                tracing::debug!(component = %ctx.name, "reading a connection: {e}");
                break;
            }
            Err(_) => {
                ctx.metrics.errors("timeout", 1);
                tracing::debug!(component = %ctx.name, "closing a connection idle for idle_timeout ({:?})", limits.idle_timeout);
                break;
            }
        };
        let mut close = n == 0;
        if close {
            if let Some(frame) = framer.finish() {
                take(frame, decoder, &limits, &mut out);
            }
        } else {
            while let Some(frame) = framer.next_frame() {
                close |= take(frame, decoder, &limits, &mut out);
                if close {
                    break;
                }
                if out.batch.len() >= MAX_BATCH {
                    emit(&mut out, ctx).await;
                }
            }
        }
        // Waiting here for room downstream is the backpressure: nothing
        // more is read meanwhile.
        emit(&mut out, ctx).await;
        if close {
            break;
        }
    }
}

/// Decodes one frame into `out`; `true` when the stream cannot go on.
fn take(
    frame: Frame<'_>,
    decoder: &dyn FrameDecoder,
    limits: &StreamLimits,
    out: &mut Decoded,
) -> bool {
    match frame {
        Frame::Message(bytes) => decoder.decode(bytes, out),
        Frame::TooLong { sample, len } => {
            out.frames += 1;
            let what = if limits.framing == Framing::Newline {
                "line"
            } else {
                "frame"
            };
            let max = limits.max_line_bytes;
            out.failed
                .push(super::decode::too_long(&sample, len, max, what));
        }
        Frame::Invalid(why) => {
            out.fail(format!("{why}; the connection is closed"));
            return true;
        }
    }
    false
}

async fn emit(out: &mut Decoded, ctx: &SourceContext) {
    let Decoded {
        batch,
        failed,
        frames,
    } = std::mem::take(out);
    if frames == 0 {
        return;
    }
    ctx.metrics.events_in.inc_by(frames as u64);
    ctx.emit(batch).await;
    ctx.errors
        .handle_sampled(failed, &crate::core::Acks::none())
        .await;
}

/// Receives datagrams until shutdown. What one wakeup finds waiting (up to
/// a batch) is emitted together; when downstream has no room for it, it is
/// discarded as `buffer_full` rather than waited for, since the kernel
/// would drop what arrives meanwhile anyway.
pub async fn serve_datagrams(
    socket: tokio::net::UdpSocket,
    max_line_bytes: usize,
    decoder: Arc<dyn FrameDecoder>,
    ctx: Arc<SourceContext>,
) {
    let mut buf = vec![0u8; DATAGRAM_BYTES];
    let mut out = Decoded::default();
    loop {
        let first = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = socket.recv(&mut buf) => r,
        };
        let mut received = first;
        loop {
            match received {
                Ok(n) => datagram(&buf[..n], &*decoder, max_line_bytes, &mut out),
                Err(e) => {
                    // e.g. ICMP errors reported on the socket: not fatal.
                    tracing::debug!(component = %ctx.name, "receiving a datagram: {e}");
                }
            }
            if out.batch.len() >= MAX_BATCH {
                break;
            }
            match socket.try_recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                r => received = r,
            }
        }
        let n = out.batch.len();
        if ctx.output.has_room(n) {
            emit(&mut out, &ctx).await;
        } else {
            ctx.metrics.events_in.inc_by(n as u64);
            ctx.metrics.discard(DiscardReason::BufferFull, n);
            out.batch.clear();
            out.frames -= n;
            emit(&mut out, &ctx).await;
        }
    }
}

fn datagram(bytes: &[u8], decoder: &dyn FrameDecoder, max: usize, out: &mut Decoded) {
    if decoder.datagram_lines() {
        for line in bytes.split(|b| *b == b'\n') {
            datagram_part(line, decoder, max, out);
        }
    } else {
        datagram_part(
            bytes.strip_suffix(b"\n").unwrap_or(bytes),
            decoder,
            max,
            out,
        );
    }
}

fn datagram_part(part: &[u8], decoder: &dyn FrameDecoder, max: usize, out: &mut Decoded) {
    let part = part.strip_suffix(b"\r").unwrap_or(part);
    if part.is_empty() {
        return;
    }
    if part.len() > max {
        out.frames += 1;
        let what = "datagram";
        out.failed
            .push(super::decode::too_long(part, part.len() as u64, max, what));
    } else {
        decoder.decode(part, out);
    }
}
