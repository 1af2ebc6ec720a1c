//! The `socket` source's unix stream sockets: the socket file is created
//! at start (replacing a stale one a previous run left behind, never a
//! file that is not a socket) and removed when the source stops.

use super::stream_server::{
    FrameDecoder, StreamLimits, StreamListener, serve_streams, set_receive_buffer,
};
use crate::components::{ComponentError, SourceContext};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

pub async fn serve(
    path: &Path,
    limits: StreamLimits,
    decoder: Arc<dyn FrameDecoder>,
    ctx: SourceContext,
) -> Result<(), ComponentError> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ComponentError::Other(format!(
                "{shown} exists and is not a socket; refusing to replace it"
            )));
        }
        std::fs::remove_file(path)
            .map_err(|e| ComponentError::io(format!("removing the stale socket {shown}"), e))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| ComponentError::io(format!("listening on unix socket {shown}"), e))?;
    set_receive_buffer(&listener, limits.receive_buffer_bytes)
        .map_err(|e| ComponentError::io(format!("setting receive_buffer_bytes on {shown}"), e))?;
    tracing::info!(component = %ctx.name, "listening for unix connections at {shown}");
    serve_streams(
        StreamListener::Unix(listener),
        limits,
        decoder,
        Arc::new(ctx),
    )
    .await;
    let _ = std::fs::remove_file(path);
    Ok(())
}
