//! `Store`: the single owner of a buffer directory, driven by one thread.
//!
//! Seqs are u64, contiguous from 1, assigned in `append` order and never
//! wrap. Three points move along them: `durable_through` (synced),
//! `acked_seq` (acknowledged downstream, in the ledger) and `next_seq`.
//! The ledger may be ahead of durable data (the front may deliver events
//! from memory before their sync), so recovery takes
//! `next_seq = max(last valid record, acked_seq) + 1`.
//!
//! Open reads the ledger, deletes segments that are wholly acknowledged,
//! and scans only the newest segment, truncating a torn tail: O(one
//! segment), never O(backlog). Damage elsewhere is met, skipped and counted
//! by `read`. Corrupt records are counted once (`corrupt_records`), and
//! only those above `acked_seq`; a warning names the file, once per
//! segment.
//!
//! Appended records are readable at once, before `sync`: only upstream
//! acknowledgements wait for durability. When to sync (group commit) and
//! when to acknowledge are the caller's choice.
//!
//! I/O errors: open fails only when the directory cannot be created,
//! listed or locked, or its ledger opened. A failed `append` or `sync`
//! returns the error, and the seqs it covers become *void*: never returned
//! by `read` (the caller fails their upstream acknowledgements; the source
//! sends them again), and the segment is closed, so the next append starts
//! a new one (an fd whose fsync failed is never synced again). A segment
//! that cannot be read is handled as damaged from there on.

use super::StoreError;
use super::ledger::{DirLock, Ledger};
use super::record::EncodedBatch;
use super::scan::Scanner;
use super::segment::{self, SEGMENT_HEADER_LEN, SegmentFile, Writer};
use super::seqs::SeqSet;
use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A `read` stops after the record that brings its payloads to this many
/// bytes, whatever `max_records` allows.
pub const READ_MAX_BYTES: usize = 8 << 20;

/// What `Store::open` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The seq the next append gets.
    pub next_seq: u64,
    /// Every seq at or below it was acknowledged.
    pub acked_seq: u64,
    /// Unacknowledged events: `next_seq - 1 - acked_seq` (damage further
    /// back is only found, and subtracted, as `read` meets it).
    pub events: u64,
    /// Segment file bytes on disk.
    pub bytes: u64,
    pub segments: usize,
    /// Corrupt records found: 1 for a torn tail above `acked_seq`, else 0.
    pub corrupt: u64,
    /// The newest segment ended in a partial record, which was cut off.
    pub torn_tail: bool,
    /// The ledger's handed mark: events up to it may have been handed on
    /// before a crash (their replay is a redelivery).
    pub handed_seq: u64,
}

/// What one `read` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Where the next read goes on: every seq from the read's start to
    /// here was either returned or is in `gaps`.
    pub next_seq: u64,
    /// Seqs that will never be read (corrupt, or void): settle them as
    /// acknowledged. Ascending, disjoint.
    pub gaps: Vec<Range<u64>>,
    /// Corrupt records this read counted for the first time (add them to
    /// `flowgate_buffer_corrupt_records_total`).
    pub corrupt: u64,
}

/// The open buffer directory. Every method takes `&mut self`: one thread
/// (the buffer's I/O thread) owns it and does all of its file work.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: DirLock,
    ledger: Ledger,
    max_bytes: u64,
    /// Oldest first; when `writer` is set, the last one is its segment.
    segments: VecDeque<SegmentFile>,
    bytes: u64,
    writer: Option<Writer>,
    /// The writer has data not yet synced.
    dirty: bool,
    /// Segments closed with data not yet synced.
    unsynced: Vec<(File, PathBuf)>,
    /// A segment was created since the directory was last synced.
    dir_dirty: bool,
    frames: Vec<u8>,
    next_seq: u64,
    durable_through: u64,
    acked: u64,
    /// Seqs above `acked` that will never be read: corrupt or void.
    missing: SeqSet,
    corrupt: u64,
    cursor: Option<Scanner>,
    warned: Option<u64>,
}

impl Store {
    /// Writes `batch` as records `next_seq ..`, with one `write`, starting
    /// a new segment first when this one would pass the segment size. Not
    /// durable until `sync`. Every call takes `batch.len()` seqs, also when
    /// it fails (they are then void), so a caller numbering batches itself
    /// from `Opened::next_seq` stays in step.
    pub fn append(&mut self, batch: &EncodedBatch) -> Result<Range<u64>, StoreError> {
        let seqs = self.next_seq..self.next_seq + batch.len() as u64;
        self.next_seq = seqs.end;
        if seqs.is_empty() {
            return Ok(seqs);
        }
        let adds = batch.disk_bytes() as u64;
        let full = |w: &Writer| w.len > SEGMENT_HEADER_LEN && w.len + adds > self.segment_size();
        if self.writer.as_ref().is_none_or(full)
            && let Err(e) = self.roll(seqs.start)
        {
            self.missing.insert(seqs);
            return Err(e);
        }
        let Some(writer) = self.writer.as_mut() else {
            unreachable!("roll leaves a writer or fails");
        };
        self.frames.clear();
        batch.encode_frames(seqs.start, &mut self.frames);
        if let Err(source) = writer.append(&self.frames) {
            let path = writer.path.clone();
            self.missing.insert(seqs);
            self.close_writer();
            return Err(StoreError::Io {
                doing: "write to the disk buffer segment",
                path,
                source,
            });
        }
        self.bytes += adds;
        if let Some(back) = self.segments.back_mut() {
            back.len = writer.len;
        }
        self.dirty = true;
        if self.frames.capacity() > 16 << 20 {
            self.frames = Vec::new(); // after an unusually large batch
        }
        Ok(seqs)
    }

