//! The ledger (`buffer.ledger`: what downstream acknowledged) and the lock
//! (`buffer.lock`: one process per buffer directory).
//!
//! The ledger holds two 32-byte slots, each `magic u32 | acked_seq u64 |
//! generation u64 | handed_seq u64 | crc32c u32` (little-endian, the crc
//! over the 28 bytes before it). Writes alternate between the slots (`pwrite`,
//! then `fdatasync`) and the valid slot with the higher generation wins, so
//! a write torn by a crash costs the acknowledgements of one write, never
//! the ledger. A write that fails is retried in the same slot, so the
//! other one stays intact. The segment files are the only record of what
//! was written; the ledger records only what was acknowledged (and how
//! far the front may have handed events on, to count redeliveries).

use super::StoreError;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const LEDGER_FILE: &str = "buffer.ledger";
pub const LOCK_FILE: &str = "buffer.lock";

const SLOT_LEN: usize = 32;
const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"FGLD");

/// What one slot says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub acked_seq: u64,
    pub generation: u64,
    /// Every seq at or below it may have been handed downstream (the front
    /// raises it before it hands events on): after a crash, the events in
    /// `acked_seq + 1 ..= handed_seq` are redeliveries. 0 in ledgers
    /// written before it existed, whose old pad was zero.
    pub handed_seq: u64,
}

pub fn encode_slot(slot: Slot) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[0..4].copy_from_slice(&SLOT_MAGIC.to_le_bytes());
    b[4..12].copy_from_slice(&slot.acked_seq.to_le_bytes());
    b[12..20].copy_from_slice(&slot.generation.to_le_bytes());
    b[20..28].copy_from_slice(&slot.handed_seq.to_le_bytes());
    let crc = crc32c::crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A slot's contents, `None` when it is torn, garbled or never written.
pub fn decode_slot(b: &[u8]) -> Option<Slot> {
    let b: &[u8; SLOT_LEN] = b.get(..SLOT_LEN)?.try_into().ok()?;
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().unwrap_or([0; 8]));
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
    (magic == SLOT_MAGIC && crc == crc32c::crc32c(&b[..28])).then(|| Slot {
        acked_seq: word(4..12),
        generation: word(12..20),
        handed_seq: word(20..28),
    })
}

/// The winning slot of a ledger file's bytes, and its index.
fn winner(bytes: &[u8]) -> Option<(usize, Slot)> {
    (0..2)
        .filter_map(|i| Some((i, decode_slot(bytes.get(i * SLOT_LEN..)?)?)))
        .max_by_key(|(_, s)| s.generation)
}

