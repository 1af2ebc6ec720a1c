//! The `http_server` source's connections, bounded (SPEC §10):
//!
//! - [`LimitedListener`] takes a semaphore permit before it accepts, and
//!   the accepted [`Conn`] owns it until hyper drops the connection. With
//!   every permit out it does not call `accept`, so further clients wait
//!   in the kernel's accept queue instead of costing a descriptor each.
//! - [`Conn`] times what it reads, with a clock the handler shares
//!   ([`ConnClock`], the connection's `ConnectInfo`). A new connection's
//!   first request, and a kept-alive connection's next one from its first
//!   byte, must arrive within `request_timeout`. A head still incomplete
//!   then is answered 408 here (hyper has answered nothing on it yet) and
//!   the connection closed; a connection that sent nothing is closed. The
//!   handler reads the body by the same deadline and answers 408 itself.
//!   Once the body is in, nothing is timed: the pipeline's
//!   acknowledgements may take longer. After an answer the connection may
//!   stay idle [`IDLE_TIMEOUT`], then it is closed.
//!
//! hyper's own `header_read_timeout` is not used: it closes without an
//! answer, and it would also cut idle keep-alive connections at
//! `request_timeout`.

use crate::telemetry::ComponentMetrics;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How long a kept-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a request whose head did not arrive in time is answered.
const HEAD_TIMED_OUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 50\r\n\r\nthe request did not arrive within request_timeout\n";

/// Where a connection's current request is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Before a request's first byte: closed at `close_at`. The request
    /// is then due by `due` (a new connection's clock runs from the
    /// accept) or by `request_timeout` after its first byte.
    Waiting {
        close_at: Instant,
        due: Option<Instant>,
    },
    /// A request's head is arriving: 408 at `due`.
    Head { due: Instant },
    /// The handler reads the body and times it itself.
    Body,
    /// The body is in (or was refused); the answer is not timed.
    Handling,
}

struct Clock {
    phase: Mutex<Phase>,
    request_timeout: Duration,
    idle_timeout: Duration,
}

impl Clock {
    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bytes_arrived(&self) {
        let mut phase = self.phase();
        if let Phase::Waiting { due, .. } = *phase {
            *phase = Phase::Head {
                due: due.unwrap_or_else(|| Instant::now() + self.request_timeout),
            };
        }
    }

    /// hyper writes: an answer (or a `100 Continue` while the body is
    /// read). After an answer the connection is idle.
    fn writing(&self) {
        let mut phase = self.phase();
        if matches!(*phase, Phase::Head { .. } | Phase::Handling) {
            *phase = Phase::Waiting {
                close_at: Instant::now() + self.idle_timeout,
                due: None,
            };
        }
    }
}

/// A connection's clock, as the handler sees it.
#[derive(Clone)]
pub struct ConnClock(Arc<Clock>);

impl ConnClock {
    /// The handler has a request's head: the instant its body is due.
    pub fn body_due(&self) -> Instant {
        let mut phase = self.0.phase();
        let due = match *phase {
            Phase::Head { due } | Phase::Waiting { due: Some(due), .. } => due,
            // A head that came whole with the previous request's bytes.
            _ => Instant::now() + self.0.request_timeout,
        };
        *phase = Phase::Body;
        due
    }

    /// The body is read or refused: the rest of the request is not timed.
    pub fn body_read(&self) {
        *self.0.phase() = Phase::Handling;
    }
}

impl Connected<IncomingStream<'_, LimitedListener>> for ConnClock {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Self {
        stream.io().clock.clone()
    }
}

/// A TCP listener that holds at most `max_connections` connections open.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    request_timeout: Duration,
    idle_timeout: Duration,
    metrics: ComponentMetrics,
}

