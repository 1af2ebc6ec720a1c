//! `socket`: events from TCP connections, UDP datagrams or unix stream
//! connections, one per line (`framing: newline`) or per octet-counted
//! frame (`framing: octet_counting`, RFC 6587: `<length> <bytes>`), under
//! `codec`. The servers, their bounds and backpressure are in
//! `stream_server`; the framing in `framing`.

use super::Codec;
use super::decode::{check_max_line_bytes, default_max_line_bytes};
use super::framing::Framing;
use super::stream_server::{
    Decoded, FrameDecoder, StreamLimits, StreamListener, serve_datagrams, serve_streams,
    set_receive_buffer,
};
use crate::components::{ComponentError, Source, SourceContext};
use crate::config::duration::ConfigDuration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// `max_connections` when not configured.
pub fn default_max_connections() -> usize {
    1000
}

/// `idle_timeout` when not configured: 5 minutes.
pub fn default_idle_timeout() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(300))
}

/// The transport a `socket` source listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SocketMode {
    /// TCP connections to `address`.
    Tcp,
    /// UDP datagrams to `address`; each holds one or more lines.
    Udp,
    /// Unix stream connections to the socket file `path`.
    Unix,
}

/// How a stream (tcp, unix) is cut into events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamFraming {
    /// One event per line, ended by `\n` (a `\r` before it is removed).
    #[default]
    Newline,
    /// RFC 6587 octet counting: each frame is its length in decimal, a
    /// space, then that many bytes (which may hold newlines).
    OctetCounting,
}

/// Listens on a TCP or UDP address or a unix socket; one event per line or frame.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SocketSourceConfig {
    /// `tcp`, `udp` or `unix`.
    pub mode: SocketMode,
    /// With `tcp` and `udp`: the address to listen on, e.g. `0.0.0.0:9000`.
    #[serde(default)]
    pub address: Option<String>,
    /// With `unix`: the socket file to create (a stale one left by a
    /// previous run is replaced; it is removed when the source stops).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `json` (default): each line is a JSON object; `text`: each line becomes `{"message": line}`.
    #[serde(default)]
    pub codec: Codec,
    /// With `tcp` and `unix`: `newline` (default) or `octet_counting`. A
    /// UDP datagram holds one or more lines.
    #[serde(default)]
    pub framing: Option<StreamFraming>,
    /// Most connections served at once (default 1000; at least 1). A
    /// connection over it is closed at once and counted as an error of
    /// type `connection_limit`.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: usize,
    /// Longest line, frame or datagram line, in bytes (default 1 MiB =
    /// 1048576; at least 1). A longer one is a `decode` error of this
    /// source, handled by its `on_error` (a routed event carries its first
    /// 1 KiB in `.error.sample`); it is discarded as it arrives and the
    /// connection goes on.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
    /// With `tcp` and `unix`: a connection that sends nothing for this
    /// long is closed and counted as an error of type `timeout` (default
    /// 5m; longer than 0s). Time the pipeline pushes back is not counted.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: ConfigDuration,
    /// The kernel's receive buffer for each connection (or the UDP
    /// socket), in bytes (`SO_RCVBUF`; Linux doubles it). Bounds what a
    /// sender can have in flight while the pipeline pushes back. Default:
    /// the kernel's (autotuned up to `net.ipv4.tcp_rmem`, `net.core.rmem_max`).
    #[serde(default)]
    #[schemars(range(min = 1024))]
    pub receive_buffer_bytes: Option<usize>,
}

/// The problem with a configured `receive_buffer_bytes` (shared by `syslog`).
pub fn check_receive_buffer(bytes: Option<usize>) -> Vec<(Vec<&'static str>, String)> {
    match bytes {
        Some(n) if n < 1024 => vec![(
            vec!["receive_buffer_bytes"],
            format!("{n} is too small: at least 1024"),
        )],
        _ => Vec::new(),
    }
}

