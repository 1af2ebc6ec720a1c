//! `flowgate buffer check`: reads every disk buffer under a data directory
//! without opening it as a store. It takes no lock, writes nothing and
//! deletes nothing, so it is safe beside a running daemon (whose buffers it
//! marks as in use: their newest segment may be mid-write).
//!
//! A buffer is a directory `DATA/<pipeline>/<component>/` holding `*.seg`
//! files or a `buffer.ledger`. Each is scanned from the acknowledged seq
//! on, over every segment, with the scanner the store uses, so the counts
//! are the ones the daemon will find: events are the intact records above
//! the ledger, corrupt the seqs lost above it (and 1 for a torn tail).

use super::ledger::{self, LEDGER_FILE};
use super::scan::{Scanner, Step};
use super::segment::{self, SegmentFile};
use std::io;
use std::path::{Path, PathBuf};

/// What one buffer holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferCheck {
    /// Intact records above the acknowledged seq.
    pub events: u64,
    /// Segment file bytes.
    pub bytes: u64,
    pub segments: usize,
    /// Records lost above the acknowledged seq, a torn tail counted as 1.
    pub corrupt: u64,
    /// The newest segment ends in a partial record.
    pub torn_tail: bool,
}

/// One buffer found under the data directory.
#[derive(Debug)]
pub struct BufferReport {
    /// `pipeline/component`.
    pub name: String,
    pub dir: PathBuf,
    /// A process holds the buffer's lock.
    pub in_use: bool,
    pub result: io::Result<BufferCheck>,
}

/// Checks every buffer under `data_dir`, in name order. Fails only when
/// `data_dir` itself cannot be read; a buffer that cannot be read is
/// reported with its error.
pub fn check_all(data_dir: &Path) -> io::Result<Vec<BufferReport>> {
    Ok(find_buffers(data_dir)?
        .into_iter()
        .map(|(name, dir)| BufferReport {
            in_use: ledger::lock_held(&dir),
            result: check(&dir),
            name,
            dir,
        })
        .collect())
}

/// `(pipeline/component, directory)` of every buffer under `data_dir`.
pub fn find_buffers(data_dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for pipeline in subdirs(data_dir)? {
        // Other state (a source's checkpoints) lives beside the buffers.
        for component in subdirs(&pipeline).unwrap_or_default() {
            if is_buffer(&component) {
                let name = |p: &Path| {
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                };
                found.push((
                    format!("{}/{}", name(&pipeline), name(&component)),
                    component,
                ));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn subdirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

fn is_buffer(dir: &Path) -> bool {
    dir.join(LEDGER_FILE).is_file()
        || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                e.file_name()
                    .to_str()
                    .and_then(segment::parse_name)
                    .is_some()
            })
        })
}

/// Scans one buffer directory.
pub fn check(dir: &Path) -> io::Result<BufferCheck> {
    let segments = segment::list(dir)?;
    let mut acked = ledger::read_acked(dir)?;
    if let Some(first) = segments.first() {
        acked = acked.max(first.first_seq.saturating_sub(1));
    }
    let mut report = BufferCheck {
        bytes: segments.iter().map(|s| s.len).sum(),
        segments: segments.len(),
        ..BufferCheck::default()
    };
    let above = |r: std::ops::Range<u64>| r.end.saturating_sub(r.start.max(acked + 1));
    for (i, seg) in segments.iter().enumerate() {
        let bound = segments.get(i + 1).map(|s| s.first_seq);
        if bound.is_some_and(|b| b <= acked + 1) {
            continue; // wholly acknowledged, deleted at the next open
        }
        scan_segment(seg, bound, |step| match step {
            Step::Record { seq, .. } if seq > acked => report.events += 1,
            Step::Record { .. } => {}
            Step::Skipped { lost, .. } => report.corrupt += above(lost),
            Step::End { damaged_at, lost } => {
                report.corrupt += above(lost.clone());
                if bound.is_none() && damaged_at.is_some() {
                    report.torn_tail = true;
                    report.corrupt += u64::from(lost.start > acked);
                }
            }
        })?;
    }
    Ok(report)
}

/// Runs the scanner over one segment, to its end.
fn scan_segment(
    seg: &SegmentFile,
    bound: Option<u64>,
    mut each: impl FnMut(Step<'_>),
) -> io::Result<()> {
    let mut scanner = Scanner::open(&seg.path, seg.first_seq, Some(seg.len), bound)?;
    loop {
        let step = scanner.next_step()?;
        let end = matches!(step, Step::End { .. });
        each(step);
        if end {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::buffer::storage::{EncodedBatch, Store};

    fn batch(n: usize) -> EncodedBatch {
        let mut b = EncodedBatch::default();
        for i in 0..n {
            b.push(format!(r#"{{"n":{i},"message":"a line of some length"}}"#).as_bytes())
                .unwrap();
        }
        b
    }

    #[test]
    fn counts_events_above_the_ledger_and_finds_buffers() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("logs").join("out");
        let (mut store, _) = Store::open(&dir, 1 << 20).unwrap();
        for _ in 0..10 {
            store.append(&batch(100)).unwrap();
        }
        store.sync().unwrap();
        store.acknowledge(250).unwrap();
        let bytes = store.bytes();
        // Another pipeline's state beside it is not a buffer.
        std::fs::create_dir_all(data.path().join("logs").join("checkpoints")).unwrap();
        std::fs::write(data.path().join("logs").join("file.checkpoint"), "{}").unwrap();
        let reports = check_all(data.path()).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].name, "logs/out");
        assert!(reports[0].in_use || !Path::new("/proc/locks").exists());
        let found = reports[0].result.as_ref().unwrap();
        assert_eq!(
            (found.events, found.bytes, found.corrupt, found.torn_tail),
            (750, bytes, 0, false)
        );
        drop(store);
        let reports = check_all(data.path()).unwrap();
        assert!(!reports[0].in_use);
        // Nothing changed on disk.
        assert_eq!(check(&dir).unwrap(), *found);
    }

    #[test]
    fn a_torn_tail_and_a_flipped_byte_are_counted_above_the_ledger() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("p").join("c");
        let (mut store, _) = Store::open(&dir, 1 << 20).unwrap();
        store.append(&batch(50)).unwrap();
        store.sync().unwrap();
        drop(store);
        let seg = segment::list(&dir).unwrap().remove(0);
        let mut bytes = std::fs::read(&seg.path).unwrap();
        bytes.truncate(bytes.len() - 5);
        let record = bytes.len() / 50;
        bytes[8 + 10 * record] ^= 0x40; // the crc of seq 11, about
        std::fs::write(&seg.path, &bytes).unwrap();
        let found = check(&dir).unwrap();
        assert_eq!(
            (found.events, found.corrupt, found.torn_tail),
            (48, 2, true)
        );
        // Acknowledged damage is not counted.
        crate::flow::buffer::storage::ledger::Ledger::open(&dir)
            .unwrap()
            .write(20)
            .unwrap();
        let found = check(&dir).unwrap();
        assert_eq!(
            (found.events, found.corrupt, found.torn_tail),
            (29, 1, true)
        );
    }
}