/// Reads a ledger without opening it for writing (`buffer check`): the
/// acknowledged seq, 0 when there is no ledger or no valid slot.
pub fn read_acked(dir: &Path) -> io::Result<u64> {
    match std::fs::read(dir.join(LEDGER_FILE)) {
        Ok(bytes) => Ok(winner(&bytes).map_or(0, |(_, s)| s.acked_seq)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// The ledger of an open buffer.
#[derive(Debug)]
pub struct Ledger {
    file: File,
    path: PathBuf,
    current: Slot,
    /// The slot the next write goes to: the one not holding `current`.
    next_slot: usize,
}

impl Ledger {
    /// Opens (creating) the ledger of `dir`. Torn or garbled slots are
    /// ignored: with neither valid, nothing is acknowledged yet (the store
    /// also counts every deleted segment as acknowledged).
    pub fn open(dir: &Path) -> Result<Ledger, StoreError> {
        let path = dir.join(LEDGER_FILE);
        let io = |doing| StoreError::io(&path, doing);
        let file = open_private(&path).map_err(io("open the ledger"))?;
        let mut bytes = vec![0; 2 * SLOT_LEN];
        let n = read_full(&file, &mut bytes).map_err(io("read the ledger"))?;
        bytes.truncate(n);
        let (current, next_slot) = match winner(&bytes) {
            Some((i, slot)) => (slot, 1 - i),
            None => (
                Slot {
                    acked_seq: 0,
                    generation: 0,
                    handed_seq: 0,
                },
                0,
            ),
        };
        Ok(Ledger {
            file,
            path,
            current,
            next_slot,
        })
    }

    pub fn acked_seq(&self) -> u64 {
        self.current.acked_seq
    }

    pub fn generation(&self) -> u64 {
        self.current.generation
    }

    pub fn handed_seq(&self) -> u64 {
        self.current.handed_seq
    }

    /// Records `acked_seq` durably (pwrite + fdatasync of one slot),
    /// keeping the handed mark.
    pub fn write(&mut self, acked_seq: u64) -> Result<(), StoreError> {
        self.write_marks(acked_seq, self.current.handed_seq)
    }

    /// Records both marks durably.
    pub fn write_marks(&mut self, acked_seq: u64, handed_seq: u64) -> Result<(), StoreError> {
        let slot = Slot {
            acked_seq,
            generation: self.current.generation + 1,
            handed_seq,
        };
        let at = (self.next_slot * SLOT_LEN) as u64;
        self.file
            .write_all_at(&encode_slot(slot), at)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| StoreError::Io {
                doing: "write the ledger",
                path: self.path.clone(),
                source,
            })?;
        self.current = slot;
        self.next_slot = 1 - self.next_slot;
        Ok(())
    }
}

fn read_full(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Opens `path` for reading and writing, creating it readable by its
/// owner only (a buffer holds events), never truncating it.
fn open_private(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// The exclusive lock on a buffer directory, held while this lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `dir` (an advisory `flock` on `buffer.lock`, which then holds
    /// our pid). A lock another process holds is `StoreError::Locked`.
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let io = |doing| StoreError::io(&path, doing);
        let file = open_private(&path).map_err(io("open the lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
        // Only informative (the error above names the holder): no sync.
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
            .map_err(io("write the lock file"))?;
        Ok(DirLock { _file: file })
    }
}

/// Whether some process holds the lock of `dir`, found without taking it
/// (taking it, even shared and briefly, could make a daemon starting at
/// that moment fail): the lock file's device and inode in `/proc/locks`.
/// `false` where `/proc/locks` cannot be read.
pub fn lock_held(dir: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(dir.join(LOCK_FILE)) else {
        return false;
    };
    // The kernel writes `/proc/locks` a page at a time: a lock taken or
    // released meanwhile shifts the lines, and one read can skip a holder
    // (the likely cause of a holder missed once on a loaded CI run). A
    // holder every read misses is unlikely.
    (0..3).any(|_| {
        std::fs::read_to_string("/proc/locks")
            .is_ok_and(|locks| held_in(&locks, meta.dev(), meta.ino()))
    })
}

/// Whether a `/proc/locks` text lists a lock on the file `dev`/`ino`.
fn held_in(locks: &str, dev: u64, ino: u64) -> bool {
    // Linux's dev_t encoding (glibc's major()/minor()).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    // `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF`; blocked waiters
    // (`1: -> FLOCK ...`) are not holders.
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") {
            return false;
        }
        fields.iter().any(|f| {
            let mut parts = f.split(':');
            let (Some(a), Some(b), Some(c), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            u64::from_str_radix(a, 16).ok() == Some(major)
                && u64::from_str_radix(b, 16).ok() == Some(minor)
                && c.parse::<u64>().ok() == Some(ino)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newer_valid_slot_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!((ledger.acked_seq(), ledger.generation()), (0, 0));
        ledger.write(10).unwrap();
        ledger.write(20).unwrap();
        ledger.write(30).unwrap();
        drop(ledger);
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!((ledger.acked_seq(), ledger.generation()), (30, 3));
        assert_eq!(read_acked(dir.path()).unwrap(), 30);
    }

    #[test]
    fn a_torn_slot_leaves_the_other_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        ledger.write(10).unwrap(); // slot 0, generation 1
        ledger.write(20).unwrap(); // slot 1, generation 2
        drop(ledger);
        let path = dir.path().join(LEDGER_FILE);
        let good = std::fs::read(&path).unwrap();
        // Tear slot 1 at every byte (a write cut short), or garble one bit.
        for cut in 0..SLOT_LEN {
            let mut bytes = good.clone();
            bytes.truncate(SLOT_LEN + cut);
            std::fs::write(&path, &bytes).unwrap();
            let l = Ledger::open(dir.path()).unwrap();
            assert_eq!((l.acked_seq(), l.generation()), (10, 1), "cut at {cut}");
        }
        for bit in 0..SLOT_LEN * 8 {
            let mut bytes = good.clone();
            bytes[SLOT_LEN + bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(read_acked(dir.path()).unwrap(), 10, "flip of bit {bit}");
        }
        // The next write goes to the torn slot, keeping the good one.
        let mut l = Ledger::open(dir.path()).unwrap();
        l.write(15).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            decode_slot(&bytes[..SLOT_LEN]),
            Some(Slot {
                acked_seq: 10,
                generation: 1,
                handed_seq: 0,
            })
        );
        assert_eq!(read_acked(dir.path()).unwrap(), 15);
    }

    #[test]
    fn garbage_or_no_ledger_means_nothing_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_acked(dir.path()).unwrap(), 0);
        std::fs::write(dir.path().join(LEDGER_FILE), [0xa5; 64]).unwrap();
        assert_eq!(Ledger::open(dir.path()).unwrap().acked_seq(), 0);
    }

    #[test]
    fn a_held_lock_names_the_directory_and_is_seen_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!lock_held(dir.path()));
        let lock = DirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file: a second open is refused
        // even within one process.
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::Locked { holder: Some(p), .. } if *p == std::process::id())
        );
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        if std::path::Path::new("/proc/locks").exists() {
            assert!(lock_held(dir.path()));
        }
        drop(lock);
        assert!(!lock_held(dir.path()));
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let dev = (0xfd << 8) | 0x01; // fd:01
        let text = "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 4243 fd:01:99 0 EOF\n";
        assert!(held_in(text, dev, 1234));
        assert!(!held_in(text, dev, 99), "a waiter does not hold it");
        assert!(!held_in(text, dev, 12345));
        assert!(!held_in(text, (0x08 << 8) | 0x01, 1234));
    }
}