/// Problems with a `mode`, `address` and `path` combination (shared by `syslog`).
pub fn check_endpoint(
    mode_is_unix: bool,
    address: Option<&str>,
    path: Option<&std::path::Path>,
) -> Vec<(Vec<&'static str>, String)> {
    let mut problems = Vec::new();
    if mode_is_unix {
        if path.is_none() {
            problems.push((vec!["path"], "mode unix needs a socket file path".into()));
        }
        if address.is_some() {
            problems.push((
                vec!["address"],
                "mode unix takes `path`, not `address`".into(),
            ));
        }
        return problems;
    }
    match address {
        None => problems.push((
            vec!["address"],
            "needs an address to listen on, like 127.0.0.1:9000".into(),
        )),
        Some(a) if a.parse::<std::net::SocketAddr>().is_err() => problems.push((
            vec!["address"],
            format!("'{a}' is not an address like 127.0.0.1:9000"),
        )),
        Some(_) => {}
    }
    if path.is_some() {
        problems.push((
            vec!["path"],
            "`path` is for mode unix; use `address`".into(),
        ));
    }
    problems
}

impl SocketSourceConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = check_max_line_bytes(self.max_line_bytes);
        problems.extend(check_receive_buffer(self.receive_buffer_bytes));
        problems.extend(check_endpoint(
            self.mode == SocketMode::Unix,
            self.address.as_deref(),
            self.path.as_deref(),
        ));
        if self.mode == SocketMode::Udp && self.framing == Some(StreamFraming::OctetCounting) {
            problems.push((
                vec!["framing"],
                "octet_counting is for tcp and unix streams; a UDP datagram holds lines".into(),
            ));
        }
        if self.max_connections == 0 {
            problems.push((vec!["max_connections"], "must be at least 1".into()));
        }
        if self.idle_timeout.0.is_zero() {
            problems.push((vec!["idle_timeout"], "must be longer than 0s".into()));
        }
        problems
    }

    pub fn build(&self) -> SocketSource {
        SocketSource {
            config: self.clone(),
        }
    }
}

pub struct SocketSource {
    config: SocketSourceConfig,
}

/// A frame under `codec`.
struct CodecDecoder(Codec);

impl FrameDecoder for CodecDecoder {
    fn decode(&self, frame: &[u8], out: &mut Decoded) {
        out.frames += 1;
        match super::decode::event(frame, self.0, "line") {
            Ok(event) => out.batch.push(event),
            Err(failed) => out.failed.push(failed.into()),
        }
    }

    fn datagram_lines(&self) -> bool {
        true
    }
}

/// Binds `address` for `mode` (tcp or udp) and serves it: shared by
/// `socket` and `syslog`.
pub async fn serve_address(
    udp: bool,
    address: &str,
    limits: StreamLimits,
    decoder: Arc<dyn FrameDecoder>,
    ctx: SourceContext,
) -> Result<(), ComponentError> {
    let bind_error = |e| ComponentError::io(format!("listening on {address}"), e);
    let ctx = Arc::new(ctx);
    if udp {
        let socket = tokio::net::UdpSocket::bind(address)
            .await
            .map_err(bind_error)?;
        set_receive_buffer(&socket, limits.receive_buffer_bytes).map_err(bind_error)?;
        tracing::info!(component = %ctx.name, "listening for UDP datagrams at {address}");
        serve_datagrams(socket, limits.max_line_bytes, decoder, ctx).await;
    } else {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(bind_error)?;
        set_receive_buffer(&listener, limits.receive_buffer_bytes).map_err(bind_error)?;
        tracing::info!(component = %ctx.name, "listening for TCP connections at {address}");
        serve_streams(StreamListener::Tcp(listener), limits, decoder, ctx).await;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Source for SocketSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        let c = &self.config;
        let framing = match c.framing.unwrap_or_default() {
            StreamFraming::Newline => Framing::Newline,
            StreamFraming::OctetCounting => Framing::OctetCounting,
        };
        let limits = StreamLimits {
            framing,
            max_line_bytes: c.max_line_bytes,
            max_connections: c.max_connections,
            idle_timeout: c.idle_timeout.0,
            receive_buffer_bytes: c.receive_buffer_bytes,
        };
        let decoder: Arc<dyn FrameDecoder> = Arc::new(CodecDecoder(c.codec));
        let (Some(path), SocketMode::Unix) = (&c.path, c.mode) else {
            // `check` made sure an address is there.
            let address = c.address.as_deref().unwrap_or_default();
            let udp = c.mode == SocketMode::Udp;
            return serve_address(udp, address, limits, decoder, ctx).await;
        };
        super::socket_unix::serve(path, limits, decoder, ctx).await
    }
}
