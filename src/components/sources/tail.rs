//! Following a file (`follow: true`): a blocking thread polls the file,
//! sends chunks of whole lines with the position they end at (a line over
//! `max_line_bytes` is discarded as it is read, see `split`), and follows
//! the path across rotation (rename + create: the old file is read to its
//! end first) and truncation (read again from the start). Files are known
//! by device and inode, so a checkpoint still finds a file that was
//! rotated away while flowgate was down. Polling, as Vector's file source
//! does: it works the same on every filesystem.

use super::checkpoint::Position;
use super::lines::ChunkSender;
use super::split::Splitter;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Chunks of whole lines, each tagged with the position it ends at.
type Sender = ChunkSender<Position>;

/// Where to start reading.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// Resume after the last acknowledged line.
    Checkpoint(Position),
    Beginning,
    /// Only lines written from now on (for a file seen the first time).
    End,
}

struct Open {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes consumed: the end of the last whole line sent.
    offset: u64,
    /// The line being read.
    lines: Splitter,
}

impl Open {
    fn at(path: &Path, offset: SeekFrom, max_line_bytes: usize) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let offset = match offset {
            SeekFrom::Start(n) if n > meta.len() => 0, // truncated meanwhile
            other => file.seek(other)?,
        };
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            lines: Splitter::new(max_line_bytes),
        })
    }

    fn position(&self) -> Position {
        Position {
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
        }
    }

    /// Reads what is there; sends whole lines (and, with `to_end`, a last
    /// line without newline). `Ok(false)` at the end of the data; `Err` with
    /// `None` when the receiver is gone.
    fn read_some(&mut self, tx: &Sender, to_end: bool) -> Result<bool, Option<std::io::Error>> {
        let n = self.lines.read(&mut self.file).map_err(Some)?;
        let mut chunks = Vec::new();
        if n == 0 && to_end {
            self.lines.finish(&mut chunks);
        } else if n > 0 {
            self.lines.cut(&mut chunks);
        }
        for chunk in chunks {
            self.offset += chunk.consumed();
            let end = self.position();
            tx.blocking_send(Ok((chunk, end))).map_err(|_| None)?;
        }
        Ok(n > 0)
    }

    /// Reads the rest of a file that will not grow any more (rotated away).
    fn drain(&mut self, tx: &Sender) -> Result<(), Option<std::io::Error>> {
        while self.read_some(tx, true)? {}
        Ok(())
    }
}

/// Opens `path` if it is there. A missing file is waited for quietly;
/// another error (permissions, a directory) is logged once until it changes.
fn try_open(
    path: &Path,
    at: SeekFrom,
    max_line_bytes: usize,
    component: &str,
    last: &mut Option<String>,
) -> Option<Open> {
    match Open::at(path, at, max_line_bytes) {
        Ok(open) => {
            *last = None;
            Some(open)
        }
        Err(e) => {
            let why = e.to_string();
            if e.kind() != std::io::ErrorKind::NotFound && last.as_deref() != Some(why.as_str()) {
                tracing::warn!(
                    component,
                    "cannot open '{}': {why}; retrying",
                    path.display()
                );
            }
            *last = Some(why);
            None
        }
    }
}

/// A file in `dir` with the given identity (a rotated file).
fn find_by_identity(dir: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let meta = entry.metadata().ok()?;
        (meta.is_file() && meta.dev() == dev && meta.ino() == ino).then(|| entry.path())
    })
}

/// Follows `path` until the receiver is gone; an I/O error other than a
/// missing file ends it.
pub fn follow(
    path: &Path,
    start: Start,
    poll: Duration,
    max_line_bytes: usize,
    tx: Sender,
    component: &str,
) -> Result<(), std::io::Error> {
    let gone = |e: Option<std::io::Error>| e.map_or(Ok(()), Err);
    let mut last_error = None;
    let mut open = |at| try_open(path, at, max_line_bytes, component, &mut last_error);
    let mut current = match start {
        Start::Checkpoint(p) => {
            let same = std::fs::metadata(path).is_ok_and(|m| m.dev() == p.dev && m.ino() == p.ino);
            if !same {
                // Rotated while we were away: finish the old file first.
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                match find_by_identity(dir.unwrap_or(Path::new(".")), p.dev, p.ino) {
                    Some(old) => {
                        tracing::info!(
                            component,
                            "resuming rotated file '{}' at offset {}",
                            old.display(),
                            p.offset
                        );
                        let mut o = Open::at(&old, SeekFrom::Start(p.offset), max_line_bytes)?;
                        if let Err(e) = o.drain(&tx) {
                            return gone(e);
                        }
                    }
                    None => tracing::warn!(
                        component,
                        "the file of the checkpoint is gone; reading '{}' from the beginning",
                        path.display()
                    ),
                }
                open(SeekFrom::Start(0))
            } else {
                open(SeekFrom::Start(p.offset))
            }
        }
        Start::Beginning => open(SeekFrom::Start(0)),
        Start::End => open(SeekFrom::End(0)),
    };
    if current.is_none() {
        tracing::info!(component, "waiting for '{}' to appear", path.display());
    }
    loop {
        if tx.is_closed() {
            return Ok(());
        }
        let Some(file) = current.as_mut() else {
            std::thread::sleep(poll);
            // A file that appears later is read from its beginning.
            current = open(SeekFrom::Start(0));
            continue;
        };
        match file.read_some(&tx, false) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => return gone(e),
        }
        match std::fs::metadata(path) {
            Ok(m) if m.dev() != file.dev || m.ino() != file.ino => {
                tracing::info!(
                    component,
                    "'{}' was rotated; finishing the old file",
                    path.display()
                );
                if let Err(e) = file.drain(&tx) {
                    return gone(e);
                }
                current = open(SeekFrom::Start(0));
            }
            Ok(m) if m.len() < file.offset + file.lines.pending() => {
                tracing::info!(
                    component,
                    "'{}' was truncated; reading it from the start",
                    path.display()
                );
                file.file.seek(SeekFrom::Start(0))?;
                file.offset = 0;
                file.lines.clear();
            }
            _ => std::thread::sleep(poll),
        }
    }
}
