//! Segment files: `<first_seq:020>.seg`, an 8-byte header
//! (`SEGMENT_MAGIC`) and records back to back; their names, listing, and
//! the writer, which appends whole batches with one `write` (reading them
//! back is `scan.rs`).

use super::record::SEGMENT_MAGIC;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Bytes at the start of a segment before its first record.
pub const SEGMENT_HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;

/// The size at which a buffer of `max_bytes` starts a new segment: space
/// comes back a segment at a time, so at most 1/16 of `max_bytes` is held
/// by acknowledged records that are not deleted yet.
pub fn segment_size(max_bytes: u64) -> u64 {
    (max_bytes / 16).clamp(256 << 10, 64 << 20)
}

/// `00000000000000000042.seg` for first seq 42.
pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first seq named by a segment file name; `None` for other files.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment found in a buffer directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    pub first_seq: u64,
    pub path: PathBuf,
    pub len: u64,
}

/// The segments of `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(first_seq) = entry.file_name().to_str().and_then(parse_name) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            found.push(SegmentFile {
                first_seq,
                path: entry.path(),
                len: meta.len(),
            });
        }
    }
    found.sort_by_key(|s| s.first_seq);
    Ok(found)
}

/// fsyncs a directory, so files created or removed in it stay so.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment being appended to.
#[derive(Debug)]
pub struct Writer {
    file: File,
    pub first_seq: u64,
    pub path: PathBuf,
    /// Bytes in the file, header included.
    pub len: u64,
}

impl Writer {
    /// Creates segment `first_seq` in `dir` with its header. The directory
    /// is not fsynced here: the store does it before it reports anything
    /// in the new segment durable.
    pub fn create(dir: &Path, first_seq: u64) -> io::Result<Writer> {
        let path = dir.join(file_name(first_seq));
        let created = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(&SEGMENT_MAGIC)?;
            Ok(file)
        })();
        match created {
            Ok(file) => Ok(Writer {
                file,
                first_seq,
                path,
                len: SEGMENT_HEADER_LEN,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Continues an existing segment whose valid records end at `len`
    /// (anything after it is cut off first).
    pub fn resume(path: &Path, first_seq: u64, len: u64) -> io::Result<Writer> {
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
            file.sync_all()?;
        }
        Ok(Writer {
            file,
            first_seq,
            path: path.to_path_buf(),
            len,
        })
    }

    /// Appends framed records with one write. On an error the file is cut
    /// back to where it was, if it can be, and `len` is unchanged.
    pub fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        match self.file.write_all(frames) {
            Ok(()) => {
                self.len += frames.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The file, for a sync after the writer moved on.
    pub fn into_file(self) -> File {
        self.file
    }
}