    /// Closes the writer's segment; its unsynced data is synced later.
    fn close_writer(&mut self) {
        if let Some(w) = self.writer.take()
            && std::mem::take(&mut self.dirty)
        {
            let path = w.path.clone();
            self.unsynced.push((w.into_file(), path));
        }
    }

    fn roll(&mut self, first_seq: u64) -> Result<(), StoreError> {
        self.close_writer();
        let w = Writer::create(&self.dir, first_seq).map_err(|source| StoreError::Io {
            doing: "create",
            path: self.dir.join(segment::file_name(first_seq)),
            source,
        })?;
        self.dir_dirty = true;
        self.bytes += w.len;
        self.segments.push_back(SegmentFile {
            first_seq,
            path: w.path.clone(),
            len: w.len,
        });
        self.writer = Some(w);
        Ok(())
    }

    /// Makes everything appended durable (fdatasync of each segment
    /// written since the last sync; fsync of the directory after a segment
    /// was created) and returns `durable_through`: every seq at or below it
    /// is durable, or void. On an error, every seq appended since the last
    /// sync is void: the caller fails exactly the appends it has not yet
    /// seen made durable.
    pub fn sync(&mut self) -> Result<u64, StoreError> {
        let mut failed = None;
        for (file, path) in &self.unsynced {
            if let Err(e) = file.sync_data() {
                failed = Some((path.clone(), e));
                break;
            }
        }
        if failed.is_none()
            && self.dirty
            && let Some(w) = &self.writer
            && let Err(e) = w.sync()
        {
            failed = Some((w.path.clone(), e));
        }
        if failed.is_none()
            && self.dir_dirty
            && let Err(e) = segment::sync_dir(&self.dir)
        {
            failed = Some((self.dir.clone(), e));
        }
        self.unsynced.clear();
        self.dir_dirty = false;
        let unsynced = self.durable_through + 1..self.next_seq;
        self.durable_through = self.next_seq - 1;
        match failed {
            None => {
                self.dirty = false;
                Ok(self.durable_through)
            }
            Some((path, source)) => {
                self.missing.insert(unsynced);
                self.dirty = false;
                self.writer = None; // never fsync that fd again
                Err(StoreError::Io {
                    doing: "sync",
                    path,
                    source,
                })
            }
        }
    }

    /// Records that every seq at or below `through_seq` was acknowledged
    /// (ledger write + fdatasync), then deletes the segments that hold
    /// nothing above it (never the one being appended to). Returns the
    /// bytes freed. A segment that cannot be deleted is logged and tried
    /// again at the next call. `through_seq` may pass `next_seq`: the
    /// front may deliver from memory before the append reaches the store.
    pub fn acknowledge(&mut self, through_seq: u64) -> Result<u64, StoreError> {
        self.record(through_seq, self.ledger.handed_seq())
    }

    /// As `acknowledge`, also setting the handed mark (`Slot::handed_seq`)
    /// in the same ledger write. Writes nothing when neither mark moves.
    pub fn record(&mut self, through_seq: u64, handed_seq: u64) -> Result<u64, StoreError> {
        if through_seq <= self.acked {
            if handed_seq != self.ledger.handed_seq() {
                self.ledger.write_marks(self.acked, handed_seq)?;
            }
            return Ok(0);
        }
        self.ledger.write_marks(through_seq, handed_seq)?;
        self.acked = through_seq;
        self.missing.remove_through(through_seq);
        let mut freed = 0;
        while self.segments.len() >= 2 && self.segments[1].first_seq <= through_seq + 1 {
            let seg = &self.segments[0];
            if !self.remove_segment_file(seg) {
                break;
            }
            if self
                .cursor
                .as_ref()
                .is_some_and(|c| c.first_seq() == seg.first_seq)
            {
                self.cursor = None;
            }
            freed += seg.len;
            self.bytes -= seg.len;
            self.segments.pop_front();
        }
        Ok(freed)
    }

    /// Applies a new `max_bytes` (a reload): the segment size follows from
    /// the next segment on.
    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where this store starts a new segment (`segment::segment_size`).
    pub fn segment_size(&self) -> u64 {
        segment::segment_size(self.max_bytes)
    }

    /// Segment file bytes on disk: what `max_bytes` bounds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Events appended and not acknowledged, less those known lost.
    pub fn events(&self) -> u64 {
        (self.next_seq - 1)
            .saturating_sub(self.acked)
            .saturating_sub(self.missing.len())
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn acked_seq(&self) -> u64 {
        self.acked
    }

    /// The handed mark in the ledger (`Slot::handed_seq`).
    pub fn handed_seq(&self) -> u64 {
        self.ledger.handed_seq()
    }

    pub fn durable_through(&self) -> u64 {
        self.durable_through
    }

    /// Whether `sync` has anything to do.
    pub fn needs_sync(&self) -> bool {
        self.dirty || !self.unsynced.is_empty() || self.dir_dirty
    }

    /// Corrupt records counted since open (a torn tail at open included).
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

mod open;
mod read;
#[cfg(test)]
mod tests;