impl LimitedListener {
    pub fn new(
        inner: TcpListener,
        max_connections: usize,
        request_timeout: Duration,
        idle_timeout: Duration,
        metrics: ComponentMetrics,
    ) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            request_timeout,
            idle_timeout,
            metrics,
        }
    }

    /// The next connection, once one of the `max_connections` is free.
    pub async fn next(&mut self) -> (Conn, SocketAddr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let due = Instant::now() + self.request_timeout;
                    let clock = ConnClock(Arc::new(Clock {
                        phase: Mutex::new(Phase::Waiting {
                            close_at: due,
                            due: Some(due),
                        }),
                        request_timeout: self.request_timeout,
                        idle_timeout: self.idle_timeout,
                    }));
                    let conn = Conn {
                        stream,
                        clock,
                        timer: Box::pin(tokio::time::sleep_until(due)),
                        timed_out: false,
                        metrics: self.metrics.clone(),
                        _permit: permit,
                    };
                    return (conn, addr);
                }
                // The client gave up before it was accepted.
                Err(e) if is_connection_error(&e) => {}
                // Out of descriptors, say: some may be closed in a while.
                Err(e) => {
                    tracing::error!(component = %self.metrics.name(), "http_server: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl Listener for LimitedListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: its stream, its clock and its permit.
pub struct Conn {
    stream: TcpStream,
    clock: ConnClock,
    timer: Pin<Box<Sleep>>,
    timed_out: bool,
    metrics: ComponentMetrics,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Nothing to read now: closes the connection if its deadline passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let phase = *self.clock.0.phase();
        let (at, head) = match phase {
            Phase::Waiting { close_at, .. } => (close_at, false),
            Phase::Head { due } => (due, true),
            Phase::Body | Phase::Handling => return Poll::Pending,
        };
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        ready!(self.timer.as_mut().poll(cx));
        self.timed_out = true;
        if !head {
            // End of stream: hyper closes an idle connection quietly.
            return Poll::Ready(Ok(()));
        }
        // Best effort: a client that reads nothing may not get it.
        let _ = self.stream.try_write(HEAD_TIMED_OUT);
        self.metrics.errors("timeout", 1);
        tracing::debug!(component = %self.metrics.name(), "http_server: a request head did not arrive within request_timeout; answered 408");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the request head did not arrive within request_timeout",
        )))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => this.poll_deadline(cx),
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.0.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.clock.0.writing();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.clock.0.writing();
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const REQUEST: Duration = Duration::from_millis(150);
    const IDLE: Duration = Duration::from_millis(600);

    async fn listener(max_connections: usize) -> (LimitedListener, SocketAddr) {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let metrics =
            crate::telemetry::Metrics::new().component("p", "web", "source", "http_server");
        (
            LimitedListener::new(inner, max_connections, REQUEST, IDLE, metrics),
            addr,
        )
    }

    /// Reads `conn` until it ends or fails; the time that took.
    async fn read_to_close(conn: &mut Conn) -> (Duration, io::Result<Vec<u8>>) {
        let start = Instant::now();
        let mut got = Vec::new();
        let result = conn.read_to_end(&mut got).await.map(|_| got);
        (start.elapsed(), result)
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_quietly_after_request_timeout() {
        let (mut listener, addr) = listener(4).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = listener.next().await;
        let (took, got) = read_to_close(&mut conn).await;
        assert_eq!(got.unwrap(), b"");
        assert!(took >= REQUEST - Duration::from_millis(20), "{took:?}");
        drop(conn);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"", "nothing was asked, nothing is answered");
    }

    #[tokio::test]
    async fn a_head_not_complete_by_request_timeout_is_answered_408() {
        let (mut listener, addr) = listener(4).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let (mut conn, _) = listener.next().await;
        let (_, got) = read_to_close(&mut conn).await;
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(conn);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, HEAD_TIMED_OUT);
        let text = std::str::from_utf8(HEAD_TIMED_OUT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[tokio::test]
    async fn after_an_answer_the_connection_may_idle_for_the_idle_timeout() {
        let (mut listener, addr) = listener(4).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (mut conn, _) = listener.next().await;
        let mut head = [0; 18];
        conn.read_exact(&mut head).await.unwrap();
        // The handler: the body is due by the first request's deadline,
        // its answer may take longer than request_timeout.
        let due = conn.clock.body_due();
        assert!(due <= Instant::now() + REQUEST);
        conn.clock.body_read();
        tokio::time::sleep(REQUEST * 2).await;
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let (took, got) = read_to_close(&mut conn).await;
        assert_eq!(got.unwrap(), b"");
        assert!(took >= IDLE - Duration::from_millis(20), "{took:?}");
    }

    #[tokio::test]
    async fn a_kept_alive_connections_next_request_is_timed_from_its_first_byte() {
        let (mut listener, addr) = listener(4).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = listener.next().await;
        *conn.clock.0.phase() = Phase::Waiting {
            close_at: Instant::now() + IDLE,
            due: None,
        };
        tokio::time::sleep(REQUEST * 2).await;
        client.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
        let started = Instant::now();
        let (_, got) = read_to_close(&mut conn).await;
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= REQUEST - Duration::from_millis(20));
    }

    #[tokio::test]
    async fn no_more_than_max_connections_are_accepted_until_one_closes() {
        let (mut listener, addr) = listener(1).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let (first, _) = listener.next().await;
        let second = tokio::time::timeout(Duration::from_millis(50), listener.next()).await;
        assert!(second.is_err(), "a second connection was accepted");
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), listener.next())
            .await
            .expect("accepted once the first closed");
    }
}
