//! `socket` sink: writes events as lines to a TCP connection, or one
//! datagram per event over UDP. A failed connect or write is retryable
//! for the stage controls (`retry`, `circuit_breaker`); the connection is
//! made again on the next attempt, after a backoff that doubles with each
//! failed connect (100ms up to 5s, with jitter), so a server that is down
//! is not hammered even without `retry`.
//!
//! Before each batch the connection is checked: a peer that closed it
//! (say, a server restarting gracefully) is noticed before anything is
//! written into the dead connection, and the batch goes to a new one. TCP
//! has no acknowledgement of its own: a batch is written once the kernel
//! took all of it, so a peer that resets the connection can lose what was
//! in flight; one that closes gracefully loses nothing. A peer that stops
//! reading pushes back (the write waits); a stage `timeout` fails it.

use super::{OutputCodec, encode_lines};
use crate::components::{ComponentError, Encoded, Sink};
use crate::config::duration::ConfigDuration;
use crate::core::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn five_seconds() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

/// The transport a `socket` sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkSocketMode {
    /// One TCP connection; each event is a line.
    Tcp,
    /// One datagram per event (its line without the newline).
    Udp,
}

/// Writes events to a TCP or UDP address, one line (or datagram) each.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SocketSinkConfig {
    /// `tcp` or `udp`.
    pub mode: SinkSocketMode,
    /// Where to send, e.g. `127.0.0.1:9000` or `logs.example.com:514`.
    pub address: String,
    /// `json` (default): the event as JSON; `text`: its `.message` field.
    #[serde(default)]
    pub codec: OutputCodec,
    /// Longest wait for a TCP connection to be made (default 5s; longer
    /// than 0s); past it the attempt fails (retryable).
    #[serde(default = "five_seconds")]
    pub connect_timeout: ConfigDuration,
}

impl SocketSinkConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        if self
            .address
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            problems.push((
                vec!["address"],
                format!("'{}' is not a host:port like 127.0.0.1:9000", self.address),
            ));
        }
        if self.connect_timeout.0.is_zero() {
            problems.push((vec!["connect_timeout"], "must be longer than 0s".into()));
        }
        problems
    }

    pub fn build(&self) -> SocketSink {
        SocketSink {
            config: self.clone(),
            state: Mutex::new(State::default()),
        }
    }
}

enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    /// Connects that failed in a row (sets the backoff before the next).
    failed_connects: u32,
    /// A connection was made before: the next one is a reconnect.
    connected_before: bool,
}

pub struct SocketSink {
    config: SocketSinkConfig,
    /// Writes are one at a time (`concurrent_writes` is false); the lock
    /// is taken once per batch.
    state: Mutex<State>,
}

fn transient(message: String) -> ComponentError {
    ComponentError::Transient {
        message,
        error_type: "io",
    }
}

/// Whether the peer closed `stream` (or it failed). Bytes the peer sent
/// are read and dropped: this sink only writes.
fn closed_by_peer(stream: &TcpStream) -> bool {
    let mut scratch = [0u8; 512];
    loop {
        match stream.try_read(&mut scratch) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

impl SocketSink {
    async fn connect(&self, state: &mut State) -> Result<Conn, ComponentError> {
        if state.failed_connects > 0 {
            let exp = FIRST_BACKOFF.saturating_mul(1 << state.failed_connects.min(6));
            let wait = exp.min(MAX_BACKOFF).mul_f64(0.5 + fastrand::f64() / 2.0);
            tokio::time::sleep(wait).await;
        }
        let address = &self.config.address;
        let made = match self.config.mode {
            SinkSocketMode::Tcp => {
                let connect = TcpStream::connect(address);
                match tokio::time::timeout(self.config.connect_timeout.0, connect).await {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        Ok(Conn::Tcp(s))
                    }
                    Ok(Err(e)) => Err(format!("connecting to {address}: {e}")),
                    Err(_) => Err(format!(
                        "connecting to {address}: no connection within connect_timeout"
                    )),
                }
            }
            SinkSocketMode::Udp => async {
                let socket = UdpSocket::bind(if address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .await?;
                socket.connect(address).await?;
                Ok::<_, std::io::Error>(Conn::Udp(socket))
            }
            .await
            .map_err(|e| format!("sending to {address}: {e}")),
        };
        match made {
            Ok(conn) => {
                state.failed_connects = 0;
                if std::mem::replace(&mut state.connected_before, true) {
                    tracing::info!("socket sink: reconnected to {address}");
                }
                Ok(conn)
            }
            Err(message) => {
                state.failed_connects = state.failed_connects.saturating_add(1);
                Err(transient(message))
            }
        }
    }
}

#[async_trait::async_trait]
impl Sink for SocketSink {
    fn encode(&self, batch: Batch) -> Encoded {
        encode_lines(batch, self.config.codec)
    }

    async fn write(&self, encoded: &Encoded) -> Result<(), ComponentError> {
        if encoded.events.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().await;
        if let Some(Conn::Tcp(s)) = &state.conn
            && closed_by_peer(s)
        {
            tracing::info!("socket sink: {} closed the connection", self.config.address);
            state.conn = None;
        }
        if state.conn.is_none() {
            let conn = self.connect(&mut state).await?;
            state.conn = Some(conn);
        }
        let address = &self.config.address;
        let result = match &mut state.conn {
            Some(Conn::Tcp(s)) => s
                .write_all(&encoded.bytes)
                .await
                .map_err(|e| format!("writing to {address}: {e}")),
            Some(Conn::Udp(socket)) => {
                let mut start = 0;
                let mut result = Ok(());
                // One datagram per event, split at its line's end.
                for &end in &encoded.line_ends {
                    if let Err(e) = socket.send(&encoded.bytes[start..end]).await {
                        result = Err(format!("sending to {address}: {e}"));
                        break;
                    }
                    start = end + 1;
                }
                result
            }
            None => Ok(()),
        };
        result.map_err(|message| {
            // A fresh connection for the retry.
            state.conn = None;
            transient(message)
        })
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        let mut state = self.state.lock().await;
        if let Some(Conn::Tcp(s)) = &mut state.conn {
            // A graceful close: the peer reads everything before the end.
            let _ = s.shutdown().await;
        }
        state.conn = None;
        Ok(())
    }
}
