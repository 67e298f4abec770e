//! The board lock: what every change holds while it reads, applies and writes.
//!
//! Two locks are taken, in this order, and held together:
//!
//! 1. an exclusive lock on the board **directory** itself. A directory that holds files cannot
//!    be removed or replaced by `rm -f board.lock` (or by anything short of removing the whole
//!    board), so this lock excludes every other `vine` whatever happens to the lock file. Where
//!    the file system cannot lock a directory (NFS-style file systems emulate `flock` with
//!    record locks, which need a file open for writing), this step is skipped.
//! 2. an exclusive lock on `board.lock`, which older `vine` versions take alone. After locking
//!    it, the locked file is checked to still be the file at `board.lock` (same device and
//!    inode); if it was removed or replaced while we waited, the lock guards nothing and is
//!    taken again on the file now at the path.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::paths::LOCK;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// The exclusive board lock; released when dropped.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    _dir: Option<File>,
}

impl LockGuard {
    /// The board clock: the time of this change (see [`super::clock`]).
    pub fn now(&self) -> Timestamp {
        super::clock::now(&self.file)
    }

    /// Gives a lock file without a recorded time one (see [`super::clock::start`]).
    pub fn start_clock(&self) {
        super::clock::start(&self.file);
    }

    /// Records `stamp` as the time of the last committed change (see [`super::clock`]).
    pub fn record(&self, stamp: Timestamp) {
        super::clock::record(&self.file, stamp);
    }
}

/// Takes the exclusive lock of the board in `dir` (blocks until it is free).
pub fn lock(dir: &Path) -> Result<LockGuard> {
    let dir_lock = lock_dir(dir);
    let path = dir.join(LOCK);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening the lock", &path, e))?;
        file.lock().map_err(|e| Error::io("locking", &path, e))?;
        if is_at(&file, &path)? {
            return Ok(LockGuard {
                file,
                _dir: dir_lock,
            });
        }
        // Removed or replaced while we waited for it: lock the file that is there now.
    }
}

/// Locks the board directory, or `None` where the file system cannot lock a directory (the
/// lock file alone then excludes other writers, as it always has).
fn lock_dir(dir: &Path) -> Option<File> {
    let d = File::open(dir).ok()?;
    d.lock().ok()?;
    Some(d)
}

/// Whether `file` is the file at `path` (same device and inode).
#[cfg(unix)]
fn is_at(file: &File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file
        .metadata()
        .map_err(|e| Error::io("checking the lock", path, e))?;
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.dev() == held.dev() && m.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("checking the lock", path, e)),
    }
}

/// Elsewhere an open file cannot be removed or replaced, so the locked file is the one there.
#[cfg(not(unix))]
fn is_at(_file: &File, _path: &Path) -> Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_lock_file_does_not_let_a_second_holder_in() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(LOCK)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        let t = std::thread::spawn(move || {
            let second = lock(&d).unwrap();
            tx.send(()).unwrap();
            drop(second);
        });
        // While the first holder runs, the second waits (on the directory).
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "a second holder got the lock while the first held it"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second holder gets the lock once the first lets go");
        t.join().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_lock_file_is_not_the_one_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK);
        let f = File::create(&path).unwrap();
        assert!(is_at(&f, &path).unwrap());
        std::fs::write(dir.path().join("other"), b"").unwrap();
        std::fs::rename(dir.path().join("other"), &path).unwrap();
        assert!(!is_at(&f, &path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(!is_at(&f, &path).unwrap());
    }
}
