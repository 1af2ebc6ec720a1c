//! `flowgate tap`.

use anyhow::Context;
use std::process::ExitCode;

/// `flowgate tap`: streams `/tap/OUTPUT` of a running daemon to stdout.
pub(super) fn tap(output: &str, address: &str, count: Option<u64>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        crate::components::http_common::install_tls();
        let url = format!("http://{address}/tap/{output}");
        let mut response = reqwest::Client::new()
            .get(&url)
            .send()
            .await
            .with_context(|| {
                format!("cannot reach a flowgate daemon at {address} (is --metrics-address right?)")
            })?;
        if !response.status().is_success() {
            let status = response.status();
            let why = response.text().await.unwrap_or_default();
            anyhow::bail!("{} ({status} from {url})", why.trim());
        }
        let mut pending = Vec::new();
        let mut printed = 0u64;
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = response.chunk().await.context("reading the tap")? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                std::io::Write::write_all(&mut stdout, &line)?;
                printed += 1;
                if count.is_some_and(|c| printed >= c) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
