//! `flowgate buffer check`.

use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// `flowgate buffer check`: a table of every disk buffer under `data_dir`
/// and a total; exit 1 when any buffer has corrupt records or cannot be
/// read.
pub(super) fn buffer_check(data_dir: &Path) -> anyhow::Result<ExitCode> {
    use crate::flow::buffer::storage::check;
    let reports = check::check_all(data_dir)
        .with_context(|| format!("cannot read the data directory {}", data_dir.display()))?;
    if reports.is_empty() {
        println!("no disk buffers under {}", data_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["pipeline/component", "events", "bytes", "corrupt", ""].map(String::from)];
    let mut total = check::BufferCheck::default();
    let mut bad = false;
    for r in &reports {
        let in_use = if r.in_use { "(in use)" } else { "" };
        match &r.result {
            Ok(c) => {
                total.events += c.events;
                total.bytes += c.bytes;
                total.corrupt += c.corrupt;
                bad |= c.corrupt > 0;
                let torn = if c.torn_tail { "torn tail" } else { "" };
                rows.push([
                    r.name.clone(),
                    c.events.to_string(),
                    c.bytes.to_string(),
                    c.corrupt.to_string(),
                    format!("{torn}  {in_use}").trim().to_string(),
                ]);
            }
            Err(e) => {
                bad = true;
                eprintln!("error: {}: {e}", r.dir.display());
                let dash = || "-".to_string();
                let notes = format!("unreadable  {in_use}").trim().to_string();
                rows.push([r.name.clone(), dash(), dash(), dash(), notes]);
            }
        }
    }
    rows.push([
        "total".to_string(),
        total.events.to_string(),
        total.bytes.to_string(),
        total.corrupt.to_string(),
        String::new(),
    ]);
    let width = |col: usize| rows.iter().map(|r| r[col].len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..4).map(width).collect();
    for row in &rows {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        println!("{}", line.trim_end());
    }
    Ok(if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
