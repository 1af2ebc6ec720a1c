//! The read path: records from a seq on, through a cursor that a
//! sequential reader keeps between calls.

use super::{READ_MAX_BYTES, ReadOutcome, Store};
use crate::flow::buffer::storage::scan::{Scanner, Step};
use crate::flow::buffer::storage::segment::SegmentFile;
use std::ops::Range;

impl Store {
    /// Appends to `out` up to `max_records` records from `from_seq` on (at
    /// most `READ_MAX_BYTES` of payloads), skipping damaged and void ones.
    /// Reading on from the previous `next_seq` continues where the last
    /// read stopped; a `from_seq` behind it (a redelivery) scans its
    /// segment from the start, leaving that place kept for the next read. Seqs at or below `acked_seq` are neither returned
    /// nor reported as gaps; nothing is read once `from_seq` reaches
    /// `next_seq`. Never fails: a segment that cannot be read counts as
    /// damaged.
    pub fn read(
        &mut self,
        from_seq: u64,
        max_records: usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> ReadOutcome {
        let mut at = from_seq.max(self.acked + 1);
        let mut outcome = ReadOutcome::default();
        let (mut taken, mut bytes) = (0, 0);
        // A read behind the cursor (a redelivery) scans with a cursor of its
        // own, so the reader in front does not have to find its place again.
        let ahead = match &self.cursor {
            Some(c) if c.expected() > at => self.cursor.take(),
            _ => None,
        };
        while at < self.next_seq && taken < max_records && bytes < READ_MAX_BYTES {
            // The segment holding `at`: the last one starting at or before it.
            let i = self.segments.partition_point(|s| s.first_seq <= at);
            let Some(i) = i.checked_sub(1) else {
                // Before the first segment, or none left: those seqs are gone.
                let to = self.segments.front().map_or(self.next_seq, |s| s.first_seq);
                outcome.corrupt += self.lose(at..to, None);
                note_gap(&mut outcome.gaps, at..to);
                at = to;
                continue;
            };
            let (first, len) = (self.segments[i].first_seq, self.segments[i].len);
            let bound = self
                .segments
                .get(i + 1)
                .map_or(self.next_seq, |s| s.first_seq);
            let is_writers = self.writer.is_some() && i + 1 == self.segments.len();
            if self.cursor.as_ref().is_none_or(|c| c.first_seq() != first) {
                match Scanner::open(&self.segments[i].path, first, Some(len), Some(bound)) {
                    Ok(s) => self.cursor = Some(s),
                    Err(e) => {
                        let seg = self.segments[i].clone();
                        self.warn_unreadable(&seg, &e);
                        outcome.corrupt += self.lose(at..bound, None);
                        note_gap(&mut outcome.gaps, at..bound);
                        at = bound;
                        if is_writers {
                            self.close_writer();
                        }
                        continue;
                    }
                }
            }
            let Some(scanner) = self.cursor.as_mut() else {
                unreachable!("a cursor was just set");
            };
            scanner.set_limits(len, Some(bound));
            // Records of this segment, until something else comes up.
            let step = loop {
                if taken >= max_records || bytes >= READ_MAX_BYTES {
                    break None;
                }
                match scanner.next_step() {
                    Ok(Step::Record { seq, payload }) => {
                        if seq < at {
                            continue; // on the way to `from_seq`
                        }
                        if !self.missing.is_empty() && self.missing.contains(seq) {
                            note_gap(&mut outcome.gaps, seq..seq + 1);
                        } else {
                            bytes += payload.len();
                            taken += 1;
                            out.push((seq, payload.to_vec()));
                        }
                        at = seq + 1;
                    }
                    Ok(Step::Skipped {
                        at: offset, lost, ..
                    }) => {
                        break Some(Ok((lost, Some(offset), false)));
                    }
                    Ok(Step::End { damaged_at, lost }) => break Some(Ok((lost, damaged_at, true))),
                    Err(e) => {
                        scanner.abandon();
                        break Some(Err((scanner.expected()..bound, e)));
                    }
                }
            };
            let Some(step) = step else { break };
            let seg = self.segments[i].clone();
            let (lost, damaged_at, end) = match step {
                Ok(step) => step,
                Err((lost, e)) => {
                    self.warn_unreadable(&seg, &e);
                    (lost, None, true)
                }
            };
            let damaged = damaged_at.is_some() || !lost.is_empty();
            let lost = lost.start.max(at)..lost.end;
            if !lost.is_empty() {
                outcome.corrupt += self.lose(lost.clone(), Some((&seg, damaged_at)));
                note_gap(&mut outcome.gaps, lost.clone());
                at = lost.end;
            }
            if end {
                if is_writers && damaged {
                    // Damage under the writer: new records go to a new segment.
                    self.close_writer();
                } else if is_writers {
                    break; // caught up with the writer: keep the cursor
                }
                at = bound;
                self.cursor = None;
            }
        }
        outcome.next_seq = at;
        if ahead.is_some() {
            self.cursor = ahead;
        }
        outcome
    }

    /// Records seqs that will never be read; returns how many of them are
    /// newly counted as corrupt (void and acknowledged ones are not).
    fn lose(&mut self, seqs: Range<u64>, at: Option<(&SegmentFile, Option<u64>)>) -> u64 {
        let seqs = seqs.start.max(self.acked + 1)..seqs.end;
        let counted = self.missing.insert(seqs.clone());
        self.corrupt += counted;
        if counted > 0
            && let Some((seg, offset)) = at
            && self.warned != Some(seg.first_seq)
        {
            self.warned = Some(seg.first_seq);
            let offset = offset
                .map(|o| format!(" at offset {o}"))
                .unwrap_or_default();
            tracing::warn!(
                "disk buffer segment {}: {counted} corrupt records skipped{offset} (seqs {}..{}); \
                 further damage in this file is counted but not logged",
                seg.path.display(),
                seqs.start,
                seqs.end
            );
        }
        counted
    }

    fn warn_unreadable(&self, seg: &SegmentFile, e: &std::io::Error) {
        tracing::warn!(
            "disk buffer segment {} cannot be read ({e}): its unread records are counted as corrupt",
            seg.path.display()
        );
    }
}

/// Appends a gap, merging it with the last one.
fn note_gap(gaps: &mut Vec<Range<u64>>, r: Range<u64>) {
    match gaps.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ if r.is_empty() => {}
        _ => gaps.push(r),
    }
}
