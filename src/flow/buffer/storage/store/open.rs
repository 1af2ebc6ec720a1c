//! Opening a buffer directory: lock, ledger, deletion of acknowledged
//! segments, recovery of the newest one.

use super::{Opened, Store};
use crate::flow::buffer::storage::StoreError;
use crate::flow::buffer::storage::ledger::{DirLock, Ledger};
use crate::flow::buffer::storage::scan::{Scanner, Step};
use crate::flow::buffer::storage::segment::{self, SEGMENT_HEADER_LEN, SegmentFile, Writer};
use crate::flow::buffer::storage::seqs::SeqSet;
use std::collections::VecDeque;
use std::path::Path;

impl Store {
    /// Opens (creating, mode 0700) and locks the buffer directory `dir`,
    /// and recovers it (see the module docs). Fails only on I/O errors
    /// creating, listing or locking the directory, or opening its ledger;
    /// never on corrupt data.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Store, Opened), StoreError> {
        let io = |doing: &'static str| {
            move |source| StoreError::Io {
                doing,
                path: dir.to_path_buf(),
                source,
            }
        };
        create_dirs(dir).map_err(io("create the buffer directory"))?;
        let lock = DirLock::acquire(dir)?;
        let ledger = Ledger::open(dir)?;
        let found = segment::list(dir).map_err(io("list the buffer directory"))?;
        let mut acked = ledger.acked_seq();
        if let Some(first) = found.first() {
            // Segments are deleted only once acknowledged, whatever the
            // ledger (torn, lost) says.
            acked = acked.max(first.first_seq.saturating_sub(1));
        }
        let mut store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            ledger,
            max_bytes,
            segments: VecDeque::new(),
            bytes: 0,
            writer: None,
            dirty: false,
            unsynced: Vec::new(),
            // The ledger and lock files may be new.
            dir_dirty: true,
            frames: Vec::new(),
            next_seq: acked + 1,
            durable_through: acked,
            acked,
            missing: SeqSet::default(),
            corrupt: 0,
            cursor: None,
            warned: None,
        };
        for (i, seg) in found.iter().enumerate() {
            let acknowledged = found.get(i + 1).is_some_and(|n| n.first_seq <= acked + 1);
            if !(acknowledged && store.remove_segment_file(seg)) {
                store.bytes += seg.len;
                store.segments.push_back(seg.clone());
            }
        }
        let torn_tail = store.recover_newest();
        store.durable_through = store.next_seq - 1;
        let opened = Opened {
            next_seq: store.next_seq,
            acked_seq: store.acked,
            events: store.events(),
            bytes: store.bytes,
            segments: store.segments.len(),
            corrupt: store.corrupt,
            torn_tail,
            handed_seq: store.ledger.handed_seq().max(store.acked),
        };
        Ok((store, opened))
    }

    /// Scans the newest segment, cuts off a torn tail, sets `next_seq` and
    /// resumes appending to it. Returns whether the tail was torn.
    fn recover_newest(&mut self) -> bool {
        let Some(newest) = self.segments.back().cloned() else {
            return false;
        };
        let Tail {
            valid_end,
            next_seq: next,
            torn_at,
        } = match scan_to_end(&newest) {
            Ok(tail) => tail,
            Err(e) => {
                tracing::warn!(
                    "disk buffer segment {} cannot be read ({e}); new records go to a new segment",
                    newest.path.display()
                );
                // Above any seq that file can hold.
                let most = newest.len.saturating_sub(SEGMENT_HEADER_LEN) / 16;
                self.next_seq = self.next_seq.max(newest.first_seq + most);
                return false;
            }
        };
        if let Some(at) = torn_at
            && next > self.acked
        {
            self.corrupt += 1;
            tracing::warn!(
                "disk buffer segment {}: a torn record at offset {at} (seq {next}) was cut off",
                newest.path.display()
            );
        }
        if next <= self.acked {
            // The ledger is ahead of every record here: all acknowledged.
            if self.remove_segment_file(&newest) {
                self.bytes -= newest.len;
                self.segments.pop_back();
            }
            return torn_at.is_some();
        }
        self.next_seq = next;
        let resumed = if valid_end < SEGMENT_HEADER_LEN {
            Writer::create(&self.dir, newest.first_seq)
        } else {
            Writer::resume(&newest.path, newest.first_seq, valid_end)
        };
        match resumed {
            Ok(w) => {
                self.bytes = self.bytes - newest.len + w.len;
                if let Some(back) = self.segments.back_mut() {
                    back.len = w.len;
                }
                self.writer = Some(w);
            }
            Err(e) => tracing::warn!(
                "disk buffer segment {} cannot be appended to ({e}); new records go to a new segment",
                newest.path.display()
            ),
        }
        torn_at.is_some()
    }

    /// Unlinks a segment; `false` (logged) when it cannot be.
    pub(super) fn remove_segment_file(&self, seg: &SegmentFile) -> bool {
        match std::fs::remove_file(&seg.path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::warn!(
                    "cannot delete acknowledged disk buffer segment {}: {e}",
                    seg.path.display()
                );
                false
            }
        }
    }
}

/// Creates `dir` and its missing parents (mode 0700), and fsyncs the
/// parent of each one created so the directories outlast a power cut.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut created = Vec::new();
    let mut d = dir;
    while !d.exists() {
        created.push(d);
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for d in created.iter().rev() {
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty());
        segment::sync_dir(parent.unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// How the newest segment ends.
struct Tail {
    /// Where its valid records end.
    valid_end: u64,
    /// The seq after the last of them.
    next_seq: u64,
    /// A torn tail's offset (its seq is `next_seq`).
    torn_at: Option<u64>,
}

fn scan_to_end(seg: &SegmentFile) -> std::io::Result<Tail> {
    let mut scanner = Scanner::open(&seg.path, seg.first_seq, Some(seg.len), None)?;
    loop {
        if let Step::End { damaged_at, lost } = scanner.next_step()? {
            return Ok(Tail {
                valid_end: damaged_at.unwrap_or(seg.len.min(scanner.position())),
                next_seq: lost.start,
                torn_at: damaged_at,
            });
        }
    }
}
